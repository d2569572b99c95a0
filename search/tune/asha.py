"""ASHA for Tune, in both of its kinds, surviving a resume; and the pacing of new proposals that
pause-and-promote needs.

* `PromotingASHA` (scheduler "promotion", the default): pause-and-promote successive halving,
  the decisions of search.tune.rungs.PromotionRule. A trial that reaches a rung pauses with its
  checkpoint; a free worker resumes the best promotable paused trial, else starts a new one.
* `PersistentASHA` (scheduler "stopping"): Ray's own ASHAScheduler, which stops a trial below a
  rung's cutoff for good.

Ray's Tuner.restore brings back a scheduler as it was pickled when the search began (the
controller never saves it), so both write their rungs (and who is paused, promoted, stopped)
to a JSON file beside Tune's state after every decision, and read it back when Tune unpickles
them. JSON, not pickle: nothing is unpickled from the results folder that Tune itself does not
already unpickle.

`PacedSearch` replaces Ray's ConcurrencyLimiter under pause-and-promote: the limiter counts a
paused trial as live, so with one worker the second trial would never be proposed; this one
asks for a proposal only when a worker would otherwise idle (no promotion is waiting), so TPE
proposes each configuration knowing every result so far.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from search.results.resuming import own_tune_file
from search.tune.rungs import PAUSE, PromotionRule

STATE_FILE = "asha-rungs.json"
SCHEDULERS = ("promotion", "stopping", "fifo")

# The driver's pause-and-promote scheduler for each state file, so PacedSearch (which Tune keeps
# and restores apart from it) can ask it what waits to be promoted.
_LIVE: dict[str, "PromotingASHA"] = {}


def _write_json(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict:
    try:
        state = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}  # nothing decided yet (or a write cut short): the rungs start empty
    return state if isinstance(state, dict) else {}


def stop_reasons(tune_dir: Path) -> dict[str, str]:
    """Why the scheduler ended each trial it ended early, from its saved state: "asha" (stopped
    at a rung), "paused" (left paused at a rung when the search ended)."""
    state = _read_json(Path(tune_dir) / STATE_FILE)
    out = {str(t): "asha" for t in state.get("stopped", [])}
    out.update({str(t): "paused" for t in state.get("left_paused", [])})
    out.update({str(t): "paused" for t in (state.get("rule") or {}).get("paused", {})})
    return out


def promotions(tune_dir: Path) -> dict[str, int]:
    """How many times each trial was promoted past a rung (pause-and-promote only)."""
    rule = (_read_json(Path(tune_dir) / STATE_FILE).get("rule") or {})
    counts: dict[str, int] = {}
    for bracket in rule.get("rungs", []):
        for rung in bracket:
            for trial in rung.get("promoted", []):
                counts[str(trial)] = counts.get(str(trial), 0) + 1
    return counts


class PersistentASHA(ASHAScheduler):
    """Ray's stop-type ASHA, its rungs (and the bracket of each trial, and whom it stopped) saved
    after every decision."""

    def __init__(self, *args, state_file: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.state_file = state_file
        self._restored: dict[str, int] = {}  # trial id -> bracket index, from an earlier driver
        self.stopped: list[str] = []

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.state_file = own_tune_file(self.state_file)  # the pickled path may be another folder's
        self._restored = {}
        self.stopped = []
        self._load()

    def _state(self) -> dict:
        index = {id(b): i for i, b in enumerate(self._brackets)}
        return {
            # Copies: Ray's brackets keep changing their own dicts, and _save compares with the last state saved.
            "rungs": [[[milestone, dict(recorded)] for milestone, recorded in b._rungs] for b in self._brackets],
            "brackets": {**self._restored, **{t: index[id(b)] for t, b in self._trial_info.items()}},
            "num_stopped": self._num_stopped,
            "stopped": list(self.stopped),
        }

    def _save(self) -> None:
        state = self._state()
        # Most results pass no rung and add no trial: the file would be rewritten unchanged, and it
        # grows with the study (a write per result of every trial's scores: quadratic in trials).
        if state == getattr(self, "_saved", None):
            return
        _write_json(Path(self.state_file), state)
        self._saved = state

    def _load(self) -> None:
        state = _read_json(Path(self.state_file))
        for bracket, rungs in zip(self._brackets, state.get("rungs", [])):
            recorded = {float(m): dict(r) for m, r in rungs}
            bracket._rungs = [(m, recorded.get(float(m), {})) for m, _ in bracket._rungs]
        self._restored = {t: int(i) for t, i in state.get("brackets", {}).items() if int(i) < len(self._brackets)}
        self._num_stopped = int(state.get("num_stopped", 0))
        self.stopped = [str(t) for t in state.get("stopped", [])]

    def on_trial_add(self, tune_controller, trial) -> None:
        if trial.trial_id in self._restored:  # a resumed trial stays in the bracket it was in
            self._trial_info[trial.trial_id] = self._brackets[self._restored[trial.trial_id]]
            return
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t:
            self.stopped.append(trial.trial_id)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._restored.pop(trial.trial_id, None)
        self._save()


class PromotingASHA(FIFOScheduler):
    """Pause-and-promote ASHA for Tune (search.tune.rungs.PromotionRule decides). When no new trial
    will come (every sample proposed) and nothing runs, the best paused trial of each rung still
    goes on (the top 1/eta, at least one), so a search with `--samples` ends with its best trial
    trained to max_t as successive halving does; the rest stay paused (the trials table says
    so) and are ended."""

    def __init__(self, *, time_attr: str, max_t: float, grace_period: float, reduction_factor: float,
                 brackets: int, state_file: str, metric: str | None = None, mode: str | None = None):
        super().__init__()
        self._metric, self._mode = metric, mode
        self.time_attr, self.max_t, self.state_file = time_attr, float(max_t), state_file
        self.settings = dict(grace=grace_period, eta=reduction_factor, max_t=float(max_t), brackets=brackets)
        self.rule = PromotionRule(**self.settings, mode=mode or "max")
        self.left_paused: list[str] = []
        _LIVE[state_file] = self

    def __setstate__(self, state: dict) -> None:
        # A new driver (Tuner.restore unpickles the scheduler as it was at the start): the rungs
        # and who is paused come from the saved file.
        self.__dict__.update(state)
        self.state_file = own_tune_file(self.state_file)  # the pickled path may be another folder's
        self.rule = PromotionRule(**self.settings, mode=self._mode or "max")
        saved = _read_json(Path(self.state_file))
        if saved.get("rule"):
            self.rule.load(saved["rule"])
        self.left_paused = [str(t) for t in saved.get("left_paused", [])]
        _LIVE[self.state_file] = self

    def set_search_properties(self, metric, mode, **spec) -> bool:
        ok = super().set_search_properties(metric, mode, **spec)
        if mode:
            self.rule.mode = mode
        return ok

    def _save(self) -> None:
        state = {"rule": self.rule.to_dict(), "left_paused": list(self.left_paused)}
        if state != getattr(self, "_saved", None):
            _write_json(Path(self.state_file), state)
            self._saved = state

    # --- Tune's hooks ----------------------------------------------------------------------------

    def on_trial_add(self, tune_controller, trial) -> None:
        # Tune resumes every unfinished trial as PENDING, which would run the paused ones at once:
        # one paused at a rung stays paused (it is added in the state it has when this returns).
        if trial.trial_id in self.rule.paused and trial.status == Trial.PENDING:
            trial.set_status(Trial.PAUSED)
        self.rule.add(trial.trial_id)
        self._save()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("failed") or self.time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        epochs = float(result[self.time_attr])
        if epochs >= self.max_t - 1e-9:
            return TrialScheduler.CONTINUE  # its last epoch: the trial ends by itself
        decision = self.rule.on_result(trial.trial_id, epochs, float(result[self._metric]))
        self._save()
        return TrialScheduler.PAUSE if decision == PAUSE else TrialScheduler.CONTINUE

    def _ended(self, trial) -> None:
        self.rule.ended(trial.trial_id)
        self._save()

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        self._ended(trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._ended(trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._ended(trial)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        trials = tune_controller.get_trials()
        by_id = {t.trial_id: t for t in trials}
        chosen = self._promote(by_id, self.rule.next_promotion())
        if chosen is not None:
            return chosen
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        if not tune_controller.search_alg.is_finished() or \
                any(t.status in (Trial.RUNNING, Trial.PENDING) for t in trials):
            return None
        # Every sample is proposed and nothing runs: the end of the search.
        chosen = self._promote(by_id, self.rule.next_promotion(final=True))
        if chosen is not None:
            return chosen
        for trial in trials:
            if trial.status == Trial.PAUSED:
                self.left_paused.append(trial.trial_id)
                self.rule.ended(trial.trial_id)
                tune_controller.stop_trial(trial)
        self._save()
        return None

    def _promote(self, by_id: dict, trial_id: str | None) -> Trial | None:
        trial = by_id.get(trial_id) if trial_id else None
        if trial is None or trial.status != Trial.PAUSED:
            return None  # (one still saving its checkpoint on the way to PAUSED is taken next time)
        self.rule.resumed(trial_id)
        self._save()
        return trial

    def debug_string(self) -> str:
        paused = len(self.rule.paused)
        return f"Using pause-and-promote ASHA: {paused} trial(s) paused at a rung."

    @classmethod
    def of(cls, state_file: str) -> "PromotingASHA | None":
        return _LIVE.get(own_tune_file(state_file))  # a searcher unpickled on resume names the old path


class PacedSearch(ConcurrencyLimiter):
    """Proposes a new trial only when it would run now: fewer trials are running or waiting to
    start than workers, and no paused trial waits to be promoted (it takes the next free worker).
    Paused trials do not count as running (Ray's ConcurrencyLimiter counts them, and would stop
    proposing after `max_concurrent` paused trials)."""

    def __init__(self, searcher: Searcher, max_concurrent: int, state_file: str):
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.state_file = state_file

    def suggest(self, trial_id: str):
        scheduler = PromotingASHA.of(self.state_file)
        paused = set(scheduler.rule.paused) if scheduler is not None else set()
        waiting = 1 if scheduler is not None and scheduler.rule.next_promotion() else 0
        if len(self.live_trials - paused) + waiting >= self.max_concurrent:
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion
