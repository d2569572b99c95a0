"""ASHA's rungs survive a resume (search/asha.py): Ray's restore brings back a scheduler as it was
pickled when the search began, so without the saved rungs it would let poor trials through."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from search.tuner import make_plan, make_scheduler
from spaces.registry import get_study


def scheduler(tmp_path):
    plan = make_plan(get_study("fashion_space"), cluster_cpus=2, cluster_gpus=0, gpus=0, samples=None,
                     max_epochs=None, time_budget_min=None, seed=0)
    s = make_scheduler(get_study("fashion_space"), plan, tmp_path)
    s.set_search_properties("val_accuracy", "max")
    return s


def result(seen: float, score: float) -> dict:
    return {"epochs_seen": seen, "epoch": int(seen), "val_accuracy": score}


def test_a_resumed_search_stops_the_trials_an_uninterrupted_one_would(tmp_path):
    original = scheduler(tmp_path)
    as_pickled_at_start = pickle.dumps(original)  # what Tune's tuner.pkl holds
    trials = {name: SimpleNamespace(trial_id=name) for name in ("a", "b", "c", "d", "late")}
    for name, score in (("a", 0.85), ("b", 0.80), ("c", 0.70), ("d", 0.75)):
        original.on_trial_add(None, trials[name])
        original.on_trial_result(None, trials[name], result(0.25, score))

    restored = pickle.loads(as_pickled_at_start)  # a new driver after a crash
    fresh = pickle.loads(pickle.dumps(scheduler(tmp_path / "elsewhere")))  # no saved rungs
    for s in (original, restored, fresh):
        s.on_trial_add(None, trials["late"])
    poor = result(0.25, 0.72)
    assert original.on_trial_result(None, trials["late"], dict(poor)) == TrialScheduler.STOP
    assert restored.on_trial_result(None, trials["late"], dict(poor)) == TrialScheduler.STOP
    assert fresh.on_trial_result(None, trials["late"], dict(poor)) == TrialScheduler.CONTINUE  # the old bug


def test_a_resumed_trial_keeps_its_bracket(tmp_path):
    import dataclasses

    study = get_study("fashion_space")
    two = dataclasses.replace(study, settings=dataclasses.replace(study.settings, brackets=2))
    plan = make_plan(two, cluster_cpus=2, cluster_gpus=0, gpus=0, samples=None, max_epochs=None,
                     time_budget_min=None, seed=0)
    s = make_scheduler(two, plan, tmp_path)
    s.set_search_properties("val_accuracy", "max")
    start = pickle.dumps(s)
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(12)]
    for t in trials:
        s.on_trial_add(None, t)
        s.on_trial_result(None, t, result(0.25, 0.5))
    restored = pickle.loads(start)
    for t in trials:
        restored.on_trial_add(None, t)
        assert s._brackets.index(s._trial_info[t.trial_id]) == restored._brackets.index(
            restored._trial_info[t.trial_id]
        )
