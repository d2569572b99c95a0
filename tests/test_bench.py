"""Smoke test of `python -m search.bench`: every part runs at tiny sizes from the command line and
writes its JSON (with the keys the README table is built from) and its PNG. No timing is
asserted: performance figures come from the real benchmark run, not from tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import run_module
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
    proc = run_module("search.bench", "all", "--quick", "--out", str(out), "--data-dir", str(data_root),
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
    assert scaling["two_node_cluster"]["nodes"] == 2
    efficiency = json.loads((out / "efficiency.json").read_text())
    assert set(efficiency["summary"]) == {"tpe_asha", "tpe_asha_grace1", "tpe_hyperband", "random_asha", "tpe_fifo",
                                          "grid"}
    assert all(run["curve"] for runs in efficiency["runs"].values() for run in runs)


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
