"""MLflow's basic-auth server, as the cluster files run it: hpsearch gets in with the credentials in
the tracking URI (or MLflow's variables), and without them is stopped before any training with one
line that says how to give them."""

from __future__ import annotations

import mlflow
import pytest

from search.tracking.tracker import Tracker
from search.util.credentials import adopt_credentials
from tests.chaos import MlflowServer
from tests.conftest import run_module, user_error
from tests.test_cli import assert_user_error

PASSWORD = "s3cret-for-this-test-only"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), admin_password=PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def no_credentials(monkeypatch):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_credentials_the_server_refuses_and_hpsearch_says_how_to_log_in(auth_server, no_credentials):
    with user_error(r"asks for a login \(HTTP 401\); pass --tracking-uri as http://USER:PASSWORD@HOST:PORT"):
        Tracker(auth_server.uri, "refused")
    no_credentials.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    no_credentials.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with user_error("user 'admin' was refused"):
        Tracker(auth_server.uri, "refused")


def test_credentials_in_the_uri_log_in_and_are_not_kept_in_it(auth_server, no_credentials):
    uri = adopt_credentials(auth_server.uri.replace("http://", f"http://admin:{PASSWORD}@"))
    assert uri == auth_server.uri
    tracker = Tracker(uri, "allowed")
    run_id = tracker.start_run("parent", {"lr": 0.01}, {"hpsearch.kind": "study"})
    tracker.log_metrics(run_id, {"val_accuracy": 0.5}, step=1)
    tracker.end_run(run_id)
    run = mlflow.tracking.MlflowClient(uri).get_run(run_id)  # the variables adopt_credentials set
    assert run.data.metrics["val_accuracy"] == 0.5 and run.data.params["lr"] == "0.01"


def test_a_search_without_credentials_stops_before_training(auth_server, tmp_path):
    proc = run_module("search.run", "fashion_space", "--smoke", "--tracking-uri", auth_server.uri,
                      "--results-dir", str(tmp_path), "--name", "refused",
                      env={"MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": ""}, timeout=120)
    assert_user_error(proc, f"MLflow tracking server {auth_server.uri}: it asks for a login")
    assert not (tmp_path / "refused").exists()
