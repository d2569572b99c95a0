"""Smoke test of `python -m search.bench`: every part runs at tiny sizes from the command line and
writes its JSON (with the keys docs/benchmarks.md's figures are built from) and its PNG. No timing is
asserted: performance figures come from the real benchmark run, not from tests."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import torch

from search.bench.__main__ import PARTS
from search.bench.scaling import QUICK_SKIP
from search.bench.simulated import LATENCY_KEYS, accuracy, final_accuracy
from tests.conftest import REPO, run_module
from trainables.latency import LATENCY_METRICS
from trainables.numerics import Accel
from trainables.train import fit

EXPECTED = {
    "overhead": ["bare_s_per_epoch", "service_s_per_trial_epoch", "ratio", "trial_startup", "data_attach_s"],
    "memory": ["trial_workers", "driver", "dataset_mib", "dataset_once_per_node"],
    "datapath": ["fashion", "cifar_augmentation"],
    "efficiency": ["grid_best_val_accuracy", "grid_trial_epochs", "summary", "runs", "cold_start"],
    "scaling": ["one_worker_trials_per_hour", "two_workers_trials_per_hour", "ratio", "two_node_cluster",
                "bare_loop_contention"],
    "peer": ["hpsearch", "diy", "speedup"],
    "numerics": ["native_bf16", "auto_choice", "epochs", "plans"],
    "warmstart": ["warm_fraction_of_a", "cold_fraction_of_a", "warm_reached", "runs"],
}
PLOTS = ["numerics", "overhead", "datapath", "efficiency", "scaling", "peer", "warmstart"]


def test_every_benchmark_writes_json_and_plot(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    # `scale` has a test of its own, below.
    parts = [p for p in PARTS if p != "scale"]
    proc = run_module("search.bench", *parts, "--quick", "--out", str(out), "--data-dir", str(data_root),
                      env={"HPSEARCH_RESULTS_DIR": str(tmp_path / "results")}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name, keys in EXPECTED.items():
        payload = json.loads((out / f"{name}.json").read_text())
        assert [k for k in keys if k not in payload] == [], name
    for name in PLOTS:
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    overhead = json.loads((out / "overhead.json").read_text())
    assert overhead["trial_epochs"] == overhead["trials"] * overhead["epochs"]
    assert json.loads((out / "memory.json").read_text())["dataset_once_per_node"] is True
    scaling = json.loads((out / "scaling.json").read_text())
    # --quick leaves the two-node run to the cluster test (a search across two `ray start` nodes,
    # trials on both), and says so where the full run's figures would be.
    assert scaling["two_node_cluster"] == QUICK_SKIP and scaling["cluster_ratio"] is None
    cluster_test = importlib.import_module("tests.test_two_node_cluster")
    assert callable(cluster_test.test_search_through_address_spreads_trials_over_both_nodes)
    efficiency = json.loads((out / "efficiency.json").read_text())
    assert set(efficiency["summary"]) == {"tpe_asha", "tpe_asha_grace1", "tpe_hyperband", "random_asha", "tpe_fifo",
                                          "grid"}
    assert all(run["curve"] for runs in efficiency["runs"].values() for run in runs)


SCALE_RUN = ["workers", "trials", "wall_s", "results_per_s", "proposal_ms", "searcher_ms_per_result",
             "driver_cpu_pct_of_one_core", "driver_machine_share", "driver_rss_mib", "mlflow_delay_s",
             "report_to_driver_s", "pending_deliveries_max", "deliveries_dropped_at_end", "reconcile_s",
             "worker_memory", "worker_utilisation", "series"]


def test_scale_benchmark_quick(data_root: Path, tmp_path: Path) -> None:
    """The cluster-scale benchmark at CI size: simulated trials through the service's search phase,
    delivered to a real `mlflow server`, then the finished search resumed."""
    out = tmp_path / "bench"
    proc = run_module("search.bench", "scale", "--quick", "--out", str(out), "--data-dir", str(data_root),
                      env={"HPSEARCH_RESULTS_DIR": str(tmp_path / "results")}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = json.loads((out / "scale.json").read_text())
    (run,) = payload["runs"]
    assert [k for k in SCALE_RUN if k not in run] == []
    assert run["trials"] == payload["sizes"]["scale_trials"] and run["workers"] == payload["sizes"]["scale_workers"]
    assert run["proposal_ms"]["count"] == run["trials"]  # every trial's configuration was proposed and timed
    assert run["mlflow_delay_s"]["count"] == run["results"]  # every result reached MLflow during the search
    assert payload["resume"]["trials"] == run["trials"] and payload["resume"]["filled"] == 0
    assert (out / "scale.png").read_bytes()[:4] == b"\x89PNG"
    assert "View run" not in proc.stdout  # MLflow's per-run URL lines are off


def test_simulated_trials_import_no_torch_and_learn_from_their_configuration() -> None:
    """64 simulated workers must stay light, and TPE and ASHA need a curve that depends on the
    configuration and rises with training."""
    code = "import sys, search.bench.simulated; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr
    assert tuple(LATENCY_KEYS) == tuple(LATENCY_METRICS)
    good = {"optimizer": "adam", "lr": 1e-3, "dropout": 0.2, "filters_0": 64, "filters_1": 64, "dense_nodes_0": 256}
    assert final_accuracy(good) > final_accuracy({**good, "lr": 1e-1}) + 0.05
    assert accuracy(good, 0.25) < accuracy(good, 1) < accuracy(good, 4) <= final_accuracy(good)


def test_unknown_benchmark_is_a_one_line_error(tmp_path: Path) -> None:
    proc = run_module("search.bench", "speed", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "unknown benchmark(s) speed" in proc.stderr and "Traceback" not in proc.stderr


def test_fit_runs_the_gpu_path_bf16_channels_last_on_cpu() -> None:
    """The CUDA settings exercised on the CPU: autocast bf16 and channels-last still train."""
    from tests.test_train import CFG, toy_data

    result = fit(CFG, toy_data(), epochs=3, seed=0, device=torch.device("cpu"), accel=Accel(torch.bfloat16, True))
    assert next(result.model.parameters()).dtype == torch.float32  # autocast keeps fp32 master weights
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
