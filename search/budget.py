"""The study's time budget covers the whole study, the final phase included: the search stops
starting and running trials once the time left is what the final model needs.

What the final phase needs is estimated from the best trial so far: its seconds per epoch, times
the epochs at which it peaked, times the share of images the final retrain adds (all training
images instead of the search's training split); a final that tests the best checkpoint needs only
the test pass. A stopped trial loses nothing already done: its best epoch's checkpoint and its
scores stay, and the final phase uses them.

The other stopper here, `FailureBudget`, ends the search when too many trials have failed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ray import tune

if TYPE_CHECKING:
    from search.trial_logger import TrialLogger

# Testing, saving the model and writing the report after the final training, in seconds.
FINAL_FIXED_S = 15.0
SAFETY = 1.15


class StudyBudget(tune.Stopper):
    def __init__(self, budget_s: float, metric: str, mode: str, final_scale: float):
        """`final_scale`: seconds of final training per second of the best trial's training up to
        its best epoch (images of the final retrain / images of a trial; 0 with no retrain)."""
        self.budget_s, self.metric, self.sign, self.final_scale = (
            budget_s,
            metric,
            1.0 if mode == "max" else -1.0,
            final_scale,
        )
        self.started = time.monotonic()
        self.trials: dict[str, dict] = {}

    def __setstate__(self, state: dict) -> None:
        # A resumed search (a new driver) gets its budget afresh: the clock it ran on is gone.
        self.__dict__.update(state)
        self.started = time.monotonic()

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get("partial") or result.get("failed") or "epoch_seconds" not in result:
            return False
        t = self.trials.setdefault(trial_id, {"seconds": [], "best": None, "best_epoch": 0})
        t["seconds"].append(float(result["epoch_seconds"]))
        score = result.get(self.metric)
        if isinstance(score, (int, float)) and (t["best"] is None or self.sign * score >= self.sign * t["best"]):
            t["best"], t["best_epoch"] = float(score), int(result.get("epoch", 0))
        return False

    def reserve_s(self) -> float:
        """Seconds the final phase would take for the best trial so far."""
        scored = [t for t in self.trials.values() if t["best"] is not None]
        if not scored:
            return FINAL_FIXED_S
        best = max(scored, key=lambda t: self.sign * t["best"])
        # The slowest epoch, with a margin: epoch times here drift by a quarter within minutes.
        per_epoch = max(best["seconds"]) * SAFETY
        return FINAL_FIXED_S + self.final_scale * per_epoch * best["best_epoch"]

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def stop_all(self) -> bool:
        return self.elapsed_s() + self.reserve_s() >= self.budget_s


class FailureBudget(tune.Stopper):
    """Ends the search when the trial logger says too many trials failed."""

    def __init__(self, logger: TrialLogger):
        self.logger = logger

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.logger.over_budget
