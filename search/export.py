"""What a study leaves behind: the trials table (Parquet + CSV), the per-epoch history and
`best.yaml`, plus the provenance (versions, git commit) recorded with them. Files are written
atomically so an interrupted run never leaves a half-written result.

`python -m search.export RESULTS_DIR [--top K] [--format yaml|json] [--output FILE]` exports the
best (or the top K) configurations of a finished study; a single one loads in `search.train`."""

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

from search.files import BEST_FILE, HISTORY_FILE, TRIALS_CSV, TRIALS_PARQUET
from search.records import TrialRecord
from trainables.errors import UserError
from trainables.model import NetConfig, model_macs

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
    """Write to a temp file beside `path`, flush it to disk, then rename: a crash leaves the old
    file or the new one, never half of one, and no temp file on failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AliasRefused(yaml.composer.ComposerError):
    pass


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: a few hundred bytes of nested aliases expand to
    gigabytes (a "billion laughs"), and hpsearch's own files never use them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise AliasRefused(None, None, "not valid here: YAML aliases (*name) are refused", event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str):
    return yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader that also refuses aliases


# --- the trials table ------------------------------------------------------------------------

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
    # The learning-rate schedule's horizon the trial followed (its max epochs): a retrain stops
    # at `epochs` but decays the rate as the trial did. None: the schedule ends at `epochs`.
    schedule_epochs: int | None = None
    # How the final model was made and in what numerics (trainables.numerics.Accel.name).
    final: dict[str, Any] = field(default_factory=dict)
    # The data it was searched on (search.data_args.DataChoice) and the class names in index
    # order: for CSV data this is the mapping from the file's labels to the model's outputs.
    data: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    mlflow: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str = "unknown"
    created: str = ""

    def __post_init__(self) -> None:
        NetConfig.from_flat(self.hyperparameters)  # names the bad key or value
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise UserError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("data", "metrics", "per_class_accuracy", "search", "mlflow", "versions", "final"):
            if not isinstance(getattr(self, name), dict):
                raise UserError(f"{name} must be a mapping, got {type(getattr(self, name)).__name__}")
        if self.schedule_epochs is not None and (not isinstance(self.schedule_epochs, int)
                                                 or self.schedule_epochs < self.epochs):
            raise UserError(f"schedule_epochs must be an integer of at least epochs ({self.epochs}), "
                            f"got {self.schedule_epochs!r}")

    def to_dict(self) -> dict[str, Any]:
        body = {name: getattr(self, name) for name in self.__dataclass_fields__}
        body["created"] = body["created"] or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return body

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_yaml())

    @classmethod
    def load(cls, path: Path) -> "BestConfig":
        try:
            body = load_yaml(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read ({e})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = e.problem if isinstance(e, AliasRefused) else "not valid YAML"
            raise UserError(f"{path}: {problem}{where}; fix the file or export it again") from None
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
            raise UserError(f"{path}: {e}", option=e.option, fix=e.fix) from None


# --- `python -m search.export` ---------------------------------------------------------------

def top_configs(folder: Path, k: int) -> list[BestConfig]:
    """The best `k` configurations of a study, best first, each retrainable as it stands. The
    best is best.yaml itself (with its test score) once the study has run its final retrain."""
    import dataclasses

    from search.results import load

    results = load(folder)
    scored = results.scored()
    if "best_epoch" in scored:  # a trial stopped inside its first epoch has no epoch count to retrain for
        scored = scored[scored["best_epoch"] >= 1]
    scored = scored.head(k)
    if scored.empty:
        raise UserError(f"{folder}: no trial of this study has a score to export")
    settings = results.settings
    if settings is None and results.best is None:
        raise UserError(f"{folder}: study {results.space!r} is no longer registered; cannot tell its dataset")
    configs = []
    for rank, (_, row) in enumerate(scored.iterrows(), 1):
        search = {"name": results.name, "trial": str(row["trial"]), "rank": rank, "results_dir": str(results.folder)}
        best = results.best
        if best is not None and best.search.get("best_trial") == row["trial"]:
            configs.append(dataclasses.replace(best, search={**best.search, **search}))
            continue
        metrics = {m: float(row[m]) for m in (results.metric, "val_loss") if m in row and pd.notna(row[m])}
        configs.append(
            BestConfig(
                space=results.space,
                dataset=best.dataset if best is not None else settings.dataset,
                hyperparameters=NetConfig.from_flat(results.params(row)).to_flat(),
                epochs=int(row["best_epoch"]),
                seed=int(results.state.get("seed", 0)),
                val_fraction=best.val_fraction if best is not None else settings.val_fraction,
                metrics=metrics,
                search=search,
                data=best.data if best is not None else {},
                classes=best.classes if best is not None else [],
                versions=best.versions if best is not None else {},
                git_commit=best.git_commit if best is not None else "unknown",
            )
        )
    return configs


def render(configs: list[BestConfig], fmt: str, single: bool) -> str:
    import json

    body: Any = configs[0].to_dict() if single else [c.to_dict() for c in configs]
    if fmt == "json":
        return json.dumps(body, indent=2) + "\n"
    return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def build_parser():
    from search.cli import Parser

    p = Parser(
        prog="python -m search.export",
        description="Export the best (or the top K) configurations of a finished study; "
        "the best alone loads in search.train.",
    )
    p.add_argument("results_dir", help="a study's results folder, as printed by search.run")
    p.add_argument("--top", type=int, default=1, metavar="K",
                   help="export the K best configurations as a list (default 1: the best alone, "
                        "in the form search.train reads)")
    p.add_argument("--format", choices=("yaml", "json"), default=None,
                   help="output format (default: from --output's suffix, else yaml)")
    p.add_argument("--output", "-o", default=None, metavar="FILE", help="write here instead of to standard output")
    return p


def main(argv: list[str] | None = None) -> int:
    import sys

    args = build_parser().parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top must be 1 or more, got {args.top}")
    output = Path(args.output) if args.output else None
    fmt = args.format or ("json" if output is not None and output.suffix.lower() == ".json" else "yaml")
    if output is not None and not output.parent.is_dir():
        raise UserError(f"--output {output}: folder {output.parent} does not exist")
    if output is not None and output.is_dir():
        raise UserError(f"--output {output} is a folder; name a file, e.g. {output / BEST_FILE}")
    configs = top_configs(Path(args.results_dir), args.top)
    if len(configs) < args.top:
        print(f"note: only {len(configs)} trials have a score after a whole epoch (trials stopped inside "
              "their first epoch cannot be retrained); exporting those", file=sys.stderr)
    text = render(configs, fmt, single=args.top == 1)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(output, text)
        print(f"wrote {len(configs)} configuration{'s' if len(configs) > 1 else ''} to {output}", file=sys.stderr)
    return 0


def cli() -> None:
    from search.cli import run_cli

    run_cli(main)


if __name__ == "__main__":
    cli()
