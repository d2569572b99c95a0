"""best.yaml: the chosen configuration with everything needed to retrain it exactly (`search.train`)
and to tell where it came from. Written by the final phase and by `search.export`; read by
`search.train`, the report and the benchmarks. Loading checks every field, so a hand-edited or
foreign file is refused with one line naming the key, not a traceback mid-training."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from search.util.atomic import atomic_write_text
from search.util.yaml_safe import AliasRefused, load_yaml
from trainables.errors import UserError
from trainables.model import NetConfig


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
