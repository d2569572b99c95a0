"""The trials table (trials.parquet and trials.csv, one row per trial, best first) and the
per-epoch history (history.csv): a finished search's trial records flattened into the tables
that the report, `search.compare`, `search.export` and people read."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from search.atomic import _umask_mode, atomic_write_text
from search.files import HISTORY_FILE, TRIALS_CSV, TRIALS_PARQUET
from search.records import TrialRecord
from trainables.errors import UserError
from trainables.model import NetConfig, model_macs


def trials_table(records: list[TrialRecord], metric: str, mode: str,
                 input_shape: tuple[int, int, int], num_classes: int, backbone=None) -> pd.DataFrame:
    """One row per trial, best first: status, epochs, its best epoch's scores, cost, and every
    hyperparameter (absent conditional ones are empty)."""
    sign = 1.0 if mode == "max" else -1.0
    rows = []
    for record in records:
        row: dict[str, Any] = {"trial": record.name, "trial_id": record.trial_id,
                               "status": record.status, "epochs": record.epochs,
                               "epochs_seen": round(record.epochs_seen, 4), "numerics": record.numerics}
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
                       **{k: best[k] for k in ("val_loss", "val_accuracy", "train_loss") if k in best and k != metric},
                       epoch_seconds=float(pd.Series([h.get("epoch_seconds") for h in record.history]).mean()))
        try:
            row["mmacs"] = model_macs(NetConfig.from_flat(record.config), input_shape, num_classes, backbone) / 1e6
        except UserError:
            row["mmacs"] = math.nan
        row["error"] = record.error.strip().splitlines()[-1] if record.error.strip() else ""
        row.update(record.config)
        rows.append(row)
    table = pd.DataFrame(rows)
    if metric in table:
        table = table.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable")
    return table.reset_index(drop=True)


def write_table(table: pd.DataFrame, folder: Path) -> tuple[Path, Path]:
    parquet, csv = folder / TRIALS_PARQUET, folder / TRIALS_CSV
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".parquet")
    os.close(fd)
    table.to_parquet(tmp, index=False)
    os.chmod(tmp, _umask_mode())
    os.replace(tmp, parquet)
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
