"""The accuracy-cost trade-off of a finished search, read from its trials table: the Pareto front
(the trials no other trial beats on both the study's metric and a cost: multiply-adds or measured
latency) and the device limits a user set (`--max-mmacs`, `--max-latency-ms`), which say which
trials fit and so may be chosen as the study's best.

The report draws the front (search.reporting.figures), `search.export --pareto` lists it, and the choice of
the best trial (search.study.phases.choose) keeps to the trials that fit. Only trials that trained at
least one whole epoch count on the front: a trial ASHA stopped inside its first epoch scored on a
fraction of an epoch's training, and its score is not comparable (nor can it be retrained: it has
no epoch count)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainables.errors import UserError

# The costs a front can be drawn against, and how people read them.
COSTS = {
    "mmacs": "million multiply-adds per image",
    "latency_ms_b1": "ms per image at batch 1",
    "latency_ms_b256": "ms per batch of 256",
}


@dataclass(frozen=True)
class DeviceLimits:
    """What a user's device allows: a cost cap in million multiply-adds per image and a latency
    cap in milliseconds at batch 1, as measured on the device that trained the trial. None: no
    limit. Run settings (saved in study.json), never hyperparameters."""

    max_mmacs: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for option, what, fix in (("max_mmacs", "multiply-add limit", "million multiply-adds per image, e.g. 5"),
                                  ("max_latency_ms", "latency limit", "milliseconds at batch 1, e.g. 2")):
            value = getattr(self, option)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"the {what} must be a positive number, got {value:g}", option=option,
                                fix=f"positive {fix}")

    @property
    def any(self) -> bool:
        return self.max_mmacs is not None or self.max_latency_ms is not None

    def fits(self, table: pd.DataFrame) -> pd.Series:
        """Per trial, whether it keeps within the limits; a trial whose latency was never
        measured (stopped inside its first epoch) does not fit a latency limit: it cannot show it."""
        ok = pd.Series(True, index=table.index)
        if self.max_mmacs is not None:
            ok &= _column(table, "mmacs") <= self.max_mmacs
        if self.max_latency_ms is not None:
            ok &= _column(table, "latency_ms_b1") <= self.max_latency_ms
        return ok

    def describe(self) -> str:
        """e.g. "at most 5 million multiply-adds per image and 2 ms per image at batch 1"."""
        parts = []
        if self.max_mmacs is not None:
            parts.append(f"{self.max_mmacs:g} million multiply-adds per image")
        if self.max_latency_ms is not None:
            parts.append(f"{self.max_latency_ms:g} ms per image at batch 1")
        return "at most " + " and ".join(parts) if parts else "no limits"


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    # NaN compares False: a missing or unmeasured cost never counts as within a limit.
    return pd.to_numeric(table[name], errors="coerce") if name in table else pd.Series(np.nan, index=table.index)


def counted(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The trials that count: not failed, scored, and trained at least one whole epoch."""
    if metric not in table or table.empty:
        return table[:0]
    keep = table["status"] != "failed"
    if "best_epoch" in table:
        keep &= pd.to_numeric(table["best_epoch"], errors="coerce").fillna(0) >= 1
    keep &= np.isfinite(pd.to_numeric(table[metric], errors="coerce"))
    return table[keep]


def pareto_front(table: pd.DataFrame, metric: str, mode: str = "max", cost: str = "mmacs") -> pd.DataFrame:
    """The non-dominated trials of `table`, cheapest first: no other counted trial is at most as
    costly and at least as good with one of the two strictly. Trials equal on both are all on the
    front (neither dominates); trials without a finite cost or score are left out."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
    rows = counted(table, metric)
    rows = rows[np.isfinite(_column(rows, cost))]
    if rows.empty:
        return rows
    c = _column(rows, cost).to_numpy(dtype=float)
    # Higher is better from here on, whatever the study's mode.
    s = pd.to_numeric(rows[metric]).to_numpy(dtype=float) * (1.0 if mode == "max" else -1.0)
    no_worse = (c[None, :] <= c[:, None]) & (s[None, :] >= s[:, None])  # [i, j]: j is no worse than i
    better = (c[None, :] < c[:, None]) | (s[None, :] > s[:, None])
    dominated = (no_worse & better).any(axis=1)
    front = rows[~dominated]
    order = np.lexsort((-s[~dominated], c[~dominated]))  # by cost, then best score first
    return front.iloc[order]
