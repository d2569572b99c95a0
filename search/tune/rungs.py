"""Successive halving's rungs as plain bookkeeping, with no Ray in it: the pause-and-promote rule
the service schedules by (search.tune.asha.PromotingASHA wraps it for Tune) and Ray's stop rule, so
that the scheduler replay (search.bench.schedulers) runs exactly the decisions a search makes.

Two ways to use the same rungs (milestones at grace x eta^k epochs, below max_t):

* **stop** (Ray's ASHAScheduler): a trial reaching a rung continues if its score is at least the
  (1 - 1/eta) quantile of the scores recorded there before it, else it stops for good. The first
  trial at a rung meets no cutoff, so when trials run one at a time the first one passes every
  rung unchallenged, and the rest are judged against whoever happened to come first.
* **promote** (asynchronous successive halving, "promotion" type, as Syne Tune's Hyperband offers
  it): a trial reaching a rung *pauses* there with its checkpoint. Whenever a worker is free, the
  paused trial to resume is one in the top 1/eta of its rung among at least eta recorded there,
  highest rung first; only if there is none does a new trial start. Nothing is judged against
  too few others, a start point competes like every other trial, and with one worker it
  still searches: every eta-th new trial, on average, buys one promotion.

Brackets (Hyperband): bracket s starts its rungs at grace x eta^s; trials are assigned to
brackets in turn, the lowest first (deterministic, so a replay and a resume agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CONTINUE, PAUSE, STOP = "CONTINUE", "PAUSE", "STOP"
EPS = 1e-9


def milestones(grace: float, eta: float, max_t: float, bracket: int = 0) -> tuple[float, ...]:
    """The rungs of one bracket, in epochs, below max_t (as Ray's ASHA computes them)."""
    if grace <= 0 or eta <= 1 or max_t <= 0:
        raise ValueError(f"rungs need grace > 0, eta > 1, max_t > 0 (got {grace}, {eta}, {max_t})")
    count = int(math.log(max_t / grace) / math.log(eta) + EPS) + 1 - bracket
    return tuple(grace * eta ** (k + bracket) for k in range(max(count, 0)) if grace * eta ** (k + bracket) < max_t)


@dataclass
class Rung:
    milestone: float
    scores: dict[str, float] = field(default_factory=dict)  # trial -> its score here, in recording order
    promoted: set[str] = field(default_factory=set)  # trials that went on from here

    def ranked(self, sign: float) -> list[str]:
        """Trials best first; ties in the order they were recorded (stable sort)."""
        return sorted(self.scores, key=lambda t: -sign * _score(self.scores[t]))


def _score(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else value


@dataclass
class Ladder:
    """The rungs of every bracket and where each trial is on them. `mode`: "max" or "min"."""

    grace: float
    eta: float
    max_t: float
    brackets: int = 1
    mode: str = "max"
    rungs: list[list[Rung]] = field(default_factory=list)
    bracket_of: dict[str, int] = field(default_factory=dict)
    added: int = 0  # trials assigned so far: the next bracket in turn

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if not self.rungs:
            self.rungs = [[Rung(m) for m in milestones(self.grace, self.eta, self.max_t, b)]
                          for b in range(self.brackets)]

    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "max" else -1.0

    def add(self, trial: str) -> int:
        if trial not in self.bracket_of:
            self.bracket_of[trial] = self.added % self.brackets
            self.added += 1
        return self.bracket_of[trial]

    def rungs_of(self, trial: str) -> list[Rung]:
        return self.rungs[self.add(trial)]

    def all_milestones(self) -> list[float]:
        return sorted({r.milestone for bracket in self.rungs for r in bracket})

    # --- persistence (JSON: trial ids, numbers and lists only) -----------------------------------

    def to_dict(self) -> dict:
        return {"grace": self.grace, "eta": self.eta, "max_t": self.max_t, "brackets": self.brackets,
                "mode": self.mode, "added": self.added, "bracket_of": dict(self.bracket_of),
                "rungs": [[{"milestone": r.milestone, "scores": [[t, s] for t, s in r.scores.items()],
                            "promoted": sorted(r.promoted)} for r in bracket] for bracket in self.rungs]}

    def load(self, state: dict) -> None:
        """Restore what `to_dict` saved, onto rungs with the same milestones (a study's settings
        cannot change on resume; a rung that is not there any more is dropped)."""
        self.added = int(state.get("added", 0))
        self.bracket_of = {str(t): int(b) for t, b in state.get("bracket_of", {}).items() if int(b) < self.brackets}
        for bracket, saved in zip(self.rungs, state.get("rungs", [])):
            by_milestone = {float(r["milestone"]): r for r in saved}
            for rung in bracket:
                found = by_milestone.get(float(rung.milestone))
                if found is not None:
                    rung.scores = {str(t): float(s) for t, s in found["scores"]}
                    rung.promoted = {str(t) for t in found["promoted"]}


@dataclass
class StopRule(Ladder):
    """Ray's ASHA stop rule, on the same rungs (the replay's stop-type option; the service runs
    Ray's own class for it, search.tune.asha.PersistentASHA, and tests/test_rungs.py checks that both
    decide alike)."""

    def on_result(self, trial: str, epochs: float, score: float) -> str:
        for rung in reversed(self.rungs_of(trial)):
            if epochs + EPS < rung.milestone or trial in rung.scores:
                continue
            recorded = [s for s in rung.scores.values()]
            rung.scores[trial] = score
            if recorded:
                cutoff = np.nanpercentile([self.sign * s for s in recorded], (1 - 1 / self.eta) * 100)
                if self.sign * score < cutoff:
                    return STOP
            break
        return CONTINUE


@dataclass
class PromotionRule(Ladder):
    """Pause-and-promote successive halving. The caller (a Tune scheduler, or the replay) asks
    `on_result` what a trial does after each report, and `next_promotion` which paused trial a
    free worker should resume (None: start a new trial); `resumed` tells it one was."""

    paused: dict[str, float] = field(default_factory=dict)  # trial -> the milestone it waits at
    done: set[str] = field(default_factory=set)  # trials that ended (finished, failed, stopped)

    def on_result(self, trial: str, epochs: float, score: float) -> str:
        """CONTINUE or PAUSE. A trial that reaches its next rung is recorded there; it goes on at
        once only if it is itself the trial a free worker would resume now (no pause and resume
        for nothing), else it pauses. A result at a rung already recorded (a resumed trial that
        reports again on its way up) changes nothing."""
        rung = self._next_rung(trial, epochs)
        if rung is None:
            return CONTINUE
        rung.scores[trial] = score
        self.paused[trial] = rung.milestone
        if self.next_promotion() == trial:
            self.resumed(trial)
            return CONTINUE
        return PAUSE

    def _next_rung(self, trial: str, epochs: float) -> Rung | None:
        """The highest rung the trial has reached and is not recorded at. A rung it went past
        without a report there (a quarter-epoch rung under cross-validation, which reports whole
        epochs only) is not recorded: it is judged where it reported, as Ray's ASHA does."""
        reached = [r for r in self.rungs_of(trial) if epochs + EPS >= r.milestone]
        if not reached or trial in reached[-1].scores:
            return None
        return reached[-1]

    def promotable(self, rung: Rung, final: bool = False) -> list[str]:
        """Paused trials of `rung` in its top 1/eta, best first (none with fewer than eta recorded;
        `final`, when no new trial will come to fill the rung: the top 1/eta but at least the best)."""
        top = int(len(rung.scores) // self.eta)
        if final and rung.scores:
            top = max(top, 1)
        return [t for t in rung.ranked(self.sign)[:top]
                if t not in rung.promoted and self.paused.get(t) == rung.milestone]

    def next_promotion(self, final: bool = False) -> str | None:
        """The paused trial a free worker resumes: from the highest rung first (the trial closest
        to the end), the best of it; across brackets, the higher milestone first. `final`: no new
        trial will come (see `promotable`)."""
        candidates = [(rung.milestone, b, rung) for b, bracket in enumerate(self.rungs) for rung in bracket]
        for _, _, rung in sorted(candidates, key=lambda c: (-c[0], c[1])):
            found = self.promotable(rung, final)
            if found:
                return found[0]
        return None

    def resumed(self, trial: str) -> None:
        milestone = self.paused.pop(trial, None)
        for rung in self.rungs_of(trial):
            if rung.milestone == milestone:
                rung.promoted.add(trial)

    def ended(self, trial: str) -> None:
        """The trial finished, failed or was stopped: it can never be promoted."""
        self.paused.pop(trial, None)
        self.done.add(trial)

    def promotions(self, trial: str) -> int:
        return sum(trial in rung.promoted for rung in self.rungs_of(trial))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "paused": dict(self.paused), "done": sorted(self.done)}

    def load(self, state: dict) -> None:
        super().load(state)
        self.paused = {str(t): float(m) for t, m in state.get("paused", {}).items()}
        self.done = {str(t) for t in state.get("done", [])}
