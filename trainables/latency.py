"""Inference latency of a trained network, measured where it trained: on its device, in its
numerics and with its threads, at batch 1 (one request at a time, what a deployed model on a small
device answers) and at a large batch (throughput). Multiply-adds say what a network costs on
paper; the same MACs can run at very different speeds (depth, memory traffic, kernel launches),
so a study that must fit a device is constrained by, and draws its front against, time measured.

Plain torch: the search's trial (search/tune/trial.py) calls it once per trial and reports the
result as metrics. Cheap by design, and once per trial: a warm-up pass, then the median of a few
timed passes per batch size (the median: one pass slowed by another process does not move it).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it runs: the metric names below are read by torch-free code
    import torch
    from torch import nn

    from trainables.numerics import Accel

LARGE_BATCH = 256
WARMUP = 1  # the first pass pays for allocator and kernel selection; never timed
REPEATS = {1: 7, LARGE_BATCH: 3}  # timed passes per batch size: more where one pass is short


@dataclass(frozen=True)
class Latency:
    """Median milliseconds of one forward pass of a whole batch."""

    ms_b1: float
    ms_large: float

    def metrics(self) -> dict[str, float]:
        """As the trial reports them: the trials table's and MLflow's names."""
        return {"latency_ms_b1": self.ms_b1, f"latency_ms_b{LARGE_BATCH}": self.ms_large}


LATENCY_METRICS = ("latency_ms_b1", f"latency_ms_b{LARGE_BATCH}")


def _sync(device: "torch.device") -> None:
    import torch

    # CUDA runs asynchronously: without waiting, a timer measures the launch, not the work.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(model: "nn.Module", x: "torch.Tensor", device: "torch.device", accel: "Accel", repeats: int) -> float:
    import torch

    times = []
    with torch.no_grad(), accel.autocast(device):
        for i in range(WARMUP + repeats):
            _sync(device)
            started = time.perf_counter()
            model(x)
            _sync(device)
            if i >= WARMUP:
                times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def measure_latency(model: "nn.Module", input_shape: tuple[int, ...], device: "torch.device",
                    accel: "Accel | None" = None) -> Latency:
    """Median latency of `model` on raw inputs of `input_shape` (what it is given in use: 0-255
    pixels or features, normalised by its own first layer), in eval mode without gradients. The
    model's train/eval mode is restored, and the inputs come from a private generator, so the
    training that goes on after the measurement draws the same random numbers as without it."""
    import torch

    from trainables.numerics import Accel

    accel = accel or Accel()
    generator = torch.Generator().manual_seed(0)
    was_training = model.training
    model.eval()
    try:
        ms = {}
        for batch, repeats in REPEATS.items():
            x = torch.rand((batch, *input_shape), generator=generator).mul_(255.0).to(device)
            ms[batch] = _median_ms(model, accel.layout(x), device, accel, repeats)
    finally:
        model.train(was_training)
    return Latency(ms_b1=ms[1], ms_large=ms[LARGE_BATCH])
