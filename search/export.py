"""What a study leaves behind: the trials table (Parquet + CSV) and `best.yaml`, plus the
provenance (versions, git commit) recorded with both. Files are written atomically so an
interrupted run never leaves a half-written result."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from search.errors import UserError
from search.records import TrialRecord
from trainables.model import CNNConfig, model_macs

HISTORY_FILE = "history.csv"
PACKAGES = ("hpsearch", "torch", "ray", "optuna", "mlflow", "numpy", "pandas")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, _umask_mode())  # mkstemp makes 0600; results are meant to be shared
    os.replace(tmp, path)


# --- the trials table ------------------------------------------------------------------------

def trials_table(records: list[TrialRecord], metric: str, mode: str,
                 input_shape: tuple[int, int, int], num_classes: int) -> pd.DataFrame:
    """One row per trial, best first: status, epochs, its best epoch's scores, cost, and every
    hyperparameter (absent conditional ones are empty)."""
    sign = 1.0 if mode == "max" else -1.0
    rows = []
    for record in records:
        row: dict[str, Any] = {"trial": record.name, "trial_id": record.trial_id,
                               "status": record.status, "epochs": record.epochs}
        scored = [h for h in record.history if isinstance(h.get(metric), float) and math.isfinite(h[metric])]
        if scored:
            best = max(scored, key=lambda h: sign * h[metric])
            row.update(best_epoch=int(best["epoch"]), **{metric: best[metric]},
                       **{k: best[k] for k in ("val_loss", "val_accuracy", "train_loss") if k in best and k != metric},
                       epoch_seconds=float(pd.Series([h.get("epoch_seconds") for h in record.history]).mean()))
        try:
            row["mmacs"] = model_macs(CNNConfig.from_flat(record.config), input_shape, num_classes) / 1e6
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
    parquet, csv = folder / "trials.parquet", folder / "trials.csv"
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


# --- best.yaml -------------------------------------------------------------------------------

@dataclass
class BestConfig:
    """The exported best configuration: enough to retrain it exactly (`search.train`)."""

    space: str
    dataset: str
    hyperparameters: dict[str, Any]
    epochs: int
    seed: int
    val_fraction: float = 0.1
    metrics: dict[str, float] = field(default_factory=dict)
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    mlflow: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str = "unknown"
    created: str = ""

    def __post_init__(self) -> None:
        CNNConfig.from_flat(self.hyperparameters)  # names the bad key or value
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise UserError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.seed, int):
            raise UserError(f"seed must be an integer, got {self.seed!r}")

    def to_yaml(self) -> str:
        body = {name: getattr(self, name) for name in self.__dataclass_fields__}
        body["created"] = body["created"] or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_yaml())

    @classmethod
    def load(cls, path: Path) -> "BestConfig":
        try:
            body = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read ({e})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise UserError(f"{path}: not valid YAML{where}; fix the file or export it again") from None
        if not isinstance(body, dict):
            raise UserError(f"{path}: expected a mapping of keys (space, hyperparameters, epochs, ...)")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(body) - known)
        if unknown:
            raise UserError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        missing = [k for k in ("space", "dataset", "hyperparameters", "epochs", "seed") if k not in body]
        if missing:
            raise UserError(f"{path}: missing key(s) {', '.join(missing)}")
        if not isinstance(body["hyperparameters"], dict):
            raise UserError(f"{path}: hyperparameters must be a mapping")
        try:
            return cls(**body)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
