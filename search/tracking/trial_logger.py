"""The Tune callback that follows the trials as they run, in the driver: it mirrors each trial into
its MLflow child run (through the delivery queue), drives the progress display, and counts the
failures that the failure budget (search.tune.budget.FailureBudget) ends the search on. One callback
does the three because all three follow the same trial events."""

from __future__ import annotations

import sys
from pathlib import Path

from ray import tune

from search.results.files import STATE_FILE
from search.results.records import finite, too_many_failures, trial_name, trial_number, trial_status
from search.results.resuming import own_study_folder
from search.tracking.delivery import MAX_PARAMS, Batch, DeliveryQueue, RunCall
from search.tracking.tracker import TRIAL_TAG, ChildRun, Tracker, epoch_metrics


class TrialLogger(tune.Callback):
    """Mirrors each Tune trial into a nested MLflow child run: params at start, metrics per
    epoch (step = epoch, so the UI draws learning curves), a status tag at the end. Also
    keeps the failure budget: too many failed trials end the search early.

    Tune pickles its callbacks with the experiment; only the settings are kept, so a
    resumed search rebuilds the connection and reloads the runs it already has."""

    def __init__(self, uri: str, experiment: str, parent_id: str, max_epochs: int, total: int,
                 metric: str, mode: str, max_failed_fraction: float = 0.5, min_finished: int = 4,
                 study_folder: str | None = None, budget_min: float | None = None):
        """`study_folder`: where study.json is; a resumed search takes the tracking store and parent
        run from it (they may have changed since Tune pickled this callback), not from `uri`."""
        self._start(dict(uri=uri, experiment=experiment, parent_id=parent_id, max_epochs=max_epochs,
                         total=total, metric=metric, mode=mode, max_failed_fraction=max_failed_fraction,
                         min_finished=min_finished, study_folder=study_folder, budget_min=budget_min))

    def __getstate__(self) -> dict:
        return self.settings

    def __setstate__(self, settings: dict) -> None:
        # Unpickled from Tune's state on a resume: the study folder is the one resumed, wherever
        # the pickled path points (a copy's would be its original's, and its MLflow run with it).
        if settings.get("study_folder") is not None:
            settings = {**settings, "study_folder": own_study_folder(settings["study_folder"])}
        self._start(settings)

    def _start(self, settings: dict) -> None:
        from search.util.progress import Progress

        self.settings = settings
        self.study_folder = None  # callbacks pickled before it was a setting
        self.budget_min = None
        for key, value in settings.items():
            setattr(self, key, value)
        self.progress = Progress(self.total, self.metric, self.mode, self.max_epochs, budget_min=self.budget_min)
        self.tracker: Tracker | None = None
        self.queue: DeliveryQueue | None = None
        self.children: dict[str, ChildRun] = {}
        self.last: dict[str, dict] = {}
        self.finished = 0
        self.failed = 0
        self.counted = False
        self.over_budget = False
        self.statuses: dict[str, str] = {}  # Tune's status of each trial at the last step

    def setup(self, **info) -> None:
        if self.study_folder is not None and (Path(self.study_folder) / STATE_FILE).is_file():
            from search.results.request import StudyState

            state = StudyState.load(Path(self.study_folder))
            self.uri, self.parent_id = state.request.tracking_uri, state.parent_run_id
        self.tracker = Tracker(self.uri, self.experiment)
        self.queue = self.delivery_queue(self.tracker)
        self.children = self.tracker.child_runs(self.parent_id)

    def delivery_queue(self, tracker: Tracker) -> DeliveryQueue:
        """The queue that delivers to MLflow; the scale benchmark times deliveries through a
        subclass of it (search.bench.scale)."""
        return DeliveryQueue(tracker)

    def on_step_begin(self, iteration, trials, **info):
        """Once, before any trial runs: what a resumed search has already finished, counted from
        Tune's own trials (a failure whose status never reached MLflow still counts)."""
        if self.counted:
            return
        self.counted = True
        done = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        self.finished = len(done)
        self.failed = sum(t.status == "ERROR" or bool((t.last_result or {}).get("failed")) for t in done)
        self.progress.resumed(len(done))
        self.over_budget = too_many_failures(self.failed, self.finished, self.max_failed_fraction, self.min_finished)

    def on_step_end(self, iteration, trials, **info):
        """Pause-and-promote (search.tune.asha): a trial paused at a rung, or resumed from one, is said
        in the progress and on its MLflow run (Tune has no callback for either)."""
        for trial in trials:
            before, now = self.statuses.get(trial.trial_id), trial.status
            self.statuses[trial.trial_id] = now
            if before == now or trial.trial_id not in self.children:
                continue
            child = self.children[trial.trial_id]
            if now == "PAUSED" and before == "RUNNING":
                self.queue.put(Batch(child, tags={"hpsearch.status": "paused"}))
                self.progress.on_pause(child.name, self.last.get(trial.trial_id, {}))
            elif before == "PAUSED" and now in ("PENDING", "RUNNING"):
                self.queue.put(Batch(child, tags={"hpsearch.status": "running"}))
                self.progress.on_promote(child.name, self.last.get(trial.trial_id, {}))

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.children:
            return  # resumed trial: keep its run
        child = self.children[trial.trial_id] = ChildRun("", trial_name(trial_number(trial.experiment_tag)))
        self.queue.put(RunCall(child, start_child(self.tracker, self.parent_id, child, trial.trial_id)))
        # Params apart from the creation: a queue that is behind sends them with the trial's results.
        params = list(dict(trial.config).items())
        for start in range(0, len(params), MAX_PARAMS):
            self.queue.put(Batch(child, params=dict(params[start:start + MAX_PARAMS])))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[trial.trial_id] = result
        child = self.children.get(trial.trial_id)
        if result.get("partial"):
            # A quarter-epoch rung: its own metric names, step = percent of an epoch, so the
            # per-epoch curves keep one point per epoch.
            if child is not None:
                metrics = finite({f"partial_{k}": result[k] for k in ("train_loss", "val_loss", "val_accuracy")
                                  if k in result})
                point = round(100 * float(result.get("epochs_seen", 0)))
                self.queue.put(Batch(child, metrics=[(k, v, point) for k, v in metrics.items()]))
            self.progress.on_result(child.name if child else trial.trial_id, result)
            return
        step = int(result.get("epoch", 0))
        if child is not None and step not in child.steps and not result.get("failed"):
            child.steps.add(step)
            metrics = finite(epoch_metrics(result))
            self.queue.put(Batch(child, metrics=[(k, v, step) for k, v in metrics.items()]))
        self.progress.on_result(child.name if child else trial.trial_id, result)

    def _finish(self, trial, errored: bool) -> None:
        result = self.last.get(trial.trial_id, {})
        failed = errored or bool(result.get("failed"))
        epochs = int(result.get("epoch", 0)) - bool(result.get("failed"))
        status = trial_status(epochs, self.max_epochs, bool(result.get("diverged")), failed)
        child = self.children.get(trial.trial_id)
        if child is not None:
            child.status = status
            tags = {"hpsearch.status": status, "hpsearch.epochs": str(epochs),
                    "hpsearch.epochs_seen": f"{float(result.get('epochs_seen', epochs)):g}"}
            if result.get("numerics"):
                tags["hpsearch.numerics"] = str(result["numerics"])
            error = result.get("error") or (Path(trial.error_file).read_text() if errored and trial.error_file
                                             and Path(trial.error_file).exists() else "")
            if error:
                tags["hpsearch.error"] = str(error)[-4000:]
            self.queue.put(Batch(child, tags=tags, end="FAILED" if failed else "FINISHED"))
        self.finished += 1
        self.failed += failed
        # The summary of what failed is printed by the study once Tune has stopped.
        self.over_budget = too_many_failures(self.failed, self.finished, self.max_failed_fraction, self.min_finished)
        self.progress.on_finish(child.name if child else trial.trial_id, status, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, errored=True)

    def on_experiment_end(self, trials, **info):
        self.progress.close()
        if self.queue is None:
            return
        self.queue.flush(timeout=30)
        dropped = self.queue.stop()
        if dropped:
            print(f"{dropped} tracking calls still waiting for the store; they are "
                  "reconciled from Tune's results at the end", file=sys.stderr, flush=True)
        if self.queue.undelivered:
            print(f"{len(self.queue.undelivered)} tracking calls were refused by the store (first: "
                  f"{self.queue.undelivered[0]}); the epoch metrics are reconciled from Tune's results",
                  file=sys.stderr, flush=True)


def start_child(tracker: Tracker, parent_id: str, child: ChildRun, trial_id: str, config: dict | None = None):
    """The delivery call that makes a trial's child run (with `config` as its params, or none: the
    trial logger sends them in a Batch after it). Retried after a failure, it first looks the run
    up: a create that timed out may still have been done by the store."""
    attempts = []

    def start() -> None:
        found = tracker.find_child(parent_id, trial_id) if attempts else None
        attempts.append(1)
        tags = {TRIAL_TAG: trial_id, "hpsearch.status": "running"}
        child.run_id = found or tracker.start_run(child.name, config or {}, tags, parent_id=parent_id)
    return start
