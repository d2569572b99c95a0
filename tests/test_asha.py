"""ASHA for Tune (search/tune/asha.py), both kinds: their rungs (and who is paused, promoted, stopped)
survive a resume, since Ray's restore brings back a scheduler as it was pickled when the search
began; pause-and-promote tells Tune which trial to run next, and PacedSearch proposes a new trial
only when a worker would otherwise idle. Deterministic: Tune's controller is a stand-in holding
trials and their statuses, as the schedulers see it (get_trials, stop_trial, search_alg)."""

from __future__ import annotations

import dataclasses
import pickle
from types import SimpleNamespace

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from search.tune.asha import PacedSearch, PersistentASHA, PromotingASHA, promotions, stop_reasons
from search.tune.tuner import make_plan, make_scheduler, scheduler_state_file
from spaces.registry import get_study


def study(scheduler: str, **settings):
    base = get_study("fashion_space")
    return dataclasses.replace(base, settings=dataclasses.replace(base.settings, scheduler=scheduler, **settings))


def scheduler(tmp_path, kind: str = "stopping", **settings):
    s_ = study(kind, **settings)
    plan = make_plan(s_, cluster_cpus=2, cluster_gpus=0, gpus=0, samples=None, max_epochs=None,
                     time_budget_min=None, seed=0)
    s = make_scheduler(s_, plan, tmp_path)
    s.set_search_properties("val_accuracy", "max")
    return s


def result(seen: float, score: float) -> dict:
    return {"epochs_seen": seen, "epoch": int(seen), "val_accuracy": score}


class Controller:
    """What a scheduler sees of Tune's controller: the trials with their statuses, stop_trial, and
    whether the searcher will propose more."""

    def __init__(self, trials, finished: bool = False):
        self.trials = trials
        self.search_alg = SimpleNamespace(is_finished=lambda: finished)
        self.stopped = []

    def get_trials(self):
        return self.trials

    def stop_trial(self, trial):
        trial.status = Trial.TERMINATED
        self.stopped.append(trial.trial_id)


class FakeTrial(SimpleNamespace):
    def set_status(self, status: str) -> None:
        self.status = status


def trial(name: str, status: str = Trial.RUNNING):
    return FakeTrial(trial_id=name, status=status)


def test_a_resumed_search_stops_the_trials_an_uninterrupted_one_would(tmp_path):
    original = scheduler(tmp_path)
    assert isinstance(original, PersistentASHA)
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
    # a, the first at the rung, meets no cutoff; each later one is below the 75th percentile before it
    assert stop_reasons(tmp_path / "tune") == {"b": "asha", "c": "asha", "d": "asha", "late": "asha"}


def test_a_resumed_trial_keeps_its_bracket(tmp_path):
    s = scheduler(tmp_path, brackets=2)
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


def test_pause_and_promote_with_one_worker(tmp_path):
    s = scheduler(tmp_path, "promotion")  # fashion_space: rungs 0.25, 1, 4; eta 4
    assert isinstance(s, PromotingASHA)
    trials = [trial(f"t{i}", Trial.PENDING) for i in range(5)]
    tc = Controller(trials)
    scores = [0.70, 0.60, 0.65, 0.62, 0.50]
    for t, score in zip(trials[:4], scores):
        s.on_trial_add(tc, t)
        assert s.choose_trial_to_run(tc) is t  # nothing promotable: the new trial runs
        t.status = Trial.RUNNING
        decision = s.on_trial_result(tc, t, result(0.25, score))
        assert decision == TrialScheduler.PAUSE  # the first, textbook or not, faces the rung too
        t.status = Trial.PAUSED
    # 4 recorded at the first rung: the best of them (t0) is promoted before the new t4 starts.
    assert s.choose_trial_to_run(tc) is trials[0]
    trials[0].status = Trial.PENDING  # Tune stages it; asked again, the scheduler gives it again
    assert s.choose_trial_to_run(tc) is trials[0]
    trials[0].status = Trial.RUNNING
    assert s.on_trial_result(tc, trials[0], result(0.25, 0.70)) == TrialScheduler.CONTINUE  # re-reported
    assert s.on_trial_result(tc, trials[0], result(1.0, 0.80)) == TrialScheduler.PAUSE  # alone at rung 1
    trials[0].status = Trial.PAUSED
    s.on_trial_add(tc, trials[4])
    assert s.choose_trial_to_run(tc) is trials[4]
    assert promotions(tmp_path / "tune") == {"t0": 1}
    # A failed result is no rung score.
    assert s.on_trial_result(tc, trials[4], {"epochs_seen": 0.25, "failed": 1.0, "val_accuracy": 0.0}) \
        == TrialScheduler.CONTINUE


