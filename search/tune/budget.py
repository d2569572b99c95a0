"""The study's time budget covers the whole command, from the moment it started (imports, data,
Ray) to the report: the search stops where the plan says, and the final phase gets the rest.

How the time is split depends on the final model (`--final`):
  stretch     the search may use `search_share` of the budget; the winner is then retrained on
              all training images for the time that is left (search.study.phases.finalize plans its
              epochs from the pace measured in the search; its learning-rate schedule is
              stretched to that length, trainables.train.Deadline);
  continue    as stretch, but the winner's own checkpoint trains on (its search epochs count);
  retrain     the search runs until the time left is what retraining the best trial so far for
              its own epochs needs: the median of its epoch seconds (per image, so the larger
              final training set counts) times its best epoch;
  checkpoint  the search runs until only the test and the report are left.
The estimates use medians of measured epochs: an epoch slowed once by another process must not
reserve minutes for nothing (the old estimate took the slowest epoch with a margin and ended a
12-minute study 3 minutes early).

A stopped trial loses nothing already done: its best epoch's checkpoint and its scores stay. The
budget writes when it ended the search (`budget.json` beside Tune's state), so the trials table
can say the budget, not the scheduler, stopped a trial.

The other stopper here, `FailureBudget`, ends the search when too many trials have failed.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ray import tune

from search.util.clock import command_started

if TYPE_CHECKING:
    from search.tracking.trial_logger import TrialLogger

BUDGET_FILE = "budget.json"

# What the final phase costs besides training (Python work, alike on any machine; provisional:
# estimated from smoke runs, not yet measured on a quiet machine, docs/usage.md *Time budgets*): from
# the search's end to the final training's start (Tune stopping its trials, MLflow brought up to
# date, the tables, the final task started), and from the training's end to the command's (the
# test pass, model.pt and the MLflow model, the report, Ray's shutdown).
BEFORE_FINAL_S = 15.0
AFTER_FINAL_S = 20.0
# stretch: the share of the budget the search may use; the rest trains the winner. Provisional:
# the final-phase comparison (issue 19, item 3) has not been run yet (docs/usage.md *Time budgets*).
SEARCH_SHARE = 0.5

@dataclass(frozen=True)
class BudgetPlan:
    budget_s: float
    final: str = "continue"  # search.results.study_fields.FINAL_MODES
    search_share: float = SEARCH_SHARE
    before_final_s: float = BEFORE_FINAL_S
    after_final_s: float = AFTER_FINAL_S
    # Seconds of final training per second of a trial's training on the same network: the final
    # trains on all training images, a trial on the search's training split.
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.search_share < 1:
            raise ValueError(f"search_share must be in (0, 1), got {self.search_share}")

    @property
    def fixed_s(self) -> float:
        return self.before_final_s + self.after_final_s

    def ends_at(self, started: float) -> float:
        """When the command must be done (`time.time()`), for a command that started at `started`."""
        return started + self.budget_s

    def train_until(self, started: float) -> float:
        """When the final training must end, so that what follows it ends on time."""
        return self.ends_at(started) - self.after_final_s


@dataclass
class TrialPace:
    seconds: list[float]  # each whole epoch's seconds
    best: float | None = None
    best_epoch: int = 0

    @property
    def epoch_s(self) -> float:
        return statistics.median(self.seconds)


class StudyBudget(tune.Stopper):
    def __init__(self, plan: BudgetPlan, metric: str, mode: str, record_file: str | None = None):
        self.plan, self.metric, self.sign = plan, metric, 1.0 if mode == "max" else -1.0
        self.record_file = record_file
        self.started = command_started()
        self.trials: dict[str, TrialPace] = {}
        self.fired = False

    def __setstate__(self, state: dict) -> None:
        # A resumed search (a new driver) gets its budget afresh, from the resuming command's start.
        self.__dict__.update(state)
        self.started = command_started()
        self.fired = False

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get("partial") or result.get("failed") or "epoch_seconds" not in result:
            return False
        t = self.trials.setdefault(trial_id, TrialPace([]))
        t.seconds.append(float(result["epoch_seconds"]))
        score = result.get(self.metric)
        if isinstance(score, (int, float)) and (t.best is None or self.sign * score >= self.sign * t.best):
            t.best, t.best_epoch = float(score), int(result.get("epoch", 0))
        return False

    def reserve_s(self) -> float:
        """Seconds the final phase needs once the search stops now."""
        p = self.plan
        if p.final in ("stretch", "continue"):
            return p.budget_s * (1 - p.search_share)
        if p.final == "checkpoint":
            return p.fixed_s
        scored = [t for t in self.trials.values() if t.best is not None]
        if not scored:
            return p.fixed_s
        best = max(scored, key=lambda t: self.sign * t.best)
        return p.fixed_s + p.scale * best.epoch_s * best.best_epoch

    def elapsed_s(self) -> float:
        return time.time() - self.started

    def stop_all(self) -> bool:
        if self.fired:
            return True
        if self.elapsed_s() + self.reserve_s() < self.plan.budget_s:
            return False
        self.fired = True
        if self.record_file:
            Path(self.record_file).parent.mkdir(parents=True, exist_ok=True)
            Path(self.record_file).write_text(json.dumps({
                "stopped_search_after_s": round(self.elapsed_s(), 1), "reserved_s": round(self.reserve_s(), 1),
                "budget_s": self.plan.budget_s, "final": self.plan.final}) + "\n")
        return True


def budget_stopped(tune_dir: Path) -> dict | None:
    """What the budget wrote when it ended the search, or None if it did not."""
    try:
        return json.loads((Path(tune_dir) / BUDGET_FILE).read_text())
    except (OSError, ValueError):
        return None


class FailureBudget(tune.Stopper):
    """Ends the search when the trial logger says too many trials failed."""

    def __init__(self, logger: TrialLogger):
        self.logger = logger

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.logger.over_budget
