"""MLflow tracking: one parent run per study, one nested child run per trial.

All logging happens in the driver, so trials never wait on the tracking store and never need
its credentials. Live logging goes through a delivery queue drained by a background thread
that retries while the store is unreachable; at the end of a search (or of a resumed one)
`reconcile` compares MLflow with Tune's own per-trial results and fills in whatever is missing,
so an outage, or a driver killed with calls still queued, loses nothing and duplicates nothing.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ray import tune

from search.records import (
    FINAL_STATUSES,
    TrialRecord,
    finite,
    too_many_failures,
    trial_name,
    trial_number,
    trial_status,
)
from trainables.errors import UserError

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "hpsearch.trial_id"
EPOCH_METRICS = ("train_loss", "val_loss", "val_accuracy", "epoch_seconds")


def default_tracking_uri(results_root: Path) -> str:
    return f"sqlite:///{results_root.resolve() / 'mlflow.db'}"


def _check_server(uri: str) -> None:
    """A server is up and lets us in (with the credentials MLflow itself would send) before any
    training starts: /health answers without a login, so a real API call follows it."""
    if not uri.startswith(("http://", "https://")):
        return
    import os

    import requests

    base = uri.rstrip("/")
    try:
        requests.get(base + "/health", timeout=5).raise_for_status()
    except requests.RequestException as e:
        raise UserError(f"MLflow tracking server {uri} is not reachable ({type(e).__name__}); start it",
                        option="tracking_uri", fix="naming another store") from None
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    try:
        answer = requests.get(base + "/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=10,
                              auth=(user, password or "") if user else None)
    except requests.RequestException:
        return  # up a moment ago: the store's own retries deal with a blip
    if answer.status_code in (401, 403):
        who = f"user {user!r} was refused" if user else "it asks for a login"
        raise UserError(f"MLflow tracking server {uri}: {who} (HTTP {answer.status_code})",
                        option="tracking_uri", fix="as http://USER:PASSWORD@HOST:PORT, or set "
                        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") from None


@dataclass
class ChildRun:
    run_id: str
    name: str
    steps: set[int] = field(default_factory=set)
    status: str = "running"


def _store_lock(uri: str):
    """MLflow creates and migrates a new SQLite store on first use; two searches starting
    together on one file would both migrate it. A lock file beside it makes them take turns."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock

    path = Path(uri[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=300)


def _locked(error: Exception) -> bool:
    return "locked" in str(error).lower()


def _patient(method):
    """Several searches may share one SQLite store: wait out its short write locks."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        for attempt in range(60):
            try:
                return method(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - only lock contention is retried here
                if not _locked(e) or attempt == 59:
                    raise
                time.sleep(0.5)
    return call


@contextlib.contextmanager
def _fluent_uri(mlflow, uri: str):
    """log_model only exists in MLflow's fluent (global) API, and set_tracking_uri also writes
    MLFLOW_TRACKING_URI into os.environ, where every later subprocess (Ray workers, the next
    search a test or the bench starts) would inherit it. Set it for the call, then put both back."""
    import os

    before_env, before_uri = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before_uri if before_env is not None else None)
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env


class Tracker:
    """Thin wrapper over MlflowClient: explicit run ids, no global active-run state."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None):
        _check_server(uri)
        import mlflow
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.uri = uri
        self.mlflow = mlflow
        try:
            with _store_lock(uri):
                self.client = MlflowClient(uri)
                self.experiment_id = self._experiment_id(experiment, artifact_root)
        except Exception as e:  # noqa: BLE001 - any store failure here means the same to the user
            raise UserError(f"cannot use MLflow tracking store {uri}: {str(e).splitlines()[0]}") from None

    def _experiment_id(self, name: str, artifact_root: Path | None) -> str:
        for attempt in range(5):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            try:
                location = artifact_root.resolve().as_uri() if artifact_root is not None else None
                return self.client.create_experiment(name, artifact_location=location)
            except Exception:  # noqa: BLE001 - another search created it first: look it up again
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    @_patient
    def start_run(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str],
                  parent_id: str | None = None) -> str:
        from mlflow.entities import Param

        tags = dict(tags)
        if parent_id is not None:
            tags[PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=items[start:start + 100])
        return run.info.run_id

    @_patient
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    @_patient
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @_patient
    def end_run(self, run_id: str, failed: bool = False) -> None:
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    @_patient
    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def available(self) -> bool:
        try:
            self.client.get_experiment(self.experiment_id)
            return True
        except Exception:  # noqa: BLE001 - unreachable, whatever the reason
            return False

    def wait_available(self, timeout: float, poll: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.available():
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def log_model(self, run_id: str, model, input_example, torch_version: str,
                  register_as: str | None = None) -> str:
        """Returns "NAME/VERSION" when the model was registered, else ""."""
        with _fluent_uri(self.mlflow, self.uri), self.mlflow.start_run(run_id=run_id):
            info = self.mlflow.pytorch.log_model(
                model, name="model", input_example=input_example, registered_model_name=register_as,
                # Explicit requirements: inferring them imports the model in a subprocess (slow).
                pip_requirements=[f"torch=={torch_version}"],
            )
        if not register_as:
            return ""
        registered = f"{register_as}/{info.registered_model_version}"
        self.set_tags(run_id, {"hpsearch.registered_model": registered})
        return registered

    @_patient
    def child_runs(self, parent_id: str) -> dict[str, ChildRun]:
        """The trials already recorded under `parent_id`, by Tune trial id, with the epochs
        (steps) they have, so a resumed search neither duplicates runs nor metric points."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'",
                                       max_results=5000)
        children = {}
        for run in runs:
            trial_id = run.data.tags.get(TRIAL_TAG)
            if trial_id is None:
                continue
            steps = {m.step for m in self.client.get_metric_history(run.info.run_id, "val_accuracy")}
            children[trial_id] = ChildRun(run.info.run_id, run.info.run_name, steps,
                                          run.data.tags.get("hpsearch.status", "running"))
        return children


def _transient(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in ("connect", "timeout", "timed out", "locked", "unavailable",
                                          "max retries", "503", "502", "504", "refused", "reset"))


class DeliveryQueue:
    """Tracking calls delivered in order by a background thread. While the store is
    unreachable the calls wait and are retried, so training never blocks on MLflow; a call
    refused for another reason is retried a few times, then counted as undelivered."""

    def __init__(self, tracker: Tracker, retry_seconds: float = 2.0, stream=None):
        self.tracker = tracker
        self.retry_seconds = retry_seconds
        self.stream = stream or sys.stderr
        self.ops: collections.deque[Callable[[], None]] = collections.deque()
        self.cond = threading.Condition()
        self.undelivered: list[str] = []
        self.outage_since: float | None = None
        self.closed = False
        self.thread = threading.Thread(target=self._drain, name="mlflow-delivery", daemon=True)
        self.thread.start()

    def put(self, op: Callable[[], None]) -> None:
        with self.cond:
            self.ops.append(op)
            self.cond.notify()

    def _drain(self) -> None:
        failures = 0
        while True:
            with self.cond:
                while not self.ops and not self.closed:
                    self.cond.wait()
                if not self.ops:
                    return
                op = self.ops[0]
            try:
                op()
            except Exception as e:  # noqa: BLE001 - any failure is retried or counted below
                failures += 1
                if _transient(e) or failures < 3:
                    if self.outage_since is None:
                        self.outage_since = time.monotonic()
                        print(f"tracking store unavailable ({type(e).__name__}); training goes on and "
                              "results are kept until it is back", file=self.stream, flush=True)
                    time.sleep(self.retry_seconds)
                    continue
                self.undelivered.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            else:
                if self.outage_since is not None:
                    print(f"tracking store back after {time.monotonic() - self.outage_since:.0f} s; "
                          "delivering what was kept", file=self.stream, flush=True)
                    self.outage_since = None
            failures = 0
            with self.cond:
                self.ops.popleft()
                self.cond.notify_all()

    def pending(self) -> int:
        with self.cond:
            return len(self.ops)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is delivered; False if `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.ops:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 1.0))
        return True

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class TrialLogger(tune.Callback):
    """Mirrors each Tune trial into a nested MLflow child run: params at start, metrics per
    epoch (step = epoch, so the UI draws learning curves), a status tag at the end. Also
    keeps the failure budget: too many failed trials end the search early.

    Tune pickles its callbacks with the experiment; only the settings are kept, so a
    resumed search rebuilds the connection and reloads the runs it already has."""

    def __init__(self, uri: str, experiment: str, parent_id: str, max_epochs: int, total: int,
                 metric: str, mode: str, max_failed_fraction: float = 0.5, min_finished: int = 4):
        self.settings = dict(uri=uri, experiment=experiment, parent_id=parent_id, max_epochs=max_epochs,
                             total=total, metric=metric, mode=mode, max_failed_fraction=max_failed_fraction,
                             min_finished=min_finished)
        self.__setstate__(self.settings)

    def __getstate__(self) -> dict:
        return self.settings

    def __setstate__(self, settings: dict) -> None:
        from search.progress import Progress

        self.settings = settings
        for key, value in settings.items():
            setattr(self, key, value)
        self.progress = Progress(self.total, self.metric, self.mode, self.max_epochs)
        self.tracker: Tracker | None = None
        self.queue: DeliveryQueue | None = None
        self.children: dict[str, ChildRun] = {}
        self.last: dict[str, dict] = {}
        self.finished = 0
        self.failed = 0
        self.over_budget = False

    def setup(self, **info) -> None:
        self.tracker = Tracker(self.uri, self.experiment)
        self.queue = DeliveryQueue(self.tracker)
        self.children = self.tracker.child_runs(self.parent_id)
        done = [c for c in self.children.values() if c.status in FINAL_STATUSES]
        self.finished = len(done)
        self.progress.resumed(len(done))
        self.failed = sum(c.status == "failed" for c in done)

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.children:
            return  # resumed trial: keep its run
        child = self.children[trial.trial_id] = ChildRun("", trial_name(trial_number(trial.experiment_tag)))
        tracker, parent, config = self.tracker, self.parent_id, dict(trial.config)

        def start() -> None:
            child.run_id = tracker.start_run(child.name, config, {TRIAL_TAG: trial.trial_id,
                                                                   "hpsearch.status": "running"}, parent_id=parent)
        self.queue.put(start)

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
                self.queue.put(lambda: self.tracker.log_metrics(child.run_id, metrics, step=point))
            self.progress.on_result(child.name if child else trial.trial_id, result)
            return
        step = int(result.get("epoch", 0))
        if child is not None and step not in child.steps and not result.get("failed"):
            child.steps.add(step)
            metrics = finite({k: result[k] for k in EPOCH_METRICS if k in result})
            self.queue.put(lambda: self.tracker.log_metrics(child.run_id, metrics, step=step))
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

            def finish() -> None:
                self.tracker.set_tags(child.run_id, tags)
                self.tracker.end_run(child.run_id, failed=failed)
            self.queue.put(finish)
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
        if not self.queue.flush(timeout=30):
            print(f"{self.queue.pending()} tracking calls still waiting for the store; they are "
                  "reconciled from Tune's results at the end", file=sys.stderr, flush=True)
        if self.queue.undelivered:
            print(f"{len(self.queue.undelivered)} tracking calls were refused by the store (first: "
                  f"{self.queue.undelivered[0]}); the epoch metrics are reconciled from Tune's results",
                  file=sys.stderr, flush=True)
        self.queue.close()


class FailureBudget(tune.Stopper):
    """Ends the search when the trial logger says too many trials failed."""

    def __init__(self, logger: TrialLogger):
        self.logger = logger

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.logger.over_budget


def reconcile(tracker: Tracker, parent_id: str, records: list[TrialRecord]) -> int:
    """Make MLflow hold exactly one child run per trial with every epoch Tune recorded.
    Returns the number of metric points that had to be filled in."""
    children = tracker.child_runs(parent_id)
    filled = 0
    for record in records:
        child = children.get(record.trial_id)
        if child is None:
            run_id = tracker.start_run(record.name, record.config, {TRIAL_TAG: record.trial_id}, parent_id=parent_id)
            child = ChildRun(run_id, record.name)
        for row in record.history:
            step = int(row.get("epoch", 0))
            if step and step not in child.steps:
                metrics = finite({k: row[k] for k in EPOCH_METRICS if k in row})
                tracker.log_metrics(child.run_id, metrics, step=step)
                filled += 1
        tags = {"hpsearch.status": record.status, "hpsearch.epochs": str(record.epochs),
                "hpsearch.epochs_seen": f"{record.epochs_seen:g}"}
        if record.numerics:
            tags["hpsearch.numerics"] = record.numerics
        if record.error:
            tags["hpsearch.error"] = record.error[-4000:]
        tracker.set_tags(child.run_id, tags)
        tracker.end_run(child.run_id, failed=record.status == "failed")
    return filled
