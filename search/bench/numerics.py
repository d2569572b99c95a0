"""Benchmark: numerics and threads per device. Seconds per epoch of a bare loop in each precision
and memory layout at 1 and 2 torch threads, for the textbook CNN and the original grid's winner;
then, in the chosen numerics, two 1-thread trials at once against one 2-thread trial (the two
plans a 2-core machine allows), as epochs per hour. `auto`'s choice in `trainables/numerics.py`
and the default plan in `search/tune/tuner.py` come from these figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch

from search.bench.baseline import bare_fit
from search.bench.common import REPO, Bench, bar_plot, tmpdir
from spaces import fashion_space
from trainables.model import NetConfig
from trainables.numerics import Accel, accelerator, native_bf16_cpu

NETS = ("TEXTBOOK_CNN", "GRID_WINNER")
MODES = {"fp32 contiguous": Accel(), "fp32 channels-last": Accel(None, True),
         "bf16 channels-last": Accel(torch.bfloat16, True)}


def epoch_seconds(bench: Bench, net: str, accel: Accel, threads: int) -> dict:
    data = bench.subset(bench.sizes.numerics_train, 1000).for_search(0.1, bench.seed)
    r = bare_fit(NetConfig.from_flat(getattr(fashion_space, net)), data, bench.sizes.numerics_epochs,
                 bench.seed, threads, accel)
    # The first epoch pays one-off allocator and kernel-selection costs; the rest are steady.
    return {
        "epoch_s": float(np.mean(r["epoch_s"][1:] or r["epoch_s"])),
        "val_accuracy": r["val_accuracy"],
        "train_images": len(data.train),
    }


def plans(bench: Bench, precision: str) -> dict:
    """Two 1-thread processes at once vs one 2-thread process, each training the textbook CNN."""
    s = bench.sizes
    folder = tmpdir("hpsearch-bench-plans-")

    def launch(name: str, threads: int) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "search.bench.baseline",
                str(s.numerics_train),
                str(max(s.numerics_epochs, 2) + 1),
                bench.data_dir or "-",
                str(folder / f"{name}.json"),
                "TEXTBOOK_CNN",
                str(threads),
                precision,
            ],
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )

    def steady_epoch(name: str) -> float:
        # After the first epoch (one-off allocator and kernel-selection costs).
        return float(np.mean(json.loads((folder / f"{name}.json").read_text())["epoch_s"][1:]))

    launch("one_x2", 2).wait()
    pair = [launch("a", 1), launch("b", 1)]
    for p in pair:
        p.wait()
    one = steady_epoch("one_x2")
    two = float(np.mean([steady_epoch("a"), steady_epoch("b")]))
    return {"one_trial_two_threads_epoch_s": one, "two_trials_one_thread_epoch_s": two,
            "one_trial_two_threads_epochs_per_hour": 3600 / one,
            "two_trials_one_thread_epochs_per_hour": 2 * 3600 / two,
            "ratio_two_trials_over_one": (2 * 3600 / two) / (3600 / one)}


def run(bench: Bench) -> dict:
    chosen = accelerator(torch.device("cpu"))
    result: dict = {"native_bf16": native_bf16_cpu(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "auto_choice": chosen.name, "epochs": {}}
    for net in NETS:
        for mode, accel in MODES.items():
            for threads in (1, 2):
                key = f"{net} | {mode} | {threads} thread{'s' if threads > 1 else ''}"
                result["epochs"][key] = epoch_seconds(bench, net, accel, threads)
                print(f"  {key}: {result['epochs'][key]['epoch_s']:.2f} s/epoch", flush=True)
    for net in NETS:
        base = result["epochs"][f"{net} | fp32 contiguous | 1 thread"]["epoch_s"]
        for key, row in result["epochs"].items():
            if key.startswith(net):
                row["speedup_vs_fp32_contiguous_1_thread"] = base / row["epoch_s"]
    result["plans"] = plans(bench, chosen.precision)
    labels = list(result["epochs"])
    bar_plot(bench.out / "numerics.png", "Seconds per epoch by numerics and threads (bare loop)",
             [k.replace(" | ", "\n") for k in labels], [result["epochs"][k]["epoch_s"] for k in labels], "s / epoch")
    bench.write("numerics", result)
    return result
