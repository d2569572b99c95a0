"""A finished (or stopped) study's folder read back: what `search.report`, `search.compare` and
`search.export` work from. Only files are read; Ray and MLflow are not needed."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from search.results.best_config import BestConfig
from search.results.files import (
    BEST_FILE,
    CONFUSION_FILE,
    HISTORY_FILE,
    STATE_FILE,
    TRIALS_CSV,
    TRIALS_PARQUET,
    TUNE_DIR,
)
from search.results.front import DeviceLimits
from search.results.records import HISTORY_KEYS, trial_name, trial_number_from_path
from search.results.study_fields import check_fields
from search.results.trials_table import params, with_prefix
from trainables.errors import UserError


@dataclass
class StudyResults:
    folder: Path
    state: dict[str, Any]
    table: pd.DataFrame  # one row per trial, best first (trials.parquet; hyperparameters as config/NAME)
    history: pd.DataFrame  # one row per trial-epoch (history.csv, or Tune's own logs)
    best: BestConfig | None  # best.yaml, once the final retrain has run
    confusion: pd.DataFrame | None  # rows: true class, columns: predicted

    @property
    def name(self) -> str:
        return str(self.state.get("name") or self.folder.name)

    @property
    def space(self) -> str:
        return str(self.state.get("space", "?"))

    @property
    def metric(self) -> str:
        return self.settings.metric if self.settings else "val_accuracy"

    @property
    def mode(self) -> str:
        return self.settings.mode if self.settings else "max"

    @property
    def settings(self):
        from spaces.registry import get_study

        try:
            return get_study(self.space).settings
        except UserError:
            return None  # a study no longer registered: its files still read

    @property
    def limits(self) -> DeviceLimits:
        """The user's device limits the study ran under (--max-mmacs, --max-latency-ms)."""
        return DeviceLimits(self.state.get("max_mmacs"), self.state.get("max_latency_ms"))

    def params(self, row: pd.Series) -> dict[str, Any]:
        """One trial's hyperparameters as recorded (absent conditional ones left out)."""
        return params(row)

    def trial_epochs(self) -> float:
        """Training spent, in epochs: a trial stopped at a quarter-epoch rung counts 0.25."""
        column = "epochs_seen" if "epochs_seen" in self.table else "epochs"
        return float(self.table[column].sum()) if column in self.table else math.nan

    def scored(self) -> pd.DataFrame:
        """Trials with a score, best first."""
        if self.metric not in self.table:
            return self.table[:0]
        return self.table[(self.table["status"] != "failed") & self.table[self.metric].notna()]

    def anytime(self) -> pd.DataFrame:
        """The best score so far after each trial-epoch, in the order the epochs finished."""
        if self.metric not in self.history:  # no trial finished an epoch (a budget ended it inside its first)
            return pd.DataFrame({k: [] for k in ("trial_epochs", "best", "trial", "value", "epoch")})
        h = self.history.dropna(subset=[self.metric])
        order = [c for c in ("timestamp", "trial", "epoch") if c in h]
        h = h.sort_values(order, kind="stable").reset_index(drop=True)
        best = h[self.metric].cummax() if self.mode == "max" else h[self.metric].cummin()
        return pd.DataFrame({"trial_epochs": range(1, len(h) + 1), "best": best, "trial": h["trial"],
                             "value": h[self.metric], "epoch": h["epoch"]})

    def wall_minutes(self) -> float:
        """Search wall time, from the first epoch's start to the last epoch's end."""
        h = self.history
        if "timestamp" not in h or h["timestamp"].isna().all():
            return math.nan
        starts = h["timestamp"] - h.get("epoch_seconds", pd.Series(0.0, index=h.index)).fillna(0.0)
        return float(h["timestamp"].max() - starts.min()) / 60


def _not_a_study(folder: Path, why: str) -> UserError:
    return UserError(f"{folder} is not a study's results folder ({why}); give a study's folder or its name in "
                     "the results directory, e.g. fashion_space-20250101-120000")


def load(folder: str | Path) -> StudyResults:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise _not_a_study(folder, "no such directory")
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        raise _not_a_study(folder, f"no {STATE_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{folder / STATE_FILE} is damaged ({e})") from None
    if not isinstance(state, dict):
        raise _not_a_study(folder, f"{STATE_FILE} is not a mapping")
    check_fields(state, folder / STATE_FILE)
    if (folder / TRIALS_PARQUET).is_file():
        table = _read_table(folder / TRIALS_PARQUET, pd.read_parquet)
    elif (folder / TRIALS_CSV).is_file():
        table = _read_table(folder / TRIALS_CSV, pd.read_csv)
    else:
        raise UserError(f"{folder} has no trials table yet: its search has not finished "
                        f"(resume it: hpsearch run STUDY --name {folder.name} --resume)")
    best = BestConfig.load(folder / BEST_FILE) if (folder / BEST_FILE).is_file() else None
    confusion = _read_optional(folder / CONFUSION_FILE, "the confusion matrix is left out",
                               lambda path: pd.read_csv(path, index_col=0))
    results = StudyResults(folder, state, table, _history(folder), best, confusion)
    results.table = with_prefix(table, results.metric)  # a folder from before the config/ prefix
    return results


def _read_table(path: Path, reader) -> pd.DataFrame:
    """A trials table, or one line saying it is damaged (a crash mid-copy, an edited file)."""
    try:
        table = reader(path)
    except Exception as e:  # noqa: BLE001 - pyarrow, pandas and OS errors all mean "unreadable"
        raise UserError(f"{path} is damaged or not a trials table ({type(e).__name__}); write it again with "
                        f"`hpsearch run STUDY --name {path.parent.name} --resume`") from None
    if "trial" not in table.columns:
        raise UserError(f"{path} is not a trials table (no 'trial' column)")
    return table


def _read_optional(path: Path, instead: str, reader) -> pd.DataFrame | None:
    """A file the study's pages can do without (the table and best.yaml they cannot), or None
    when absent; damaged (cut short, emptied, another encoding), a note says what is done instead."""
    if not path.is_file():
        return None
    try:
        return reader(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        print(f"note: {path} is damaged ({type(e).__name__}); {instead}", file=sys.stderr)
        return None


def _history(folder: Path) -> pd.DataFrame:
    instead = f"the epochs are read from Tune's logs in {folder / TUNE_DIR}"
    history = _read_optional(folder / HISTORY_FILE, instead, pd.read_csv)
    if history is not None and {"trial", "epoch"} <= set(history.columns):
        return history
    if history is not None:
        print(f"note: {folder / HISTORY_FILE} is not a history table (no trial and epoch columns); {instead}",
              file=sys.stderr)
    # Studies run before history.csv existed: Tune's own per-trial logs hold the same epochs.
    rows = []
    for log in sorted((folder / TUNE_DIR).glob("*/result.json")):
        for line in log.read_text().splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if "epoch" not in result or result.get("failed") or result.get("partial"):
                continue
            number = trial_number_from_path(str(log.parent), str(result.get("trial_id", "")))
            rows.append({"trial": trial_name(number) if number is not None else result.get("trial_id"),
                         **{k: result[k] for k in HISTORY_KEYS if k in result}})
    columns = ["trial", *HISTORY_KEYS]
    history = pd.DataFrame(rows, columns=columns)
    # An epoch run again after a crash is logged twice: keep the last.
    return history.drop_duplicates(["trial", "epoch"], keep="last").reset_index(drop=True)
