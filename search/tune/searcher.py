"""The study's Optuna searcher: Ray's OptunaSearch with its Optuna study kept in the study's store
(search.results.optuna_store), so that what TPE saw outlives the driver: `--resume` continues it, the report
reads it, optuna-dashboard shows it live, and a later study can start from it (search.tune.warm).

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

import dataclasses
import math
import pickle
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from search.results.optuna_store import STEPS_PER_EPOCH, Store
from search.results.resuming import (
    START_OVER,
    RestoreFailed,
    own_store,
    resumed_folder,
    resuming_in,  # noqa: F401 - search.tune.tuner imports it from here
)
from search.tune.mirror import MirroredStorage
from search.util.credentials import redact


class StoredSearch(OptunaSearch):
    """OptunaSearch whose study lives in `store`. Ray's class keeps the study in memory and
    pickles it with Tune's state; this one pickles only its own bookkeeping and reconnects to the
    store on resume, where the trials TPE learnt from are."""

    _start_points: list[dict] = []  # never appended to; the default of a state pickled before it existed

    def __init__(self, *, store: Store, max_epochs: int, warm_trials: list[optuna.trial.FrozenTrial] | None = None,
                 **kwargs: Any):
        """`warm_trials`: earlier trials TPE takes as observations before its first proposal
        (search.tune.warm); added once, when the study is created."""
        # Set before Ray's __init__, which creates the study (_setup_study) when given a space.
        self.store = store
        self.max_epochs = max_epochs
        self.warm_trials = list(warm_trials or [])
        self._best: dict[str, tuple[float, float]] = {}  # trial id -> (best score, its epoch)
        self._seen: dict[str, float] = {}  # trial id -> the most epochs it reported
        # Start points go into the store one at a time, as each is proposed: Ray's class enqueues
        # them all at once, and a study that stops (--samples) before reaching them all would leave
        # the rest WAITING in the store for good (in the dashboard, in a later warm start's source).
        self._start_points: list[dict] = list(kwargs.pop("points_to_evaluate", None) or [])
        # TPE proposes from an in-memory copy of the study; every write still reaches the store at once.
        super().__init__(storage=MirroredStorage(store.storage(), store.name), study_name=store.name, **kwargs)

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
        if study.metric_names is None:  # optuna-dashboard names the objective as the rest of hpsearch does
            with warnings.catch_warnings():  # experimental in Optuna; the name is all that is asked of it
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([self._metric])

    def suggest(self, trial_id: str):
        if trial_id not in self._ot_trials and self._start_points and self._ot_study is not None:
            self._ot_study.enqueue_trial(self._start_points.pop(0))  # the next ask() takes it
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
        self._seen[trial_id] = max(epochs, self._seen.get(trial_id, 0.0))
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
        # Tune ends a trial paused at a rung (the scheduler's end game) without a result: it
        # reached what it last reported, and stays PRUNED at that fidelity.
        paused = result is None and trial_id in self._seen
        result = result or {}
        self._record(trial_id, result)  # Tune hands a trial's last result here, not to on_trial_result
        epochs = float(result.get("epochs_seen", result.get("epoch", 0)) or 0)
        epochs = max(epochs, self._seen.pop(trial_id, 0.0))
        best = self._best.pop(trial_id, None)
        attrs: dict[str, Any] = {"epochs_seen": epochs}
        if paused:
            attrs["paused"] = True
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
        try:
            self._restore(checkpoint_path)
        except RestoreFailed:
            raise
        except Exception as e:  # noqa: BLE001 - whatever it is, Tune would swallow it and hang (search.results.resuming)
            why = str(e).splitlines()[0] if str(e) else ""
            raise RestoreFailed(f"cannot restore the search in {resumed_folder()} ({type(e).__name__}"
                                f"{': ' + why[:200] if why else ''}); its saved state is damaged: {START_OVER}"
                                ) from None

    def _restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)  # Tune's own saved state, in the study folder: as trusted as tuner.pkl
        numbers: dict[str, int] = state.pop("_ot_trials")
        self.__dict__.update(state)
        self.__dict__.setdefault("_seen", {})  # a state saved before it existed
        # The study's own store, from its own folder: never the one pickled with the state, which
        # may be another folder's (a copy's original) and would take this study's trials.
        self.store = own_store(resumed_folder(), self.store)
        if self.store.in_folder and not self.store.file.is_file():  # never a new, empty store
            raise RestoreFailed(f"cannot resume {resumed_folder().name}: its Optuna store {self.store.file} is "
                                f"missing; {START_OVER}")
        storage = self.store.storage()
        name = self.store.study_name(storage)  # a folder renamed since: its file's one study
        if name is None:
            raise RestoreFailed(f"cannot resume {resumed_folder().name}: its Optuna store {redact(self.store.url)} "
                                f"holds no study {self.store.name!r}; {START_OVER}")
        self.store = dataclasses.replace(self.store, name=name)
        self._storage = MirroredStorage(storage, name)
        self._ot_study = optuna.load_study(study_name=name, storage=self._storage, sampler=self._sampler)
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


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def close_paused(store: Store, trial_ids: set[str]) -> int:
    """Trials left paused at a rung when the search ended (pause-and-promote) become PRUNED in the
    store, with what they reached (their intermediate values are there already), as a trial the
    stopping scheduler ended at that rung would be: the store then holds no trial forever
    RUNNING, and a later warm start or the report reads them at their fidelity. Returns how many."""
    if not trial_ids:
        return 0
    study = store.load()
    closed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("tune_trial_id") not in trial_ids or not trial.intermediate_values:
            continue
        values = trial.intermediate_values
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
        best_step = max(values, key=lambda step: sign * values[step])
        for key, value in (("epochs_seen", max(values) / STEPS_PER_EPOCH), ("best_score", values[best_step]),
                           ("best_epochs", best_step / STEPS_PER_EPOCH), ("paused", True)):
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
        study.tell(trial.number, state=TrialState.PRUNED)
        closed += 1
    return closed
