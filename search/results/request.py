"""What a user asks of a study, typed: `StudyRequest` is built once by the CLI from the
arguments, saved as the study folder's study.json with how far the study got (`StudyState`),
and is the one source of truth when the study resumes. Where it runs (`Resources`) is asked
anew by every command, so a study can resume on another cluster.

No torch, Ray or MLflow here: `--help` and argument errors stay fast.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from search.results.files import STATE_FILE
from search.results.study_fields import check_fields
from search.util.atomic import atomic_write_text
from trainables.errors import UserError

SMOKE_TRAIN, SMOKE_TEST = 3000, 1000  # --smoke: a slice of the data, 2 trials, 1 epoch
SMOKE_SAMPLES, SMOKE_EPOCHS = 2, 1


@dataclass(frozen=True)
class Resources:
    """Where a command runs: a local Ray instance (address None) or a cluster, and how much of
    it to use (None: all it has)."""

    address: str | None = None
    cpus: int | None = None
    gpus: int | None = None


@dataclass(frozen=True)
class StudyRequest:
    """One study as asked: the space, the budget, the data, and the run settings that are not
    hyperparameters (seed, numerics, final model, tracking)."""

    space: str
    name: str
    results_root: str
    data: dict  # search.data_args.DataChoice.to_dict(): dataset, files, backbone (a dict at the edge)
    tracking_uri: str
    samples: int | None = None
    max_epochs: int | None = None
    seed: int = 0
    smoke: bool = False
    time_budget: float | None = None  # minutes, the final model included
    register_model: str | None = None
    precision: str = "auto"  # trainables.numerics: auto | bf16 | fp32
    final: str = "continue"  # search.results.study_fields.FINAL_MODES
    # How trials are cut short (search.tune.asha.SCHEDULERS); None: the study's own.
    scheduler: str | None = None
    # Folds of cross-validation that score each trial (trainables.crossval); None: a hold-out split.
    cv: int | None = None
    # The user's device (search.results.front.DeviceLimits): a cost cap in million multiply-adds per image
    # that replaces the study's CPU/GPU cap, and a batch-1 latency cap in ms that a trial must meet
    # to be chosen. None: the study's cap, no latency limit.
    max_mmacs: float | None = None
    max_latency_ms: float | None = None
    # The Optuna store's database (--optuna-storage); None: optuna.db in the study folder.
    optuna_storage: str | None = None
    # Earlier searches TPE starts from (search.tune.warm): study folders and GridSearchCV CSVs, resolved,
    # and the file mapping a grid's parameter names onto the space's.
    warm_start: tuple[str, ...] = ()
    warm_start_map: str | None = None
    command: str = ""  # the command line, credentials redacted: logged on the study's MLflow run
    # Where a study of the user's comes from (spaces.loading: a file's absolute path, a module path),
    # so --resume loads it again; None for a registered study, found by `space`.
    study_source: str | None = None
    created: str = ""

    @property
    def limits(self):
        """search.results.front.DeviceLimits (imported here: this module stays free of pandas)."""
        from search.results.front import DeviceLimits

        return DeviceLimits(self.max_mmacs, self.max_latency_ms)

    @property
    def folder(self) -> Path:
        return Path(self.results_root) / self.name

    @property
    def store(self):
        """search.results.optuna_store.Store: where this study's Optuna study is (imported here: no Ray at --help)."""
        from search.results.optuna_store import Store

        return Store.for_study(self.folder, self.name, self.optuna_storage)

    def resume_command(self) -> str:
        return (f"hpsearch run {shlex.quote(self.study_source or self.space)} --name {self.name} --resume "
                f"--results-dir {self.results_root}")

    @staticmethod
    def now() -> str:
        return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class StudyState:
    """A request and how far its study got; study.json, written atomically at each phase. The
    file is flat (the request's fields, then the progress) so readers need no hpsearch types."""

    request: StudyRequest
    parent_run_id: str = ""  # the study's MLflow run
    phase: str = "search"  # search -> final -> done
    delivered: bool = True  # False while MLflow lacks results that a --resume must still deliver
    # Not saved: the folder the loaded study.json was written in (its results_root / name), which
    # differs from where it is now for a folder moved or copied since (search.results.resuming).
    saved_in: str = dataclasses.field(default="", compare=False)

    def save(self) -> None:
        body = {**dataclasses.asdict(self.request), "parent_run_id": self.parent_run_id, "phase": self.phase,
                "delivered": self.delivered}
        atomic_write_text(self.request.folder / STATE_FILE, json.dumps(body, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "StudyState":
        try:
            body = json.loads((folder / STATE_FILE).read_text())
        except FileNotFoundError:
            raise UserError(f"{folder} has no {STATE_FILE}: it is not a study hpsearch can resume") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{folder / STATE_FILE} is damaged ({e}); start a new study with another --name") from None
        if not isinstance(body, dict):
            raise UserError(f"{folder / STATE_FILE} is damaged (not a mapping); start a new study with another --name")
        check_fields(body, folder / STATE_FILE)
        if "warm_start" in body:
            body["warm_start"] = tuple(body["warm_start"])
        progress = {k: body.pop(k) for k in ("parent_run_id", "phase", "delivered") if k in body}
        saved_in = str(Path(body["results_root"]) / body["name"]) if {"results_root", "name"} <= set(body) else ""
        # The folder may have moved since it was written: where it is now is where it resumes.
        body.update(results_root=str(folder.parent), name=folder.name)
        try:
            return cls(StudyRequest(**body), **progress, saved_in=saved_in)
        except TypeError as e:
            raise UserError(f"{folder / STATE_FILE} is damaged ({e}); start a new study with another --name") from None
