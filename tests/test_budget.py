"""The study's time budget (search/tune/budget.py): where the search stops for each kind of final
model, medians not the slowest epoch, a clock from the command's start, a resume's clock afresh;
and the deadline a stretched final trains to (trainables/train.py: Deadline)."""

from __future__ import annotations

import json
import pickle
import time

import pytest

from search.tune.budget import BudgetPlan, StudyBudget, budget_stopped
from search.util.clock import command_started, mark_command_start
from trainables.train import Deadline


def epoch(e: int, score: float, seconds: float = 20.0) -> dict:
    return {"epoch": e, "epochs_seen": float(e), "val_accuracy": score, "epoch_seconds": seconds}


def budget(final: str, budget_s: float = 600.0, scale: float = 60 / 54, record=None) -> StudyBudget:
    mark_command_start(time.time())
    return StudyBudget(BudgetPlan(budget_s, final=final, scale=scale), "val_accuracy", "max", record)


def test_retrain_reserves_the_best_trials_epochs_at_their_median_pace():
    b = budget("retrain")
    assert b.reserve_s() == b.plan.fixed_s  # nothing scored yet
    for e, (score, seconds) in enumerate([(0.85, 20.0), (0.90, 48.0), (0.91, 21.0), (0.905, 22.0)], 1):
        b("a", epoch(e, score, seconds))
    b("b", epoch(1, 0.80, seconds=5.0))
    b("b", {"epoch": 1, "epochs_seen": 1.25, "val_accuracy": 0.99, "partial": 1.0, "epoch_seconds": 1.0})
    # trial a is best (b's partial report is not a finished epoch), peaking at epoch 3; its one slow
    # epoch (48 s, another process on the cores) does not decide the pace: the median (21.5 s) does
    assert b.reserve_s() == pytest.approx(b.plan.fixed_s + 60 / 54 * 21.5 * 3)
    assert not b.stop_all()
    b.started -= 600 - b.reserve_s()  # the clock reaches the point the final needs
    assert b.stop_all()


def test_stretch_stops_the_search_at_its_share_of_the_budget(tmp_path):
    record = tmp_path / "tune" / "budget.json"
    b = budget("stretch", budget_s=720, record=str(record))
    b("a", epoch(1, 0.9, seconds=1000.0))  # however slow the trials, the split is the plan's
    assert b.reserve_s() == pytest.approx(720 * (1 - b.plan.search_share))
    assert not b.stop_all() and budget_stopped(tmp_path / "tune") is None
    b.started -= 720 * b.plan.search_share + 1
    assert b.stop_all()
    saved = budget_stopped(tmp_path / "tune")
    assert saved["final"] == "stretch" and saved["stopped_search_after_s"] >= 720 * b.plan.search_share
    assert json.loads(record.read_text()) == saved


def test_a_checkpoint_final_reserves_only_the_fixed_costs():
    b = budget("checkpoint", budget_s=60)
    b("a", epoch(1, 0.9, seconds=1000.0))
    assert b.reserve_s() == b.plan.fixed_s and not b.stop_all()


def test_the_clock_starts_with_the_command_and_a_resume_gets_it_afresh():
    mark_command_start(time.time() - 50)  # imports, data and Ray took 50 s before the tuner existed
    b = StudyBudget(BudgetPlan(60, final="checkpoint"), "val_accuracy", "max")
    assert b.elapsed_s() == pytest.approx(50, abs=1)
    assert b.stop_all()  # 50 s gone + the fixed costs > 60 s
    mark_command_start(time.time())  # the resuming command
    assert not pickle.loads(pickle.dumps(b)).stop_all()
    assert command_started() == pytest.approx(time.time(), abs=1)


