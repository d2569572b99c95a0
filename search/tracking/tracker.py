"""The MLflow client: one parent run per study, one nested child run per trial, with explicit
run ids (no global active run), a SQLite store shared safely by several searches, and the tags
that tie runs to trials. No Ray here: the final model and `search.train` log through it too.

All logging happens in the driver, so trials never wait on the tracking store and never need
its credentials; how results reach the store while it may be down is search.tracking.delivery's, and
following the trials as they run is search.tracking.trial_logger's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from search.util.provenance import mlflow_source_tags
from trainables.crossval import is_fold_metric
from trainables.errors import UserError
from trainables.latency import LATENCY_METRICS

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "hpsearch.trial_id"
# The latency is logged once, at the epoch after which the trial measured it (search.tune.trial).
EPOCH_METRICS = ("train_loss", "val_loss", "val_accuracy", "epoch_seconds", *LATENCY_METRICS)


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a child run records of an epoch: EPOCH_METRICS and, under cross-validation, their
    spread and per-fold values (`val_accuracy_std`, `val_accuracy_fold1`)."""
    return {k: v for k, v in result.items() if k in EPOCH_METRICS or is_fold_metric(k)}


def default_tracking_uri(results_root: Path) -> str:
    return f"sqlite:///{results_root.resolve() / 'mlflow.db'}"


def artifact_root(uri: str) -> Path | None:
    """Where a new experiment in a local SQLite store keeps its artifacts: beside the store's file.
    MLflow's own default there is ./mlruns under whatever folder the command ran in (a search run
    from the repository with --tracking-uri sqlite:///elsewhere.db left mlruns/ in the
    repository). A server (or any other store) decides for itself: None."""
    if not uri.startswith("sqlite:///"):
        return None
    database = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(database).resolve().parent / "mlartifacts" if database else None


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
    ended: bool = False  # MLflow's own run status is no longer RUNNING


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
def _registry_quiet(registering: str | None):
    """Registering a model, MLflow prints "Successfully registered model" and "Created version" on
    stderr (its event stream); the command's summary says the same in one line (registered model:
    NAME/VERSION). Off for the call only, and only when registering. Through MLflow's own counted
    switch: a plain disable_logging() is undone by the first module MLflow imports inside the call
    that turns event logs off and on again around its own import (mlflow.types.responses does)."""
    if not registering:
        yield
        return
    from mlflow.utils.autologging_utils.logging_and_warnings import MlflowEventsAndWarningsBehaviorGlobally

    with MlflowEventsAndWarningsBehaviorGlobally(disable_event_logs=True, disable_warnings=False,
                                                 reroute_warnings=False):
        yield


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

        tags = {**mlflow_source_tags(), **tags}
        if parent_id is not None:
            tags[PARENT_TAG] = parent_id
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        if parent_id is not None and TRIAL_TAG in tags:
            run_id = self._one_run_per_trial(parent_id, tags[TRIAL_TAG], run_id)
        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[start:start + 100])
        return run_id

    def _one_run_per_trial(self, parent_id: str, trial_id: str, made: str) -> str:
        """The trial's one run: MLflow's REST client sends a create again when its answer was lost
        (a server stopping mid-call), and the store may have done both. The earliest is kept, the
        others (just made, empty) deleted, so any driver settles on the same run."""
        runs = self._trial_runs(parent_id, trial_id)
        if len(runs) <= 1:
            return made
        for extra in runs[1:]:
            self.client.delete_run(extra.info.run_id)
        return runs[0].info.run_id

    @_patient
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    @_patient
    def log_batch(self, run_id: str, metrics: list[tuple[str, float, int]], params: Mapping[str, Any],
                  tags: Mapping[str, str]) -> None:
        """One call with (key, value, step) metrics, params and tags of one run (the delivery
        queue's merged batches: search.tracking.delivery.Batch)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v, step in metrics],
                              params=[Param(k, str(v)) for k, v in params.items()],
                              tags=[RunTag(k, str(v)) for k, v in tags.items()])

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

    def log_model(self, run_id: str, python_model, artifacts: Mapping[str, Path], input_example,
                  pip_requirements: list[str], register_as: str | None = None, code_paths: list[str] | None = None,
                  signature=None) -> str:
        """Log an `mlflow.pyfunc` model named "model" (with `artifacts`, e.g. model.pt) under the run;
        `python_model` is the path of its code (models-from-code: search/tracking/mlflow_model.py) or a PythonModel.
        Returns "NAME/VERSION" when the model was registered, else "". Once per run: a final phase
        resumed after the model was logged (or registered) neither logs nor registers again."""
        done = self.client.get_run(run_id).data.tags
        if register_as:
            versions = self.client.search_model_versions(f"name = '{register_as}' and run_id = '{run_id}'")
            if versions:
                registered = f"{register_as}/{max(int(v.version) for v in versions)}"
                self.set_tags(run_id, {"hpsearch.model_logged": "true", "hpsearch.registered_model": registered})
                return registered
        elif done.get("hpsearch.model_logged") == "true":
            return ""
        with _fluent_uri(self.mlflow, self.uri), self.mlflow.start_run(run_id=run_id), _registry_quiet(register_as):
            import mlflow.pyfunc

            info = mlflow.pyfunc.log_model(
                name="model", python_model=python_model, artifacts={k: str(v) for k, v in artifacts.items()},
                input_example=input_example, signature=signature, code_paths=code_paths,
                registered_model_name=register_as,
                # Explicit requirements: inferring them imports the model in a subprocess (slow).
                pip_requirements=pip_requirements,
            )
        if not register_as:
            self.set_tags(run_id, {"hpsearch.model_logged": "true"})
            return ""
        registered = f"{register_as}/{info.registered_model_version}"
        self.set_tags(run_id, {"hpsearch.model_logged": "true", "hpsearch.registered_model": registered})
        return registered

    @_patient
    def find_child(self, parent_id: str, trial_id: str) -> str | None:
        """The run of trial `trial_id` under `parent_id`, if one was made (by a call that may have
        timed out after the store had done it)."""
        runs = self._trial_runs(parent_id, trial_id)
        return runs[0].info.run_id if runs else None

    def _trial_runs(self, parent_id: str, trial_id: str) -> list:
        """The runs of trial `trial_id` under `parent_id`, earliest first (the one a trial keeps)."""
        return self.client.search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}' and "
                                       f"tags.`{TRIAL_TAG}` = '{trial_id}'", max_results=50,
                                       order_by=["attributes.start_time ASC"])

    def has_run(self, run_id: str) -> bool:
        """Whether this store holds `run_id` (a resumed study may have moved to another store)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException as e:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(e, "error_code", "")) or "not found" in str(e).lower():
                return False
            raise

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
                                          run.data.tags.get("hpsearch.status", "running"),
                                          ended=run.info.status != "RUNNING")
        return children
