"""The scheduler replay (search/bench/schedulers.py) on a small synthetic table of curves, where
what each scheduler must do is known: one worker under the stop rule runs the first trial to
the end; pause-and-promote starts eta trials before its first promotion and respects the budget;
the choice is the best trial with a whole epoch; TPE's proposals are snapped to unused curves."""

from __future__ import annotations

import dataclasses
import gzip
import json

import pytest

from search.bench import schedulers
from search.bench.curves import load
from search.bench.schedulers import Curve, Method, Search, curves_from, distance, rank_correlations

EPOCHS = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)


def curve(index: int, quality: float, seconds_per_epoch: float = 10.0, params: dict | None = None) -> Curve:
    # A learning curve rising towards `quality`; every configuration's epoch takes the same time.
    val = tuple(round(quality * (1 - 0.5 / (1 + e)), 4) for e in EPOCHS)
    return Curve(index, params or {"x": index}, EPOCHS, val, tuple(e * seconds_per_epoch for e in EPOCHS),
                 test=quality - 0.01)


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(schedulers, "NEW_TRIAL_S", 1.0)
    monkeypatch.setattr(schedulers, "RESUME_S", 1.0)
    # Index 0 and 1 are the study's start points (a good one and a poor one); the best is 7.
    qualities = [0.85, 0.70, 0.60, 0.80, 0.75, 0.65, 0.78, 0.90, 0.72, 0.68, 0.82, 0.74]
    return [curve(i, q) for i, q in enumerate(qualities)]


def test_one_worker_stop_rule_lets_the_first_trial_run_to_the_end(table):
    s = Search(table, Method(scheduler="stopping", sampler="random"), seed=0, budget_s=110, workers=1)
    out = s.run()
    # The first trial, the textbook start point, met no cutoff at any rung and trained all 10
    # epochs (101 s of the 110); the few that fit after it were judged against it and stopped.
    assert s.trials[0].reached == 10 and out.completed == 1 and out.chosen == 0
    assert out.trials > 1 and all(t.reached <= 0.25 and t.status == "stopped" for t in s.trials[1:-1])


def test_pause_and_promote_starts_eta_trials_before_promoting(table):
    s = Search(table, Method(scheduler="promotion", sampler="random"), seed=0, budget_s=200, workers=1)
    out = s.run()
    first_promoted = min(t.number for t in s.trials if t.promotions)
    assert first_promoted == 0 and out.trials >= 4  # the start point is promoted only once 4 faced the rung
    assert out.promotions >= 2 and out.chosen is not None
    # Nothing ran past the budget: every trial's reported fidelity was reached within it.
    assert out.trial_epochs * 10.0 <= 200


def test_the_choice_is_the_best_trial_with_a_whole_epoch(table):
    s = Search(table, Method(scheduler="promotion", sampler="random"), seed=3, budget_s=400, workers=2)
    out = s.run()
    whole = [t for t in s.trials if t.reached >= 1]
    assert out.chosen == max(whole, key=lambda t: max(v for f, v in t.reports if f >= 1)).curve.index
    assert out.test == table[out.chosen].test


def test_tpe_proposals_are_snapped_to_unused_recorded_configurations():
    from search.bench.curves import configurations
    from spaces.fashion_space import GRID_WINNER, TEXTBOOK_CNN

    configs = configurations(10, seed=0)
    assert configs[0] == TEXTBOOK_CNN and configs[1] == GRID_WINNER
    curves = [curve(i, 0.7 + 0.01 * i, params=p) for i, p in enumerate(configs)]
    s = Search(curves, Method(scheduler="promotion", sampler="tpe", n_startup=2), seed=0, budget_s=500, workers=1)
    s.run()
    used = [t.curve.index for t in s.trials]
    assert used[:2] == [0, 1] and len(set(used)) == len(used) == len(curves)  # each once, start points first
    assert distance(configs[3], configs[3]) == 0 < distance(configs[3], configs[4])


def test_a_recorded_table_loads_and_scales(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    rows = [{"meta": {"subset": 15000, "val_fraction": 0.2}},
            {"index": 0, "params": {"x": 0}, "test_accuracy_at_end": 0.9,
             "points": [{"epochs": e, "val_accuracy": 0.5 + e / 40, "cpu_s": 2.0 * e} for e in EPOCHS]}]
    with gzip.open(path, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    table = load(path)
    assert table["meta"]["subset"] == 15000 and len(table["curves"]) == 1
    (c,) = curves_from(table, scale=3.0)
    assert c.at(1.0) == (0.525, 6.0) and c.seconds_between(1.0, 2.0) == 6.0
    more = [dataclasses.replace(c, index=i, val=tuple(v + i / 100 for v in c.val), test=0.8 + i / 100)
            for i in range(5)]
    assert rank_correlations(more)["1"] == 1.0
