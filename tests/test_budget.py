"""The study's time budget leaves the final phase the time it needs (search/budget.py)."""

from __future__ import annotations

import pickle

import pytest

from search.budget import FINAL_FIXED_S, SAFETY, StudyBudget


def epoch(e: int, score: float, seconds: float = 20.0) -> dict:
    return {"epoch": e, "epochs_seen": float(e), "val_accuracy": score, "epoch_seconds": seconds}


def test_the_reserve_is_the_best_trials_retrain_time():
    budget = StudyBudget(600, "val_accuracy", "max", final_scale=60 / 54)
    assert budget.reserve_s() == FINAL_FIXED_S  # nothing scored yet
    for e, score in enumerate([0.85, 0.90, 0.91, 0.905], 1):
        budget("a", epoch(e, score))
    budget("b", epoch(1, 0.80, seconds=5.0))
    budget("b", {"epoch": 1, "epochs_seen": 1.25, "val_accuracy": 0.99, "partial": 1.0, "epoch_seconds": 1.0})
    # trial a is best (b's partial report is not a finished epoch), peaking at epoch 3 of 20 s each
    assert budget.reserve_s() == pytest.approx(FINAL_FIXED_S + 60 / 54 * 20.0 * SAFETY * 3)
    assert not budget.stop_all()
    budget.started -= 600 - budget.reserve_s()  # the clock reaches the point the final needs
    assert budget.stop_all()


def test_a_checkpoint_final_reserves_only_the_test_pass():
    budget = StudyBudget(60, "val_accuracy", "max", final_scale=0.0)
    budget("a", epoch(1, 0.9, seconds=1000.0))
    assert budget.reserve_s() == FINAL_FIXED_S and not budget.stop_all()


def test_a_resumed_search_gets_its_clock_afresh():
    budget = StudyBudget(60, "val_accuracy", "max", final_scale=1.0)
    budget.started -= 3600
    assert budget.stop_all()
    assert not pickle.loads(pickle.dumps(budget)).stop_all()