def test_a_deadline_plans_epochs_from_the_pace_then_only_shrinks():
    now = time.time()
    d = Deadline(at=now + 100)
    assert d.epochs(0, [], planned=14) == 14
    # After epoch 1 (model built, caches cold: 20 s) the plan follows it: 100 s left / 20 = 5 more.
    assert d.epochs(1, [20.0], planned=14) == 6
    # Rounded up (85 s: 4.25 epochs make 5 more): the deadline ends the last one part-way (fit).
    assert Deadline(at=now + 85).epochs(1, [20.0], planned=14) == 6
    # After epoch 2 the first is left out of the pace: 10 s an epoch, 100 s left: 10 more; it may grow.
    assert d.epochs(2, [20.0, 10.0], planned=6) == 12
    # Later it only shrinks: a faster pace does not stretch a schedule already half decayed...
    assert d.epochs(5, [20.0, 10.0, 5.0, 5.0, 5.0], planned=12) == 12
    # ...a slower one cuts it.
    assert d.epochs(5, [20.0, 50.0, 50.0, 50.0, 50.0], planned=12) == 7
    # Never below what is done, nor below min_epochs.
    assert Deadline(at=now - 10).epochs(3, [9.0, 9.0, 9.0], planned=12) == 3
    assert Deadline(at=now - 10, min_epochs=1).epochs(1, [9.0], planned=12) == 1


def test_a_plan_names_a_bad_share():
    with pytest.raises(ValueError, match="search_share"):
        BudgetPlan(60, search_share=1.5)


def _final_spec(final: str, seconds_left: float, checkpoint: bool = True, cv: int | None = None):
    """search.study.phases.final_spec for a best trial at epoch 3 (20-s epochs) with `seconds_left`
    of final training left under a 10-minute budget."""
    from pathlib import Path
    from types import SimpleNamespace

    from search.results.records import TrialRecord
    from search.study.phases import BestTrial, StudyContext, final_spec
    from spaces.fashion_space import TEXTBOOK_CNN
    from trainables.model import NetConfig

    plan = BudgetPlan(600.0, final=final, scale=1.0)
    mark_command_start(time.time() - plan.train_until(0.0) + seconds_left)
    record = TrialRecord("t1", "trial_001", dict(TEXTBOOK_CNN), [epoch(e, 0.9, 20.0) for e in (1, 2, 3)], "paused")
    best = BestTrial(record, NetConfig.from_flat(TEXTBOOK_CNN), 3, {"val_accuracy": 0.9},
                     Path("/nowhere/checkpoint_000002") if checkpoint else None)
    ctx = StudyContext(study=None, request=SimpleNamespace(seed=0, precision="auto", final=final, cv=cv),
                       prepared=None, plan=SimpleNamespace(gpus_per_trial=0, max_epochs=10), tracker=None,
                       parent_run_id="", threads=2, budget=plan)
    return final_spec(ctx, best)


def test_a_continued_final_trains_the_best_checkpoint_on_for_the_time_left():
    spec = _final_spec("continue", seconds_left=200.0)  # ten more 20-s epochs
    assert (spec.mode, spec.start_epoch, spec.epochs, spec.schedule_epochs) == ("continue", 3, 13, 13)
    assert spec.deadline is not None and not spec.note
    assert spec.describe("fp32")["continued_from_epoch"] == 3
    # Not even one more epoch fits: the checkpoint itself is tested, and the reason given.
    short = _final_spec("continue", seconds_left=5.0)
    assert short.mode == "checkpoint" and "not train another epoch" in short.note
    # Nothing to continue (cross-validation's folds, or no whole epoch): trained afresh, said why.
    for kwargs, why in (({"cv": 3}, "folds"), ({"checkpoint": False}, "first epoch")):
        afresh = _final_spec("continue", seconds_left=200.0, **kwargs)
        assert afresh.mode == "stretch" and afresh.epochs == 10 and why in afresh.note


def test_a_stretched_final_under_cross_validation_never_tests_a_fold_checkpoint():
    spec = _final_spec("stretch", seconds_left=35.0, cv=3)  # too short for the trial's 3 epochs
    assert spec.mode == "stretch" and spec.epochs == 2
    assert _final_spec("stretch", seconds_left=35.0).mode == "checkpoint"  # without cv, its own weights
