"""The trials table (trials.parquet and trials.csv, one row per trial, best first) and the
per-epoch history (history.csv): a finished search's trial records flattened into the tables
that the report, `search.compare`, `search.export` and people read.

Hyperparameter columns carry a prefix, `config/lr`, `config/family` (as Ray's own result frames
do), so a configuration and a metric can never be confused: a new metric column is never read
back as a hyperparameter, and a hyperparameter never shadows a metric. Tables shown to people
drop the prefix (`short_names`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from search.results.files import HISTORY_FILE, TRIALS_CSV, TRIALS_PARQUET
from search.results.front import DeviceLimits
from search.results.records import TrialRecord
from search.util.atomic import atomic_write, atomic_write_text
from trainables.errors import UserError
from trainables.latency import LATENCY_METRICS
from trainables.model import NetConfig, model_macs

CONFIG_PREFIX = "config/"
# A trial's best epoch's scores in its row; the spread is there under cross-validation only.
BEST_EPOCH_SCORES = ("val_loss", "val_accuracy", "train_loss", "val_accuracy_std", "val_loss_std")


def config_columns(table: pd.DataFrame) -> list[str]:
    """The hyperparameter columns, in table order."""
    return [c for c in table.columns if str(c).startswith(CONFIG_PREFIX)]


def params(row: pd.Series) -> dict[str, Any]:
    """One trial's hyperparameters as recorded, without the prefix (absent conditional ones,
    empty in the table, left out; numpy scalars as plain Python values)."""
    out = {}
    for column, value in row.items():
        if not str(column).startswith(CONFIG_PREFIX):
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        out[str(column)[len(CONFIG_PREFIX):]] = value.item() if hasattr(value, "item") else value
    return out


# Every other column the writer made before hyperparameters had a prefix. Frozen: it only reads
# folders written then (new columns come with the prefix in place, and never need adding here).
_BEFORE_PREFIX = frozenset({"trial", "trial_id", "status", "epochs", "epochs_seen", "numerics", "best_epoch",
                            "val_loss", "val_accuracy", "train_loss", "epoch_seconds", "mmacs", "error"})


def with_prefix(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A table written before hyperparameter columns had a prefix, read as if written now; a
    table that has any `config/` column is returned as it is."""
    if config_columns(table):
        return table
    return table.rename(columns={c: f"{CONFIG_PREFIX}{c}" for c in table.columns
                                 if c not in _BEFORE_PREFIX and c != metric})


def short_names(table: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: `lr`, not `config/lr`."""
    return table.rename(columns={c: c[len(CONFIG_PREFIX):] for c in config_columns(table)})


def trials_table(records: list[TrialRecord], metric: str, mode: str,
                 input_shape: tuple[int, int, int], num_classes: int, backbone=None,
                 limits: DeviceLimits | None = None) -> pd.DataFrame:
    """One row per trial, best first: status, epochs, how often pause-and-promote resumed it past
    a rung (`promotions`), its best epoch's scores, cost (multiply-adds
    and measured latency), whether it `fits` the user's device `limits`, and every hyperparameter
    as `config/NAME` (absent conditional ones are empty)."""
    sign = 1.0 if mode == "max" else -1.0
    rows = []
    for record in records:
        row: dict[str, Any] = {"trial": record.name, "trial_id": record.trial_id,
                               "status": record.status, "epochs": record.epochs,
                               "epochs_seen": round(record.epochs_seen, 4), "promotions": record.promotions,
                               "numerics": record.numerics}
        scored = [h for h in record.history if isinstance(h.get(metric), float) and math.isfinite(h[metric])]
        early = [h for h in record.partials if isinstance(h.get(metric), float) and math.isfinite(h[metric])]
        if not scored and early:
            # Stopped inside its first epoch: its last early score, with best_epoch 0 (no whole
            # epoch), so it can be ranked but never chosen for the final retrain.
            row.update(best_epoch=0, **{k: early[-1][k] for k in (metric, "val_loss", "val_accuracy", "train_loss")
                                        if k in early[-1]})
        if scored:
            # The latest of tied epochs: the one whose checkpoint Tune keeps as the best.
            best = max(reversed(scored), key=lambda h: sign * h[metric])
            row.update(best_epoch=int(best["epoch"]), **{metric: best[metric]},
                       **{k: best[k] for k in BEST_EPOCH_SCORES if k in best and k != metric},
                       epoch_seconds=float(pd.Series([h.get("epoch_seconds") for h in record.history]).mean()))
        try:
            row["mmacs"] = model_macs(NetConfig.from_flat(record.config), input_shape, num_classes, backbone) / 1e6
        except UserError:
            row["mmacs"] = math.nan
        latency = record.latency
        row.update({k: latency.get(k, math.nan) for k in LATENCY_METRICS})
        row["error"] = record.error.strip().splitlines()[-1] if record.error.strip() else ""
        row.update({f"{CONFIG_PREFIX}{k}": v for k, v in record.config.items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table.insert(table.columns.get_loc("error"), "fits", (limits or DeviceLimits()).fits(table))
    if metric in table:
        table = table.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable")
    return table.reset_index(drop=True)


def write_table(table: pd.DataFrame, folder: Path) -> tuple[Path, Path]:
    parquet, csv = folder / TRIALS_PARQUET, folder / TRIALS_CSV
    atomic_write(parquet, lambda tmp: table.to_parquet(tmp, index=False))
    atomic_write_text(csv, table.to_csv(index=False))
    return parquet, csv


def history_table(records: list[TrialRecord]) -> pd.DataFrame:
    """Every epoch of every trial (long format): the report's learning curves and anytime curve."""
    rows = [{"trial": r.name, "trial_id": r.trial_id, "status": r.status, **h} for r in records for h in r.history]
    return pd.DataFrame(rows, columns=None if rows else ["trial", "trial_id", "status", "epoch"])


def write_history(records: list[TrialRecord], folder: Path) -> Path:
    path = folder / HISTORY_FILE
    atomic_write_text(path, history_table(records).to_csv(index=False))
    return path
