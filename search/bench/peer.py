"""Benchmark 5: hpsearch (the real CLI, as a user runs it) against the do-it-yourself Ray Tune
search of search.bench.peer_diy, same space, trials, epochs, data and CPUs: wall time and the
best configuration's test accuracy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from search.bench.common import REPO, Bench, bar_plot, tmpdir, write_idx_layout
from search.bench.peer_diy import run_diy
from search.results.files import BEST_FILE


def run_hpsearch(root: Path, results: Path, trials: int, epochs: int, cpus: int, seed: int) -> dict:
    command = [sys.executable, "-m", "search.run", "fashion_space", "--data-dir", str(root), "--samples", str(trials),
               "--max-epochs", str(epochs), "--cpus", str(cpus), "--seed", str(seed), "--results-dir", str(results),
               "--name", "peer"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"hpsearch failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    best = yaml.safe_load((results / "peer" / BEST_FILE).read_text())
    return {"wall_s": wall, "test_accuracy": best["metrics"]["test_accuracy"],
            "best_val_accuracy": best["metrics"]["val_accuracy"], "trial_epochs": best["search"]["trial_epochs"],
            "final_retrain_epochs": best["epochs"], "command": " ".join(command[1:])}


def run(bench: Bench) -> dict:
    s = bench.sizes
    ds = bench.subset(s.peer_train, s.peer_test)
    root = write_idx_layout(ds, tmpdir("hpsearch-bench-peer-data-"))
    cpus = min(2, os.cpu_count() or 1)
    hp = run_hpsearch(root, bench.scratch("peer-hpsearch"), s.peer_trials, s.peer_epochs, cpus, bench.seed)
    diy = run_diy(
        str(root), bench.scratch("peer-diy"), bench.tracking_uri, s.peer_trials, s.peer_epochs, cpus, bench.seed
    )
    result = {
        "train_images": len(ds.train), "test_images": len(ds.test), "trials": s.peer_trials, "epochs": s.peer_epochs,
        "cpus": cpus, "hpsearch": hp, "diy": diy, "speedup": diy["wall_s"] / hp["wall_s"],
        "target_speedup": 2.0,
        "target_met": diy["wall_s"] / hp["wall_s"] >= 2.0 and hp["test_accuracy"] >= diy["test_accuracy"],
        "note": "hpsearch's wall time includes its final retrain on all training images and the test; the "
                "DIY search tests its best checkpoint (no retrain), as the Ray docs do",
    }
    bench.write("peer", result)
    bar_plot(
        bench.out / "peer.png",
        f"{s.peer_trials} trials x {s.peer_epochs} epochs, {len(ds.train)} images: wall time",
        [f"hpsearch (test {hp['test_accuracy']:.3f})", f"DIY Ray Tune (test {diy['test_accuracy']:.3f})"],
        [hp["wall_s"], diy["wall_s"]],
        "seconds",
    )
    return result
