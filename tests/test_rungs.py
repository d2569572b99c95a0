"""Successive halving's rules (search/tune/rungs.py), deterministically: who pauses, who is promoted,
one trial at a time and several, what a saved state restores; and the stop rule deciding as
Ray's ASHAScheduler does."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from search.tune.rungs import CONTINUE, PAUSE, STOP, PromotionRule, StopRule, milestones


def test_milestones_are_rays():
    assert milestones(0.25, 4, 10) == (0.25, 1.0, 4.0)
    assert milestones(0.25, 4, 10, bracket=1) == (1.0, 4.0)
    assert milestones(1, 3, 9) == (1, 3)
    assert milestones(2, 3, 20) == (2, 6, 18)


def one_at_a_time(rule: PromotionRule, scores: dict[str, list[float]], new: list[str]) -> list[tuple]:
    """Drive `rule` as one worker would: run a trial until it pauses or ends, then resume the
    promotable trial, else start the next new one. Each trial's scores are its score at each rung
    in turn. Returns the (trial, event) log."""
    log, progress = [], {t: 0 for t in scores}
    queue = list(new)
    current = None
    while True:
        if current is None:
            promoted = rule.next_promotion()
            if promoted is not None:
                rule.resumed(promoted)
                current = promoted
                log.append((promoted, "promoted"))
            elif queue:
                current = queue.pop(0)
                rule.add(current)
                log.append((current, "started"))
            else:
                return log
        rungs = [r.milestone for r in rule.rungs_of(current)]
        k = progress[current]
        if k >= len(rungs):  # past the last rung: trains to max_t and ends
            rule.ended(current)
            log.append((current, "completed"))
            current = None
            continue
        progress[current] = k + 1
        decision = rule.on_result(current, rungs[k], scores[current][k])
        log.append((current, f"{decision}@{rungs[k]:g}"))
        if decision == PAUSE:
            current = None


def test_one_worker_first_trial_cannot_pass_unchallenged():
    rule = PromotionRule(grace=0.25, eta=4, max_t=10)
    # The start point is first; it is good but the 4th trial is better.
    scores = {"start": [0.80, 0.88, 0.91], "b": [0.60, 0.7, 0.8], "c": [0.70, 0.8, 0.85], "d": [0.83, 0.89, 0.92],
              "e": [0.5, 0.6, 0.7], "f": [0.55, 0.6, 0.7], "g": [0.65, 0.6, 0.7], "h": [0.4, 0.6, 0.7]}
    log = one_at_a_time(rule, scores, list(scores))
    # The first trial pauses at the first rung instead of running to the end.
    assert log[:2] == [("start", "started"), ("start", f"{PAUSE}@0.25")]
    # With fewer than eta=4 recorded at the rung nobody is promoted: b and c start and pause.
    assert log[2:6] == [("b", "started"), ("b", f"{PAUSE}@0.25"), ("c", "started"), ("c", f"{PAUSE}@0.25")]
    # d is the 4th at the rung and the best of it: it goes on at once, without a pause.
    assert log[6:8] == [("d", "started"), ("d", f"{CONTINUE}@0.25")]
    assert ("d", f"{PAUSE}@1") in log  # alone at rung 1
    # At 8 recorded the top 2 go on: d already did, so the start point is promoted next.
    i = log.index(("h", f"{PAUSE}@0.25"))
    assert log[i + 1] == ("start", "promoted")
    assert rule.promotions("start") == 1 and rule.promotions("d") == 1 and rule.promotions("b") == 0
    assert set(rule.paused) == {"start", "b", "c", "d", "e", "f", "g", "h"}
    assert rule.paused["start"] == 1.0 and rule.paused["b"] == 0.25


def test_promotion_prefers_the_highest_rung_then_the_best():
    rule = PromotionRule(grace=1, eta=2, max_t=8)  # rungs 1, 2, 4
    for t in "abcdef":
        rule.add(t)
    assert rule.on_result("a", 1, 0.5) == PAUSE  # alone at rung 1
    assert rule.on_result("b", 1, 0.6) == CONTINUE  # the top half of 2: promoted on the spot
    assert rule.on_result("b", 2, 0.7) == PAUSE  # alone at rung 2
    assert rule.on_result("c", 1, 0.9) == CONTINUE  # the top 1 of 3
    assert rule.on_result("d", 1, 0.1) == PAUSE  # top 2 of 4: c and b, both gone on
    assert rule.on_result("c", 2, 0.65) == PAUSE  # rung 2: b .7 beats it, and b waits there
    assert rule.next_promotion() == "b"
    assert rule.on_result("e", 1, 0.55) == PAUSE  # b (at rung 2) goes first
    assert rule.on_result("f", 1, 0.52) == PAUSE
    # rung 1's top 3 of 6 now include e, paused there; b at the higher rung still goes first.
    assert rule.promotable(rule.rungs_of("e")[0]) == ["e"]
    assert rule.next_promotion() == "b"
    rule.resumed("b")
    assert rule.next_promotion() == "e"
    assert rule.promotions("b") == 2 and rule.paused == {"a": 1, "c": 2, "d": 1, "e": 1, "f": 1}


def test_a_trial_at_the_top_of_a_full_rung_continues_but_one_below_it_pauses():
    rule = PromotionRule(grace=1, eta=3, max_t=9)  # rungs 1, 3
    for t in "abc":
        rule.add(t)
    assert rule.on_result("a", 1, 0.1) == PAUSE
    assert rule.on_result("b", 1, 0.2) == PAUSE
    assert rule.on_result("c", 1, 0.05) == PAUSE  # 3 recorded; the top third is b, paused
    assert rule.next_promotion() == "b"
    rule.resumed("b")
    assert rule.next_promotion() is None  # one of three goes on, no more
    # b re-reports rung 1 on its way up (resumed from a checkpoint before it): nothing changes.
    assert rule.on_result("b", 1, 0.2) == CONTINUE
    assert rule.on_result("b", 3, 0.4) == PAUSE  # alone at rung 3


def test_several_workers_a_promotion_waits_for_the_trial_to_be_paused():
    rule = PromotionRule(grace=1, eta=2, max_t=4)  # rungs 1, 2
    for t in "abcd":
        rule.add(t)
    assert rule.on_result("a", 1, 0.4) == PAUSE
    assert rule.on_result("b", 1, 0.6) == CONTINUE  # 2 recorded, b the top half
    assert rule.on_result("c", 1, 0.5) == PAUSE  # 3 recorded: top 1 = b, already promoted
    assert rule.on_result("d", 1, 0.3) == PAUSE  # 4 recorded: top 2 = b, c
    assert rule.next_promotion() == "c"


def test_final_promotions_train_the_best_to_the_end():
    rule = PromotionRule(grace=1, eta=4, max_t=16)  # rungs 1, 4
    for t, s in (("a", 0.5), ("b", 0.7)):
        rule.add(t)
        rule.on_result(t, 1, s)
    assert rule.next_promotion() is None  # 2 < eta recorded
    assert rule.next_promotion(final=True) == "b"  # no new trial will come: the best goes on
    rule.resumed("b")
    assert rule.next_promotion(final=True) is None  # the top 1/eta, at least one: just b


def test_brackets_in_turn_and_a_saved_state_restores_every_decision():
    rule = PromotionRule(grace=0.25, eta=4, max_t=10, brackets=2)
    assert [rule.add(f"t{i}") for i in range(5)] == [0, 1, 0, 1, 0]
    assert [r.milestone for r in rule.rungs_of("t1")] == [1.0, 4.0]
    rng = random.Random(0)
    for i in range(5):
        rule.on_result(f"t{i}", rule.rungs_of(f"t{i}")[0].milestone, rng.random())
    saved = json.loads(json.dumps(rule.to_dict()))  # what the scheduler writes
    again = PromotionRule(grace=0.25, eta=4, max_t=10, brackets=2)
    again.load(saved)
    assert again.to_dict() == rule.to_dict()
    assert again.next_promotion() == rule.next_promotion()
    assert again.add("t5") == rule.add("t5") == 1
    for t in ("t9", "t10"):
        assert again.on_result(t, 0.25, 0.99) == rule.on_result(t, 0.25, 0.99)


@pytest.mark.parametrize("seed", range(5))
def test_stop_rule_decides_as_rays_asha(seed):
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    rng = random.Random(seed)
    ray_asha = ASHAScheduler(time_attr="epochs_seen", metric="val_accuracy", mode="max", max_t=10,
                             grace_period=0.25, reduction_factor=4)
    ours = StopRule(grace=0.25, eta=4, max_t=10)
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(30)]
    alive = {t.trial_id: 0.0 for t in trials}
    for t in trials:
        ray_asha.on_trial_add(None, t)
        ours.add(t.trial_id)
    for _ in range(200):
        t = rng.choice([t for t in trials if alive.get(t.trial_id) is not None] or [None])
        if t is None:
            break
        seen = {0.0: 0.25, 0.25: 1.0}.get(alive[t.trial_id], alive[t.trial_id] + 1)
        score = round(rng.random(), 3)
        theirs = ray_asha.on_trial_result(None, t, {"epochs_seen": seen, "val_accuracy": score})
        mine = ours.on_result(t.trial_id, seen, score)
        assert (theirs == TrialScheduler.STOP) == (mine == STOP)
        alive[t.trial_id] = None if mine == STOP or seen >= 9 else seen
