"""Fault injection for tests and the chaos script, off unless HPSEARCH_INJECT_FAULTS is set.

    HPSEARCH_INJECT_FAULTS="raise@3:2,nan@5:1,exit@4:2"

makes trial 3 raise in epoch 2, trial 5's weights turn NaN in epoch 1 (it then diverges the
way a real run does), and trial 4's worker process die in epoch 2 (once: a marker file in the
trial folder keeps the retried worker alive). Trials are numbered as in MLflow (trial_003).
A bare `reconcile` entry makes the driver's end-of-search MLflow reconciliation fail.
Real faults, injected at a chosen place, so the recovery paths are tested for real.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

ENV = "HPSEARCH_INJECT_FAULTS"
KINDS = ("raise", "nan", "exit")
DRIVER_KINDS = ("reconcile",)


class InjectedFault(RuntimeError):
    pass


@dataclass(frozen=True)
class Fault:
    kind: str
    trial: int
    epoch: int


def parse(spec: str) -> list[Fault]:
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if item in DRIVER_KINDS:
            continue
        kind, _, where = item.partition("@")
        trial, _, epoch = where.partition(":")
        if kind not in KINDS or not trial.isdigit() or not epoch.isdigit():
            raise ValueError(f"bad {ENV} entry {item!r}: expected KIND@TRIAL:EPOCH with KIND in {KINDS}")
        faults.append(Fault(kind, int(trial), int(epoch)))
    return faults


def in_driver(kind: str) -> None:
    """Raise where the driver does `kind`, when asked to."""
    if kind in os.environ.get(ENV, "").replace(" ", "").split(","):
        raise InjectedFault(f"injected failure of the {kind} step")


def for_trial(trial: int | None) -> list[Fault]:
    spec = os.environ.get(ENV, "")
    return [f for f in parse(spec) if f.trial == trial] if spec and trial is not None else []


def inject(faults: list[Fault], epoch: int, model: torch.nn.Module, trial_dir: Path) -> None:
    """Called at the start of each epoch of a trial."""
    for fault in faults:
        if fault.epoch != epoch:
            continue
        if fault.kind == "raise":
            raise InjectedFault(f"injected failure in epoch {epoch}")
        if fault.kind == "nan":
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        if fault.kind == "exit":
            marker = trial_dir / f".fault-exit-{epoch}"
            if not marker.exists():
                marker.write_text("")
                os._exit(17)  # the worker dies as if killed: no cleanup, no report
