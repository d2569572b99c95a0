"""One search trial as a Ray Tune function trainable: the plain training loop
(trainables.train.fit) wired to Tune's reports, checkpoints and granted CPUs, the shared cores
at the end of a search, the network's inference latency (measured once, after its first whole
epoch in this worker) and the test-only fault hook."""

from __future__ import annotations

import tempfile
import traceback
from pathlib import Path
from typing import Callable

import ray
import torch
from ray import tune
from torch import nn

from search.results.records import trial_number_from_path
from search.tune.cores import TrialCores
from search.util import faults
from trainables.datasets import TrainingData
from trainables.latency import measure_latency
from trainables.model import NetConfig
from trainables.numerics import accelerator
from trainables.train import CHECKPOINT_FILE, TrialSettings, fit, pick_device


def granted_threads(default: int) -> int:
    """Torch threads for a Ray worker: the CPUs Ray granted it, so concurrent trials never
    oversubscribe the cores (torch would otherwise start one thread per core in every trial)."""
    granted = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(1, int(granted) if granted else default)



def tune_trial(config: dict, settings: TrialSettings, data: TrainingData, core_ledger: str | None = None) -> None:
    """Ray Tune function trainable: one trial of a search. `core_ledger` names the
    search.tune.cores.CoreLedger through which trials take the cores others freed at the end."""
    cfg = NetConfig.from_flat(config)
    granted = granted_threads(settings.threads)
    torch.set_num_threads(granted)
    device = pick_device(use_gpu=bool(ray.get_gpu_ids()))
    accel = accelerator(device, settings.precision)
    context = tune.get_context()
    trial_dir = Path(context.get_trial_dir())
    fault_list = faults.for_trial(trial_number_from_path(str(trial_dir), context.get_trial_id()))
    cores = TrialCores(core_ledger, context.get_trial_id(), granted)
    network: list[nn.Module] = []  # the model fit trains (the first fold's under CV), for its latency

    def before_epoch(epoch: int, model: nn.Module) -> None:
        network[:] = [model]
        threads = cores.threads()
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        faults.inject(fault_list, epoch, model, trial_dir)

    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            # Tensors and plain types only: a crafted checkpoint in shared storage cannot run code.
            state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location=device, weights_only=True)
    epochs_done = len(state["history"]) if state else 0
    # node_id: which cluster node ran the epoch (nodes can share one IP and hostname).
    where = {"node_id": ray.get_runtime_context().get_node_id(), "numerics": accel.name}

    # A trial resumed from a whole epoch (promoted from a pause, or restarted after a crash)
    # measured its latency in its first run, at epoch 1: the architecture, numerics and threads
    # set it, not the weights, so it is not measured (nor logged) again.
    latency_measured = epochs_done >= 1

    def report(metrics: dict[str, float], snapshot: Callable[[], dict]) -> None:
        nonlocal epochs_done, latency_measured
        epochs_done = int(metrics["epoch"])
        if not latency_measured and network:
            # Once, after the trial's first whole epoch: one measurement holds for the whole
            # trial, and a trial stopped or paused at its first whole-epoch rung has it too.
            # (Trials stopped inside their first epoch have none; they never reach the front.)
            latency_measured = True
            metrics = {**metrics, **measure_latency(network[0], data.input_shape, device, accel).metrics()}
        with tempfile.TemporaryDirectory() as folder:
            torch.save(snapshot(), Path(folder) / CHECKPOINT_FILE)
            tune.report({**metrics, **where, "threads": torch.get_num_threads()},
                        checkpoint=tune.Checkpoint.from_directory(folder))

    def report_partial(metrics: dict[str, float]) -> None:
        # No checkpoint: a resumed trial restarts from its last whole epoch and reports again.
        tune.report({**metrics, **where, "threads": torch.get_num_threads()})

    try:
        fit(cfg, data, settings.max_epochs, settings.seed, device, on_epoch=report, state=state,
            before_epoch=before_epoch,
            backbone=settings.backbone, accel=accel, report_points=settings.report_points,
            on_partial=report_partial)
    except Exception:  # noqa: BLE001 - recorded as this trial's failure; the search goes on
        # A Python error repeats if retried, so it ends the trial with its traceback instead of
        # raising into Tune (whose retries are for workers that die).
        tune.report({"epoch": epochs_done + 1, "val_accuracy": 0.0, "failed": 1.0,
                     "error": traceback.format_exc()[-4000:]})
