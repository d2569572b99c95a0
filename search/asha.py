"""ASHA that survives a resume. Ray's Tuner.restore brings back the searcher but not the
scheduler (the controller never saves it): a resumed search would start from empty rungs and let
through trials an uninterrupted one would stop. This scheduler writes its rungs (and which
bracket each trial is in) to a JSON file beside Tune's state after every decision, and reads them
back when Tune unpickles it on restore. JSON, not pickle: nothing is unpickled from the results
folder that Tune itself does not already unpickle."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler

from search.resuming import own_tune_file

STATE_FILE = "asha-rungs.json"


class PersistentASHA(ASHAScheduler):
    def __init__(self, *args, state_file: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.state_file = state_file
        self._restored: dict[str, int] = {}  # trial id -> bracket index, from an earlier driver

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.state_file = own_tune_file(self.state_file)  # the pickled path may be another folder's
        self._restored = {}
        self._load()

    # --- persistence ---------------------------------------------------------------------------

    def _state(self) -> dict:
        index = {id(b): i for i, b in enumerate(self._brackets)}
        return {
            # Copies: Ray's brackets keep changing their own dicts, and _save compares with the last state saved.
            "rungs": [[[milestone, dict(recorded)] for milestone, recorded in b._rungs] for b in self._brackets],
            "brackets": {**self._restored, **{t: index[id(b)] for t, b in self._trial_info.items()}},
            "num_stopped": self._num_stopped,
        }

    def _save(self) -> None:
        state = self._state()
        # Most results pass no rung and add no trial: the file would be rewritten unchanged, and it
        # grows with the study (a write per result of every trial's scores: quadratic in trials).
        if state == getattr(self, "_saved", None):
            return
        path = Path(self.state_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(state, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._saved = state

    def _load(self) -> None:
        try:
            state = json.loads(Path(self.state_file).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return  # nothing decided yet (or a write cut short): the rungs start empty, as before
        for bracket, rungs in zip(self._brackets, state.get("rungs", [])):
            recorded = {float(m): dict(r) for m, r in rungs}
            bracket._rungs = [(m, recorded.get(float(m), {})) for m, _ in bracket._rungs]
        self._restored = {t: int(i) for t, i in state.get("brackets", {}).items() if int(i) < len(self._brackets)}
        self._num_stopped = int(state.get("num_stopped", 0))

    # --- Tune's hooks ----------------------------------------------------------------------------

    def on_trial_add(self, tune_controller, trial) -> None:
        if trial.trial_id in self._restored:  # a resumed trial stays in the bracket it was in
            self._trial_info[trial.trial_id] = self._brackets[self._restored[trial.trial_id]]
            return
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._restored.pop(trial.trial_id, None)
        self._save()
