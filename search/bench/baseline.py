"""COMPARATOR BASELINE, deliberately separate from trainables/train.py: the bare PyTorch loop a
user would write in one process (float tensors normalised once and kept in memory, the same
model builder, optimizer, schedule and per-epoch validation as a trial). It exists only as the
yardstick for the service's overhead; nothing in the service calls it."""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

from trainables.datasets import TrainingData
from trainables.model import NetConfig, build_model, lr_factor, make_optimizer
from trainables.numerics import Accel


def bare_fit(cfg: NetConfig, data: TrainingData, epochs: int, seed: int = 0, threads: int = 1,
             accel: Accel | None = None) -> dict:
    """Train for `epochs`, validating after each; returns wall seconds (model build included).
    `accel` (default plain fp32, contiguous) sets the numerics, as a user would by hand."""
    torch.set_num_threads(threads)
    accel = accel or Accel()
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x = (torch.from_numpy(data.train.x.copy()).float() / 255 - mean) / std
    y = torch.from_numpy(data.train.y.copy())
    xv = (torch.from_numpy(data.val.x.copy()).float() / 255 - mean) / std
    yv = torch.from_numpy(data.val.y.copy())
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(cfg, data.input_shape, data.num_classes).to(memory_format=accel.memory_format)
    x, xv = accel.layout(x), accel.layout(xv)
    opt = make_optimizer(cfg, model)
    steps = -(-len(y) // cfg.batch_size)
    step = 0
    epoch_times, accuracy = [], 0.0
    for _ in range(epochs):
        t = time.perf_counter()
        model.train()
        order = torch.randperm(len(y))
        for start in range(0, len(y), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg, step, epochs * steps)
            step += 1
            with accel.autocast(x.device):
                loss = F.cross_entropy(model(accel.layout(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            with accel.autocast(x.device):
                correct = sum((model(xv[i:i + 2048]).argmax(1) == yv[i:i + 2048]).sum().item()
                              for i in range(0, len(yv), 2048))
        accuracy = correct / len(yv)
        epoch_times.append(time.perf_counter() - t)
    return {"wall_s": time.perf_counter() - started, "epoch_s": epoch_times, "val_accuracy": accuracy}


def bare_epoch_process(n_train: int | None, epochs: int, data_dir: str | None, out: str,
                       net: str = "GRID_WINNER", threads: int = 1, precision: str = "fp32-contiguous") -> None:
    """Entry for a separate process (contention measurements): time bare epochs of the
    `spaces.fashion_space` network `net` with `threads` torch threads in `precision`
    (`fp32-contiguous`, the plain loop, or a `trainables.numerics` precision)."""
    import json

    from spaces import fashion_space
    from trainables.numerics import accelerator
    from trainables.readers import load_dataset

    ds = load_dataset("fashion_mnist", data_dir)
    if n_train is not None:
        ds = ds.sliced(n_train, 1000, 0)
    accel = Accel() if precision == "fp32-contiguous" else accelerator(torch.device("cpu"), precision)
    result = bare_fit(NetConfig.from_flat(getattr(fashion_space, net)), ds.for_search(0.1, 0), epochs,
                      threads=threads, accel=accel)
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    import sys

    bare_epoch_process(None if sys.argv[1] == "all" else int(sys.argv[1]), int(sys.argv[2]),
                       None if sys.argv[3] == "-" else sys.argv[3], sys.argv[4], *sys.argv[5:6],
                       *map(int, sys.argv[6:7]), *sys.argv[7:8])
