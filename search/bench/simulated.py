"""A simulated trial, for the scale benchmark and its test only (no study can name it): it sleeps
instead of training and reports a synthetic learning curve that depends on its configuration,
through the same `tune.report` calls, result keys and per-epoch checkpoints as search.tune.trial, so
the driver (TPE, ASHA, the MLflow delivery, Tune's bookkeeping) does the work real trials cause.

No torch and nothing of trainables here: a Ray worker that runs it imports Ray Tune and this
module only, so dozens of them fit in a small machine's memory."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import tune

CHECKPOINT_FILE = "simulated.json"
# The latency a real trial reports once, after its first whole epoch (trainables.latency's
# LATENCY_METRICS; importing them would import torch, and a test checks the names agree).
LATENCY_KEYS = ("latency_ms_b1", "latency_ms_b256")


@dataclass(frozen=True)
class SimSettings:
    max_epochs: int
    epoch_s: float  # mean seconds per simulated epoch; each configuration runs 0.75-1.25x of it
    report_points: tuple[float, ...] = ()  # ASHA's rungs inside an epoch, as for real trials


def _fraction(config: dict, salt: str) -> float:
    """A number in [0, 1) fixed by the configuration: the same trial behaves the same when resumed."""
    text = json.dumps(config, sort_keys=True, default=str) + salt
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2 ** 64


def final_accuracy(config: dict) -> float:
    """Where this configuration's curve levels off: best near lr 1e-3 (Adam/AdamW) or 3e-2 (SGD),
    with wider networks, moderate dropout and batch norm; sigmoid networks worse; plus a fixed
    per-configuration scatter. Enough structure for TPE to learn and ASHA to rank."""
    lr = float(config.get("lr", 1e-3))
    best_lr = 3e-2 if config.get("optimizer") == "sgd" else 1e-3
    width = sum(float(v) for k, v in config.items() if k.startswith(("filters_", "dense_nodes_"))) or 64.0
    q = 0.93 - 0.025 * math.log10(lr / best_lr) ** 2
    q -= 0.006 * max(0.0, math.log2(400.0 / width))
    q -= 0.2 * (float(config.get("dropout", 0.2)) - 0.2) ** 2
    q += 0.004 if config.get("batch_norm") else 0.0
    q -= 0.03 if config.get("activation") == "sigmoid" else 0.0
    q += 0.01 * (_fraction(config, "scatter") - 0.5)
    return min(max(q, 0.1), 0.95)


def accuracy(config: dict, epochs_seen: float) -> float:
    """The validation accuracy after `epochs_seen` epochs: from chance (0.1) towards
    final_accuracy, more slowly the further the learning rate is from its best."""
    lr = float(config.get("lr", 1e-3))
    best_lr = 3e-2 if config.get("optimizer") == "sgd" else 1e-3
    tau = 0.4 * (1.0 + abs(math.log10(lr / best_lr)))
    return 0.1 + (final_accuracy(config) - 0.1) * (1.0 - math.exp(-epochs_seen / tau))


def _metrics(config: dict, epochs_seen: float) -> dict[str, float]:
    acc = accuracy(config, epochs_seen)
    loss = -math.log(max(acc, 1e-3))
    return {"train_loss": loss * 0.95, "val_loss": loss, "val_accuracy": acc}


def simulated_trial(config: dict, sim: SimSettings) -> None:
    """Ray Tune function trainable: sleeps through each epoch, reporting at the rungs inside it
    (`partial`, no checkpoint) and at its end (with a tiny checkpoint), as search.tune.trial does."""
    epoch_s = sim.epoch_s * (0.75 + 0.5 * _fraction(config, "speed"))
    where = {"node_id": ray.get_runtime_context().get_node_id(), "numerics": "simulated", "threads": 1}
    done = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            done = int(json.loads((Path(folder) / CHECKPOINT_FILE).read_text())["epoch"])
    for epoch in range(done + 1, sim.max_epochs + 1):
        started = time.perf_counter()
        for point in (p for p in sim.report_points if epoch - 1 < p < epoch):
            time.sleep(max(0.0, (point - epoch + 1) * epoch_s - (time.perf_counter() - started)))
            # reported_at: when the trial reported (wall clock), so the benchmark can time the
            # way to MLflow; Tune's own `timestamp` is in whole seconds.
            tune.report({"epoch": epoch - 1, "epochs_seen": point, "partial": 1.0, **_metrics(config, point),
                         "epoch_seconds": time.perf_counter() - started, **where, "reported_at": time.time()})
        time.sleep(max(0.0, epoch_s - (time.perf_counter() - started)))
        metrics = {"epoch": epoch, "epochs_seen": float(epoch), **_metrics(config, epoch), "diverged": 0.0,
                   "epoch_seconds": time.perf_counter() - started}
        if epoch == done + 1:
            metrics.update({key: 1.0 + _fraction(config, key) for key in LATENCY_KEYS})
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / CHECKPOINT_FILE).write_text(json.dumps({"epoch": epoch}))
            tune.report({**metrics, **where, "reported_at": time.time()},
                        checkpoint=tune.Checkpoint.from_directory(folder))
