"""The study's Optuna searcher and the store it writes: Ray's OptunaSearch with its Optuna study
kept in an Optuna RDB store (the study folder's SQLite file by default, a database server when
the user gives one), so that what TPE saw outlives the driver: `--resume` continues it, the report
reads it, optuna-dashboard shows it live, and a later study can start from it (search.warm).

What the store holds per trial, and why:
  - intermediate values at STEPS_PER_EPOCH steps per epoch (ASHA's first rungs fall inside an
    epoch), so the fidelity a trial reached is on record;
  - state COMPLETE (value: its best score) only for a trial that trained every epoch; a trial ASHA
    (or the time budget) stopped early is PRUNED, the Optuna idiom TPE ranks by how far it got
    before how well it did, so nobody, TPE included, mistakes a 1-epoch score for a finished one;
  - state FAIL for a trial whose training raised, with the error's last line;
  - user attributes: the Tune trial id, epochs trained, best score and its epoch.
"""

from __future__ import annotations

import math
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from search.credentials import redact
from search.files import OPTUNA_DB
from trainables.errors import UserError

STEPS_PER_EPOCH = 100  # intermediate-value steps per epoch: step 25 is a quarter epoch, 300 epoch 3
SQLITE_TIMEOUT_S = 60  # a dashboard or report reading the file holds its lock briefly; wait, don't fail


@dataclass(frozen=True)
class Store:
    """Where a study's Optuna study lives: an SQLAlchemy URL and the study's name in it."""

    url: str
    name: str
    in_folder: bool = False  # the study folder's own file, which moves with the folder

    @classmethod
    def in_study_folder(cls, folder: Path, name: str) -> "Store":
        return cls(f"sqlite:///{Path(folder).resolve() / OPTUNA_DB}", name, in_folder=True)

    @classmethod
    def for_study(cls, folder: Path, name: str, url: str | None) -> "Store":
        """`url`: the user's database (--optuna-storage), or None for the SQLite file in the folder."""
        return cls(url, name) if url else cls.in_study_folder(folder, name)

    @property
    def in_file(self) -> bool:
        return self.url.startswith("sqlite:///")

    def storage(self) -> optuna.storages.BaseStorage:
        kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if self.in_file else {"pool_pre_ping": True}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                storage = optuna.storages.RDBStorage(self.url, engine_kwargs=kwargs)
                if self.in_file:
                    _write_ahead(storage)
                return storage
        except (ImportError, ModuleNotFoundError) as e:
            raise UserError(f"the Optuna store {redact(self.url)} needs a database driver that is not installed "
                            f"({e})", option="optuna_storage", fix="a sqlite:/// URL or install the driver") from None
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors are many; the message names the problem
            raise UserError(f"cannot open the Optuna store {redact(self.url)}: {str(e).splitlines()[0]}",
                            option="optuna_storage", fix="a reachable database URL") from None

    def exists(self) -> bool:
        """Whether the store already holds a study of this name (a file store that is absent holds none)."""
        if self.in_file and not Path(self.url.removeprefix("sqlite:///")).exists():
            return False
        return self.name in optuna.study.get_all_study_names(self.storage())

    def load(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage())


def _write_ahead(storage: optuna.storages.RDBStorage) -> None:
    """SQLite in write-ahead-log mode, synced at checkpoints rather than at every commit. Optuna
    commits once per suggested parameter, report and attribute; with SQLite's default rollback
    journal each commit waits for the disk, which made TPE's proposals 5x slower than in memory
    (`python -m search.bench scale`: ~280 ms against ~55 ms a proposal here at a few dozen trials).
    A killed driver loses nothing committed; a power cut may lose the last commits but never
    corrupts the file, and Tune's own state, not this file, is what `--resume` trusts.
    WAL needs every process that opens the file on one host: the README says to give a study whose
    folder is on a network file system read from other hosts a database server instead."""
    import sqlalchemy

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    storage.engine.dispose()  # connections made before the listener (Optuna's schema set-up) are dropped


def check_new_store(store: Store) -> None:
    """A new study must not join an older study of the same name in a shared database: TPE would
    take the other study's trials for its own."""
    if store.exists():
        raise UserError(f"the Optuna store {redact(store.url)} already has a study named {store.name!r}",
                        option="name", fix="another name (or --resume to continue that study)")


