"""search.tune.mirror: the in-memory copy TPE proposes from holds exactly what the store holds, a study
already in the store is copied in whole, and a proposal reads nothing back from the store."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search.tune.mirror import MirroredStorage

NAME = "m"


def rdb(tmp_path) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")


def define(trial: optuna.Trial) -> float:
    x = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    layers = trial.suggest_int("layers", 1, 3)
    act = trial.suggest_categorical("act", ["relu", "gelu"])
    if layers > 1:
        trial.suggest_int("width", 8, 64, step=8)  # conditional, as fashion_space's are
    return -abs(x - 1e-3) + 0.1 * layers + (act == "gelu") * 0.05


def a_study(storage, trials: int = 8) -> optuna.Study:
    """Finished, pruned, failed, running and enqueued trials, with reports and attributes."""
    study = optuna.create_study(storage=storage, study_name=NAME, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3, multivariate=True,
                                                                   group=True, constant_liar=True))
    study.set_user_attr("hpsearch.metric", "val_accuracy")
    study.enqueue_trial({"lr": 1e-3, "layers": 2, "act": "relu", "width": 16})
    for i in range(trials):
        trial = study.ask()
        score = define(trial)
        trial.report(score / 2, 25)
        trial.set_user_attr("tune_trial_id", f"t{i}")
        if i % 4 == 1:
            study.tell(trial, state=TrialState.PRUNED)
        elif i % 4 == 2:
            study.tell(trial, state=TrialState.FAIL)
        elif i % 4 == 3 and i == trials - 1:
            pass  # still running
        else:
            study.tell(trial, score)
    study.enqueue_trial({"lr": 1e-2, "layers": 1, "act": "gelu"})  # waiting
    return study


def comparable(trials) -> list[tuple]:
    return [(t.number, t.state, t.params, t.distributions, t.values, t.intermediate_values, t.user_attrs,
             t.system_attrs) for t in sorted(trials, key=lambda t: t.number)]


def test_the_store_holds_what_the_copy_holds(tmp_path):
    store = rdb(tmp_path)
    mirror = MirroredStorage(store, NAME)
    study = a_study(mirror)
    held = optuna.load_study(study_name=NAME, storage=store)
    assert len(held.trials) == 9  # 8 asked (the first took the start point), 1 waiting
    assert {t.state for t in held.trials} == {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                              TrialState.RUNNING, TrialState.WAITING}
    assert comparable(held.trials) == comparable(study.trials)
    assert held.user_attrs == study.user_attrs == {"hpsearch.metric": "val_accuracy"}


def test_a_study_in_the_store_is_copied_in_whole_and_continued(tmp_path):
    store = rdb(tmp_path)
    a_study(MirroredStorage(store, NAME))
    resumed = optuna.load_study(study_name=NAME, storage=MirroredStorage(rdb(tmp_path), NAME),
                                sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=3))
    assert comparable(resumed.trials) == comparable(optuna.load_study(study_name=NAME, storage=store).trials)
    trial = resumed.ask()  # takes the waiting trial first, as Optuna does
    assert trial.number == 8 and resumed.trials[8].state == TrialState.RUNNING
    define(trial)
    resumed.tell(trial, 0.5)
    assert comparable(optuna.load_study(study_name=NAME, storage=store).trials) == comparable(resumed.trials)


class Spy(optuna.storages.RDBStorage):
    """The store, noting every read of the study's trials it answers (reading back the one trial
    just created, to check its number, is not one: it does not grow with the study)."""

    reads: list[str]

    def get_all_trials(self, *args, **kwargs):
        self.reads.append("get_all_trials")
        return super().get_all_trials(*args, **kwargs)

    def _get_trials(self, *args, **kwargs):  # what Optuna's cache of finished trials calls
        self.reads.append("_get_trials")
        return super()._get_trials(*args, **kwargs)


def reads_while_proposing(store: Spy, storage, trials: int = 4) -> list[str]:
    study = optuna.load_study(study_name=NAME, storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=2, n_startup_trials=3, multivariate=True,
                                                                 group=True, constant_liar=True))
    store.reads = []
    for _ in range(trials):
        define(study.ask())
    return store.reads


def test_a_proposal_reads_nothing_back_from_the_store(tmp_path):
    store = Spy(f"sqlite:///{tmp_path / 'optuna.db'}")
    store.reads = []
    a_study(MirroredStorage(store, NAME), trials=12)
    mirror = MirroredStorage(store, NAME)  # a resumed search: the study read once, here
    assert reads_while_proposing(store, mirror) == []
    assert reads_while_proposing(store, store) != []  # what it saves: the store read back at every proposal


def test_another_writer_of_the_study_is_refused(tmp_path):
    store = rdb(tmp_path)
    study = a_study(MirroredStorage(store, NAME))
    other = optuna.load_study(study_name=NAME, storage=rdb(tmp_path))  # a second process
    other.ask(), other.ask()  # takes the waiting trial, then adds one
    with pytest.raises(RuntimeError, match="written by another process"):
        study.ask()
    with pytest.raises(RuntimeError, match="mirrors study 'm' only"):
        MirroredStorage(store, NAME).create_new_study([optuna.study.StudyDirection.MAXIMIZE], "other")
