"""Benchmark 4: trials completed per hour with 1 and 2 concurrent 1-thread trials on one node,
and on a two-node Ray cluster simulated here (a head and a worker started with `ray start`,
1 CPU each; left out of --quick, whose two-node check is tests/test_two_node_cluster.py's). If
2 workers fall short of 1.8x, the bare-loop contention measurement says why: one epoch alone
against two at once in separate processes, no Ray involved."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from search.bench.common import REPO, Bench, MemorySampler, bar_plot, local_ray, quiet, run_service, tmpdir
from spaces.fashion_space import GRID_WINNER
from spaces.registry import get_study

QUICK_SKIP = "skipped in --quick: covered by tests/test_two_node_cluster.py"


def winner_grid(trials: int):
    base = get_study("fashion_grid")
    return dataclasses.replace(base, name="bench_scaling", grid=(GRID_WINNER,) * trials)


def per_hour(run) -> float:
    return len({e["trial"] for e in run.events if e["kind"] == "complete"}) / run.wall_s * 3600


def contention(bench: Bench) -> dict:
    """Epoch seconds of the bare loop alone, then of two copies running at once (one per core)."""
    s = bench.sizes
    folder = tmpdir("hpsearch-bench-contention-")

    def launch(name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "search.bench.baseline", str(s.scaling_train),
                                 str(s.scaling_epochs), bench.data_dir or "-", str(folder / f"{name}.json")],
                                cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def epochs(name: str) -> list[float]:
        return json.loads((folder / f"{name}.json").read_text())["epoch_s"]

    launch("alone").wait()
    pair = [launch("a"), launch("b")]
    for p in pair:
        p.wait()
    alone = float(np.mean(epochs("alone")))
    together = float(np.mean(epochs("a") + epochs("b")))
    return {"epoch_alone_s": alone, "epoch_two_at_once_s": together, "slowdown": together / alone,
            "best_possible_ratio": 2 * alone / together}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def two_node_cluster():
    """A head and a worker node, 1 CPU each, as child processes with their own temp dirs and
    ports; stopped by PID at the end (never `ray stop`, which would stop every Ray here)."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(REPO)}
    port = free_port()
    temp = tmpdir("hpsearch-bench-ray-")
    common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]

    def ports() -> list[str]:
        return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]

    procs = []
    try:
        procs.append(subprocess.Popen(
            [ray_bin, "start", "--head", "--port", str(port), "--temp-dir", str(temp / "head"),
             "--include-dashboard", "false", *ports(), *common],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from ray.util import get_node_ip_address

        host = get_node_ip_address()  # nodes register under the machine's address, not 127.0.0.1
        address = f"{host}:{port}"
        _wait_port(host, port, 60)
        procs.append(subprocess.Popen([ray_bin, "start", "--address", address, *ports(), *common],
                                      env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield address, [p.pid for p in procs]
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=2).close()
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Ray head did not open {host}:{port} within {timeout:.0f} s")


def cluster_run(bench: Bench, data, study, scratch: Path) -> dict:
    import ray

    with two_node_cluster() as (address, pids):
        os.environ["RAY_AUTH_MODE"] = "token"
        quiet()
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            deadline = time.time() + 60
            while sum(1 for n in ray.nodes() if n["Alive"]) < 2 and time.time() < deadline:
                time.sleep(0.5)
            nodes = sum(1 for n in ray.nodes() if n["Alive"])
            with MemorySampler(roots=pids) as memory:
                run = run_service(study, data, scratch / "cluster", bench.tracking_uri, cluster_cpus=2,
                                  samples=bench.sizes.scaling_trials, max_epochs=bench.sizes.scaling_epochs,
                                  seed=bench.seed, cpus_per_trial=1)
        finally:
            ray.shutdown()
            os.environ.pop("RAY_AUTH_MODE", None)
    return {"nodes": nodes, "trials_per_hour": per_hour(run), "wall_s": run.wall_s,
            "trial_nodes": sorted({str(e.get("node_ip")) for e in run.epochs}),
            "trial_worker_memory": memory.summary()["trial_workers"]}


def run(bench: Bench) -> dict:
    s = bench.sizes
    data = bench.subset(s.scaling_train).for_search(0.1, bench.seed)
    study = winner_grid(s.scaling_trials)
    scratch = bench.scratch("scaling")
    with local_ray(2):
        one = run_service(study, data, scratch / "one", bench.tracking_uri, cluster_cpus=1,
                          samples=s.scaling_trials, max_epochs=s.scaling_epochs, seed=bench.seed, cpus_per_trial=1)
        two = run_service(study, data, scratch / "two", bench.tracking_uri, cluster_cpus=2,
                          samples=s.scaling_trials, max_epochs=s.scaling_epochs, seed=bench.seed, cpus_per_trial=1)
    bare = contention(bench)
    # Starting two `ray start` nodes and a driver costs the smoke test a minute; the cluster test
    # already runs a search across two such nodes and checks that both ran trials.
    cluster = None if bench.quick else cluster_run(bench, data, study, scratch)
    result = {
        "train_images": len(data.train), "trials": s.scaling_trials, "epochs_per_trial": s.scaling_epochs,
        "one_worker_trials_per_hour": per_hour(one), "two_workers_trials_per_hour": per_hour(two),
        "one_worker_epoch_s": float(np.mean([e["epoch_seconds"] for e in one.epochs])),
        "two_workers_epoch_s": float(np.mean([e["epoch_seconds"] for e in two.epochs])),
        "ratio": per_hour(two) / per_hour(one), "target_ratio": 1.8, "target_met": per_hour(two) / per_hour(one) >= 1.8,
        "two_node_cluster": cluster or QUICK_SKIP,
        "cluster_ratio": None if cluster is None else cluster["trials_per_hour"] / per_hour(one),
        "bare_loop_contention": bare,
    }
    bench.write("scaling", result)
    bars = {"1 worker": per_hour(one), "2 workers": per_hour(two)}
    if cluster is not None:
        bars["2 nodes x 1 CPU"] = cluster["trials_per_hour"]
    bars["2 bare (ideal x contention)"] = per_hour(one) * bare["best_possible_ratio"]
    bar_plot(bench.out / "scaling.png", f"Trials per hour ({s.scaling_trials} grid-winner trials)",
             list(bars), list(bars.values()), "trials per hour")
    return result