class StoredSearch(OptunaSearch):
    """OptunaSearch whose study lives in `store`. Ray's class keeps the study in memory and
    pickles it with Tune's state; this one pickles only its own bookkeeping and reconnects to the
    store on resume, where the trials TPE learnt from are."""

    def __init__(self, *, store: Store, max_epochs: int, warm_trials: list[optuna.trial.FrozenTrial] | None = None,
                 **kwargs: Any):
        """`warm_trials`: earlier trials TPE takes as observations before its first proposal
        (search.warm); added once, when the study is created."""
        # Set before Ray's __init__, which creates the study (_setup_study) when given a space.
        self.store = store
        self.max_epochs = max_epochs
        self.warm_trials = list(warm_trials or [])
        self._best: dict[str, tuple[float, float]] = {}  # trial id -> (best score, its epoch)
        super().__init__(storage=store.storage(), study_name=store.name, **kwargs)

    # --- the study ----------------------------------------------------------------------------

    def _setup_study(self, mode) -> None:
        super()._setup_study(mode)
        study = self._ot_study
        if study.user_attrs.get("hpsearch.metric") is None:  # a new study, not one reopened on resume
            study.set_user_attr("hpsearch.metric", self._metric)
            study.set_user_attr("hpsearch.max_epochs", self.max_epochs)
            study.set_user_attr("hpsearch.steps_per_epoch", STEPS_PER_EPOCH)
            for trial in self.warm_trials:
                study.add_trial(trial)
        self.warm_trials = []  # kept in the store now; not pickled with Tune's state

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        trial = self._ot_trials.get(trial_id)
        if trial is not None and config is not None and "tune_trial_id" not in trial.user_attrs:
            trial.set_user_attr("tune_trial_id", trial_id)
        return config

    # --- results ------------------------------------------------------------------------------

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._record(trial_id, result)

    def _record(self, trial_id: str, result: dict) -> None:
        value = result.get(self._metric)
        trial = self._ot_trials.get(trial_id)
        if trial is None or result.get("failed") or not _finite(value):
            return
        epochs = float(result.get("epochs_seen", result.get("epoch", 0)))
        best = self._best.get(trial_id)
        if best is None or (value > best[0] if self._mode == "max" else value < best[0]):
            self._best[trial_id] = (float(value), epochs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a resumed trial reports its last epoch again: Optuna keeps the first
            trial.report(float(value), round(epochs * STEPS_PER_EPOCH))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial is None or trial_id in self._completed_trials:
            return
        result = result or {}
        self._record(trial_id, result)  # Tune hands a trial's last result here, not to on_trial_result
        epochs = float(result.get("epochs_seen", result.get("epoch", 0)) or 0)
        best = self._best.pop(trial_id, None)
        attrs: dict[str, Any] = {"epochs_seen": epochs}
        if best is not None:
            attrs.update(best_score=best[0], best_epochs=best[1])
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        try:
            if error or result.get("failed") or best is None:
                if result.get("error"):
                    trial.set_user_attr("error", str(result["error"]).strip().splitlines()[-1][:500])
                self._ot_study.tell(trial, state=TrialState.FAIL)
            elif epochs + 1e-9 >= self.max_epochs:
                self._ot_study.tell(trial, best[0])
            else:
                self._ot_study.tell(trial, state=TrialState.PRUNED)
        except Exception as e:  # noqa: BLE001 - a trial the store already closed (a resumed study)
            warnings.warn(f"Optuna store: trial {trial.number} not recorded ({e})", stacklevel=1)
        self._completed_trials.add(trial_id)

    # --- Tune's saved state -------------------------------------------------------------------

    def __getstate__(self) -> dict:
        # Tune pickles this searcher twice: with the tuner (tuner.pkl) and as its saved state. The
        # study and its database connection stay in the store (a pickled connection would reopen
        # the folder's old place); the Tune trial -> Optuna trial map travels as numbers.
        state = self.__dict__.copy()
        state.update(_ot_study=None, _storage=None,
                     _ot_trials={tid: t if isinstance(t, int) else t.number for tid, t in self._ot_trials.items()})
        return state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)  # Tune's own saved state, in the study folder: as trusted as tuner.pkl
        numbers: dict[str, int] = state.pop("_ot_trials")
        self.__dict__.update(state)
        self.store = _resumed_store(self.store)
        self._storage = self.store.storage()
        self._ot_study = optuna.load_study(study_name=self.store.name, storage=self._storage, sampler=self._sampler)
        by_number = {t.number: t for t in self._ot_study.get_trials(deepcopy=False)}
        self._ot_trials = {tid: optuna.Trial(self._ot_study, by_number[n]._trial_id)
                           for tid, n in numbers.items() if n in by_number}
        # Trials asked after Tune last saved its state died with the driver and will not come back
        # (Tune saves its trials and this searcher together); left RUNNING they would sit in the
        # dashboard forever and count as pending for TPE's constant liar.
        known = set(numbers.values())
        for t in by_number.values():
            if t.state == TrialState.RUNNING and t.number not in known:
                self._ot_study.tell(t.number, state=TrialState.FAIL)


# The study folder a resumed search runs in. Tune restores this searcher from a staging copy of
# its state, so the folder cannot be found from the pickle's path; a study folder that moved
# since would otherwise send the searcher to its old place.
_resume_folder: Path | None = None


def resuming_in(folder: Path) -> None:
    global _resume_folder
    _resume_folder = Path(folder)


def _resumed_store(store: Store) -> Store:
    if store.in_folder and _resume_folder is not None and (_resume_folder / OPTUNA_DB).exists():
        return Store.in_study_folder(_resume_folder, store.name)
    return store


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
