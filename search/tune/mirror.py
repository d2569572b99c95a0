"""The Optuna storage the searcher proposes from: an in-memory copy of its one study, every write
passed through to the study's store (search.results.optuna_store) before it is applied to the copy.

Why: TPE reads the whole study several times per proposal (once per parameter group, and with
the constant liar every running trial too). Over the store those reads are SQL queries, and
Optuna's cache keeps only finished trials, so at 64 running trials a proposal cost 375 ms against
20 ms over memory (300 finished trials, measured on an idle core of this machine), and the
driver's one thread spent most of a 64-worker search proposing. The searcher is the study's only
writer while it runs (search.results.optuna_store refuses a second study of its name), so the copy cannot go
stale; what others read (the report, optuna-dashboard, a later warm start) is in the store, as
before, the moment it is written.

Identifiers handed out are the copy's; they are mapped to the store's on every write.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState


class MirroredStorage(BaseStorage):
    """`store` (an Optuna RDB storage) seen through an in-memory copy of the study `name` in it.
    A study the store already holds is copied in whole when the mirror is made (a resumed search)."""

    def __init__(self, store: BaseStorage, name: str):
        self.store = store
        self.name = name
        self.memory = InMemoryStorage()
        self._study: tuple[int, int] | None = None  # (copy's id, store's id)
        self._trials: dict[int, int] = {}  # copy's trial id -> store's
        held = {s.study_name: s for s in store.get_all_studies()}
        if name in held:
            self._copy(held[name])

    def _copy(self, study: FrozenStudy) -> None:
        sid = self.memory.create_new_study(study.directions, study.study_name)
        for key, value in study.user_attrs.items():
            self.memory.set_study_user_attr(sid, key, value)
        for key, value in study.system_attrs.items():
            self.memory.set_study_system_attr(sid, key, value)
        self._study = (sid, study._study_id)
        for trial in sorted(self.store.get_all_trials(study._study_id, deepcopy=False), key=lambda t: t.number):
            self._trials[self.memory.create_new_trial(sid, template_trial=trial)] = trial._trial_id

    # --- the one study --------------------------------------------------------------------------

    def _store_study(self, study_id: int) -> int:
        if self._study is None or study_id != self._study[0]:
            raise KeyError(f"this storage mirrors study {self.name!r} only (asked for study id {study_id})")
        return self._study[1]

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        if study_name != self.name or self._study is not None:
            raise RuntimeError(f"this storage mirrors study {self.name!r} only; cannot create {study_name!r}")
        store_id = self.store.create_new_study(directions, study_name)  # refuses a name the store holds
        self._study = (self.memory.create_new_study(directions, study_name), store_id)
        return self._study[0]

    def delete_study(self, study_id: int) -> None:
        self.store.delete_study(self._store_study(study_id))
        self.memory.delete_study(study_id)
        self._study, self._trials = None, {}

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.store.set_study_user_attr(self._store_study(study_id), key, value)
        self.memory.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.store.set_study_system_attr(self._store_study(study_id), key, value)
        self.memory.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self.memory.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.memory.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self.memory.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.memory.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self.memory.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self.memory.get_all_studies()

    # --- its trials: written to the store, then to the copy -------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        store_id = self.store.create_new_trial(self._store_study(study_id), template_trial)
        trial_id = self.memory.create_new_trial(study_id, template_trial)
        number, stored = self.memory.get_trial_number_from_id(trial_id), self.store.get_trial_number_from_id(store_id)
        if number != stored:  # a trial added to this study by someone else: the copy would mislead TPE
            raise RuntimeError(f"Optuna study {self.name!r} was written by another process (trial {stored} in the "
                               f"store is {number} here); one search per study")
        self._trials[trial_id] = store_id
        return trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self.store.set_trial_param(self._trials[trial_id], param_name, param_value_internal, distribution)
        self.memory.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        store_id = self._trials[trial_id]
        if not self.store.set_trial_state_values(store_id, state, values):
            # A waiting trial another process took first: Optuna takes the next; the copy follows the store.
            taken = self.store.get_trial(store_id)
            self.memory.set_trial_state_values(trial_id, taken.state, taken.values)
            return False
        return self.memory.set_trial_state_values(trial_id, state, values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self.store.set_trial_intermediate_value(self._trials[trial_id], step, intermediate_value)
        self.memory.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.store.set_trial_user_attr(self._trials[trial_id], key, value)
        self.memory.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.store.set_trial_system_attr(self._trials[trial_id], key, value)
        self.memory.set_trial_system_attr(trial_id, key, value)

    # --- reads: the copy ------------------------------------------------------------------------

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self.memory.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self.memory.get_trial_number_from_id(trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self.memory.get_trial_param(trial_id, param_name)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self.memory.get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self.memory.get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        return self.memory.get_n_trials(study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self.memory.get_best_trial(study_id)

    def remove_session(self) -> None:
        self.store.remove_session()
