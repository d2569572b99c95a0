"""MLflow tracking: one parent run per study, one nested child run per trial.

All logging happens in the driver (a Tune callback), so trials never wait on the tracking
store and never need its credentials.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from ray import tune

from search.errors import UserError

PARENT_TAG = "mlflow.parentRunId"
EPOCH_METRICS = ("train_loss", "val_loss", "val_accuracy", "epoch_seconds")


def trial_status(epochs_done: int, max_epochs: int, diverged: bool, failed: bool) -> str:
    if failed:
        return "failed"
    if diverged:
        return "diverged"
    return "completed" if epochs_done >= max_epochs else "stopped_early"


def trial_name(number: int) -> str:
    """Trials are named by the order they started in: short and sortable."""
    return f"trial_{number:03d}"


def default_tracking_uri(results_root: Path) -> str:
    return f"sqlite:///{results_root.resolve() / 'mlflow.db'}"


def _check_server(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
    except requests.RequestException as e:
        raise UserError(f"MLflow tracking server {uri} is not reachable ({type(e).__name__}); "
                        "start it or pass another --tracking-uri") from None


class Tracker:
    """Thin wrapper over MlflowClient: explicit run ids, no global active-run state."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None):
        _check_server(uri)
        # MLflow and alembic log migrations and warnings at INFO; users want the search output.
        import mlflow

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                location = artifact_root.resolve().as_uri() if artifact_root is not None else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                self.experiment_id = found.experiment_id
        except Exception as e:  # noqa: BLE001 - any store failure here means the same to the user
            raise UserError(f"cannot use MLflow tracking store {uri}: {str(e).splitlines()[0]}") from None

    def start_run(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str],
                  parent_id: str | None = None) -> str:
        from mlflow.entities import Param

        tags = dict(tags)
        if parent_id is not None:
            tags[PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=items[start:start + 100])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def end_run(self, run_id: str, failed: bool = False) -> None:
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def log_artifact(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))

    def log_model(self, run_id: str, model, input_example, torch_version: str) -> None:
        with self.mlflow.start_run(run_id=run_id):
            self.mlflow.pytorch.log_model(
                model, name="model", input_example=input_example,
                # Explicit requirements: inferring them imports the model in a subprocess (slow).
                pip_requirements=[f"torch=={torch_version}"],
            )


class TrialLogger(tune.Callback):
    """Mirrors each Tune trial into a nested MLflow child run: params at start, metrics per
    epoch (step = epoch, so the UI draws learning curves), a status tag at the end."""

    def __init__(self, tracker: Tracker, parent_id: str, max_epochs: int, progress=None):
        self.tracker = tracker
        self.parent_id = parent_id
        self.max_epochs = max_epochs
        self.progress = progress
        self.run_ids: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.last: dict[str, dict] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.run_ids:
            return
        name = self.names[trial.trial_id] = trial_name(len(self.names) + 1)
        self.run_ids[trial.trial_id] = self.tracker.start_run(
            name, trial.config,
            {"hpsearch.trial_id": trial.trial_id, "hpsearch.status": "running"}, parent_id=self.parent_id,
        )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[trial.trial_id] = result
        metrics = {k: result[k] for k in EPOCH_METRICS if k in result}
        self.tracker.log_metrics(self.run_ids[trial.trial_id], metrics, step=int(result.get("epoch", 0)))
        if self.progress is not None:
            self.progress.on_result(self.names[trial.trial_id], result)

    def _finish(self, trial, failed: bool) -> None:
        result = self.last.get(trial.trial_id, {})
        status = trial_status(int(result.get("epoch", 0)), self.max_epochs, bool(result.get("diverged")), failed)
        run_id = self.run_ids.get(trial.trial_id)
        if run_id is not None:
            tags = {"hpsearch.status": status, "hpsearch.epochs": str(int(result.get("epoch", 0)))}
            if failed and trial.error_file and os.path.exists(trial.error_file):
                tags["hpsearch.error"] = Path(trial.error_file).read_text()[-4000:]
            self.tracker.set_tags(run_id, tags)
            self.tracker.end_run(run_id, failed=failed)
        if self.progress is not None:
            self.progress.on_finish(self.names.get(trial.trial_id, trial.trial_id), status, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, failed=True)