def test_paused_trials_and_promotions_survive_a_resume(tmp_path):
    s = scheduler(tmp_path, "promotion")
    at_start = pickle.dumps(s)
    trials = [trial(f"t{i}") for i in range(6)]
    tc = Controller(trials)
    for t, score in zip(trials, [0.5, 0.9, 0.6, 0.7, 0.4, 0.3]):
        s.on_trial_add(tc, t)
        if s.on_trial_result(tc, t, result(0.25, score)) == TrialScheduler.PAUSE:
            t.status = Trial.PAUSED
    restored = pickle.loads(at_start)  # the driver died; Tune unpickles tuner.pkl's scheduler
    assert restored.rule.to_dict() == s.rule.to_dict()
    # t1 (.9) came second, with fewer than eta recorded; at 4 recorded it is the top quarter and
    # waits to be promoted, on the resumed driver as on the first.
    assert restored.rule.paused == s.rule.paused and restored.rule.next_promotion() == s.rule.next_promotion() == "t1"
    for sch in (s, restored):
        tc2 = Controller([*[trial(t.trial_id, t.status) for t in trials], trial("t6"), trial("t7")])
        assert sch.choose_trial_to_run(tc2).trial_id == "t1"
        for t in tc2.trials[-2:]:
            sch.on_trial_add(tc2, t)
            assert sch.on_trial_result(tc2, t, result(0.25, 0.1)) == TrialScheduler.PAUSE
        assert sch.rule.next_promotion() == "t3"  # 8 recorded: the top 2 are t1 (gone on) and t3 (.7)
    assert promotions(tmp_path / "tune") == {"t1": 1}


def test_tune_resumes_paused_trials_as_pending_and_they_stay_paused(tmp_path):
    s = scheduler(tmp_path, "promotion")
    at_start = pickle.dumps(s)
    tc = Controller([trial(f"t{i}") for i in range(3)])
    for t, score in zip(tc.trials, [0.5, 0.9, 0.6]):
        s.on_trial_add(tc, t)
        assert s.on_trial_result(tc, t, result(0.25, score)) == TrialScheduler.PAUSE
    restored = pickle.loads(at_start)
    # Tune's restore: every unfinished trial comes back PENDING, a new one too.
    again = Controller([trial(f"t{i}", Trial.PENDING) for i in range(3)] + [trial("new", Trial.PENDING)])
    for t in again.trials:
        restored.on_trial_add(again, t)
    assert [t.status for t in again.trials] == [Trial.PAUSED] * 3 + [Trial.PENDING]
    assert restored.choose_trial_to_run(again).trial_id == "new"  # nothing promotable with 3 < eta


def test_the_end_of_a_search_promotes_the_best_then_leaves_the_rest_paused(tmp_path):
    s = scheduler(tmp_path, "promotion")
    trials = [trial(f"t{i}") for i in range(3)]
    tc = Controller(trials, finished=True)  # every sample proposed
    for t, score in zip(trials, [0.5, 0.9, 0.6]):
        s.on_trial_add(tc, t)
        s.on_trial_result(tc, t, result(0.25, score))
        t.status = Trial.PAUSED
    # Fewer than eta at the rung, but no new trial will come: the best still goes on...
    assert s.choose_trial_to_run(tc) is trials[1]
    trials[1].status = Trial.RUNNING
    assert s.choose_trial_to_run(tc) is None and not tc.stopped  # ...and while it runs nothing else moves
    s.on_trial_complete(tc, trials[1], result(10, 0.93))
    trials[1].status = Trial.TERMINATED
    # Nothing runs and nothing is promotable: the rest end, left paused at their rung.
    assert s.choose_trial_to_run(tc) is None
    assert sorted(tc.stopped) == ["t0", "t2"]
    assert stop_reasons(tmp_path / "tune") == {"t0": "paused", "t2": "paused"}


class Proposals(Searcher):
    def __init__(self):
        super().__init__(metric="val_accuracy", mode="max")
        self.asked = []

    def suggest(self, trial_id):
        self.asked.append(trial_id)
        return {"x": len(self.asked)}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def test_paced_search_proposes_only_for_an_idle_worker(tmp_path):
    state = scheduler_state_file(tmp_path)
    s = scheduler(tmp_path, "promotion")
    assert s.state_file == state
    inner = Proposals()
    paced = PacedSearch(inner, max_concurrent=1, state_file=state)
    tc = Controller([])
    for i, score in enumerate([0.5, 0.4, 0.3]):
        assert paced.suggest(f"t{i}") == {"x": i + 1}
        assert paced.suggest("extra") is None  # t{i} runs on the one worker
        tc.trials.append(trial(f"t{i}"))
        s.on_trial_add(tc, tc.trials[-1])
        # It pauses at the first rung; Ray's ConcurrencyLimiter would count it as running and
        # never propose again.
        assert s.on_trial_result(tc, tc.trials[-1], result(0.25, score)) == TrialScheduler.PAUSE
    assert paced.suggest("t3") == {"x": 4}
    tc.trials.append(trial("t3"))
    s.on_trial_add(tc, tc.trials[-1])
    assert s.on_trial_result(tc, tc.trials[-1], result(0.25, 0.2)) == TrialScheduler.PAUSE
    # 4 recorded: t0 waits to be promoted and takes the free worker; nothing new is proposed.
    assert s.rule.next_promotion() == "t0"
    assert paced.suggest("t4") is None and inner.asked == ["t0", "t1", "t2", "t3"]
