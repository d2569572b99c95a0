from __future__ import annotations

import io
import threading
import time

import pytest

from search.results.records import TrialRecord, too_many_failures, trial_number_from_path
from search.tracking.delivery import DeliveryQueue, reconcile
from search.tracking.tracker import Tracker


class FakeStore(Tracker):
    """Stands in for nothing but the network: the queue is what is under test."""

    def __init__(self):
        pass


def quiet_queue(tracker) -> DeliveryQueue:
    return DeliveryQueue(tracker, retry_seconds=0.01, stream=io.StringIO())


def calls(n: int, delivered: list, down: threading.Event, first_gets_through: bool = False):
    """`n` tracking calls that record their index once delivered and fail as a store that is down
    does (the first one, optionally, just before it went down)."""
    attempts = []

    def call(i):
        def run():
            attempts.append(i)
            if down.is_set() and not (first_gets_through and len(attempts) == 1):
                raise ConnectionError("Connection refused")
            delivered.append(i)
        return run
    return [call(i) for i in range(n)]


def test_queue_waits_out_an_outage_and_keeps_order():
    delivered, outage = [], threading.Event()
    outage.set()
    queue = quiet_queue(FakeStore())
    for op in calls(5, delivered, outage, first_gets_through=True):
        queue.put(op)
    assert not queue.flush(timeout=0.3)  # the store is down: nothing after the first call gets through
    assert delivered == [0] and queue.pending() == 4
    outage.clear()
    assert queue.flush(timeout=5)
    assert delivered == [0, 1, 2, 3, 4] and not queue.undelivered
    queue.stop()


def test_queue_gives_up_on_a_call_the_store_refuses_and_goes_on():
    delivered = []

    def refused():
        raise ValueError("INVALID_PARAMETER_VALUE: param too long")

    queue = DeliveryQueue(FakeStore(), retry_seconds=0.01, stream=io.StringIO())
    queue.put(refused)
    queue.put(lambda: delivered.append("next"))
    assert queue.flush(timeout=5)
    assert delivered == ["next"] and len(queue.undelivered) == 1
    queue.stop()


@pytest.mark.parametrize("failed,finished,expect", [(2, 2, False), (3, 4, True), (2, 4, False), (5, 10, False),
                                                    (6, 10, True)])
def test_failure_budget(failed, finished, expect):
    assert too_many_failures(failed, finished, 0.5) is expect


def test_trial_number_from_a_tune_folder_name():
    name = "tune_trial_8d2c1a00_12_activation=relu,batch_norm=True_2026-11-22_00-27-16"
    assert trial_number_from_path(f"/results/x/tune/{name}", "8d2c1a00") == 12
    assert trial_number_from_path("/elsewhere", "8d2c1a00") is None


def test_reconcile_fills_only_what_mlflow_lacks(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "reconcile", tmp_path / "artifacts")
    parent = tracker.start_run("study", {}, {})
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.0 / e, "val_accuracy": 0.5 + e / 10,
                "epoch_seconds": 1.0} for e in (1, 2, 3)]
    known = tracker.start_run("trial_001", {"lr": 0.1}, {"hpsearch.trial_id": "a"}, parent_id=parent)
    tracker.log_metrics(known, {"val_accuracy": 0.6}, step=1)
    records = [TrialRecord("a", "trial_001", {"lr": 0.1}, history, "completed"),
               TrialRecord("b", "trial_002", {"lr": 0.2}, history[:1], "stopped_early"),
               TrialRecord("c", "trial_003", {"lr": 9.0}, [], "failed", "Traceback...\nRuntimeError: boom")]
    assert reconcile(tracker, parent, records) == 2 + 1
    assert reconcile(tracker, parent, records) == 0  # a second pass (a resume) adds nothing
    children = tracker.child_runs(parent)
    assert set(children) == {"a", "b", "c"}
    assert children["a"].steps == {1, 2, 3} and children["b"].steps == {1} and children["c"].steps == set()
    assert [children[k].status for k in "abc"] == ["completed", "stopped_early", "failed"]
    failed = tracker.client.get_run(children["c"].run_id)
    assert failed.info.status == "FAILED" and "RuntimeError: boom" in failed.data.tags["hpsearch.error"]


def test_every_run_carries_mlflows_own_provenance_tags(tmp_path):
    """The MLflow UI's Source, User and Git Commit, beside hpsearch's own tags: on a study's run,
    on a trial's run made live (the trial logger's call) and on one made afterwards (reconcile)."""
    import getpass
    import subprocess

    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

    from search.tracking.tracker import ChildRun
    from search.tracking.trial_logger import start_child
    from search.util.provenance import command_name
    from tests.conftest import REPO

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "provenance", tmp_path / "artifacts")
    parent = tracker.start_run("study", {}, {"hpsearch.kind": "study"})
    live = ChildRun("", "trial_001")
    start_child(tracker, parent, live, "a")()
    reconcile(tracker, parent, [TrialRecord("b", "trial_002", {"lr": 0.1}, [], "failed")])
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    for run_id in (parent, live.run_id, tracker.child_runs(parent)["b"].run_id):
        tags = tracker.client.get_run(run_id).data.tags
        assert tags[MLFLOW_SOURCE_TYPE] == "LOCAL" and tags[MLFLOW_SOURCE_NAME] == command_name() != ""
        assert tags[MLFLOW_USER] == getpass.getuser()
        assert tags.get(MLFLOW_GIT_COMMIT) == (git.stdout.strip() if git.returncode == 0 else None)
    assert tracker.client.get_run(parent).data.tags["hpsearch.kind"] == "study"
    assert tracker.client.get_run(live.run_id).data.tags["hpsearch.trial_id"] == "a"


def test_a_trial_stopped_inside_its_first_epoch_is_ranked_but_never_chosen():
    from search.results.trials_table import trials_table

    partial = {"epochs_seen": 0.25, "val_accuracy": 0.61, "val_loss": 1.2, "train_loss": 1.5}
    history = [{"epoch": 1, "val_accuracy": 0.7, "val_loss": 0.9, "train_loss": 1.0, "epoch_seconds": 2.0},
               {"epoch": 2, "val_accuracy": 0.7, "val_loss": 0.8, "train_loss": 0.9, "epoch_seconds": 2.0}]
    records = [TrialRecord("a", "trial_001", {"lr": 0.1}, history, "completed", numerics="fp32+channels_last"),
               TrialRecord("b", "trial_002", {"lr": 0.2}, [], "stopped_early", partials=[partial])]
    assert records[1].epochs == 0 and records[1].epochs_seen == 0.25 and records[0].epochs_seen == 2.0
    table = trials_table(records, "val_accuracy", "max", (1, 28, 28), 10)
    assert list(table["trial"]) == ["trial_001", "trial_002"]
    assert list(table["best_epoch"]) == [2, 0]  # the later of two tied epochs: the checkpoint Tune keeps
    assert list(table["epochs_seen"]) == [2.0, 0.25] and table["numerics"][0] == "fp32+channels_last"
    assert table["val_accuracy"][1] == 0.61


def test_hyperparameters_are_prefixed_columns_and_never_confused_with_metrics():
    from search.results.trials_table import config_columns, params, short_names, trials_table

    history = [{"epoch": 1, "val_accuracy": 0.7, "val_loss": 0.9, "train_loss": 1.0, "epoch_seconds": 2.0}]
    # A hyperparameter that shares a metric's name stays apart from it.
    records = [TrialRecord("a", "trial_001", {"lr": 0.1, "val_loss": "x"}, history, "completed"),
               TrialRecord("b", "trial_002", {"lr": 0.2, "dropout": 0.3}, history, "completed")]
    table = trials_table(records, "val_accuracy", "max", (1, 28, 28), 10)
    assert config_columns(table) == ["config/lr", "config/val_loss", "config/dropout"]
    assert table["val_loss"][0] == 0.9 and table["config/val_loss"][0] == "x"
    assert params(table.iloc[1]) == {"lr": 0.2, "dropout": 0.3}  # the absent val_loss left out
    assert params(table.iloc[0]) == {"lr": 0.1, "val_loss": "x"}
    assert {"lr", "dropout", "val_accuracy"} <= set(short_names(table).columns)


def test_the_tracker_leaves_the_environment_alone(tmp_path, monkeypatch):
    """MLflow's set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ; a Tracker must not,
    or every later subprocess (Ray workers, the next search) inherits this store."""
    import os

    import torch

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "env", tmp_path / "artifacts")
    run = tracker.start_run("final", {}, {})
    tracker.log_model(run, echo_model(), {}, torch.zeros(1, 2).numpy(), [])
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert tracker.client.get_run(run).info.run_id == run


def test_a_stopped_queue_sends_nothing_more():
    """At the end of a search the queue stops before `reconcile` writes what is missing: a call
    still queued and sent afterwards would write it twice."""
    delivered, down = [], threading.Event()
    down.set()
    queue = quiet_queue(FakeStore())
    for op in calls(3, delivered, down):
        queue.put(op)
    assert not queue.flush(timeout=0.2)
    assert queue.stop() == 3  # dropped: reconcile delivers them from Tune's results
    down.clear()  # the store comes back after the stop
    threading.Event().wait(0.2)
    assert delivered == [] and not queue.thread.is_alive()


def test_a_run_the_store_made_before_the_call_timed_out_is_not_made_twice(tmp_path):
    from search.tracking.tracker import ChildRun
    from search.tracking.trial_logger import start_child

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "idempotent", tmp_path / "artifacts")
    parent = tracker.start_run("study", {}, {})
    create = tracker.client.create_run
    calls = []

    def slow_answer(*args, **kwargs):  # the store does it, the answer never arrives
        run = create(*args, **kwargs)
        calls.append(run.info.run_id)
        if len(calls) == 1:
            raise TimeoutError("Read timed out")
        return run

    tracker.client.create_run = slow_answer
    child = ChildRun("", "trial_001")
    queue = DeliveryQueue(tracker, retry_seconds=0.01, stream=io.StringIO())
    queue.put(start_child(tracker, parent, child, "t1", {"lr": 0.1}))
    assert queue.flush(timeout=30)
    queue.stop()
    assert calls == [child.run_id]  # created once, found on the retry
    assert list(tracker.child_runs(parent)) == ["t1"]


class Trial:
    def __init__(self, status: str, failed: bool = False):
        self.status, self.last_result = status, {"epoch": 1, "failed": failed}


def test_the_failure_budget_of_a_resumed_search_counts_failures_mlflow_never_saw(tmp_path):
    from search.tracking.trial_logger import TrialLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = Tracker(uri, "budget", tmp_path / "artifacts").start_run("study", {}, {})
    logger = TrialLogger(uri, "budget", parent, max_epochs=3, total=8, metric="val_accuracy", mode="max")
    logger.setup()  # MLflow knows no trial at all: the store was down when they ended
    trials = [Trial("ERROR"), Trial("TERMINATED", failed=True), Trial("TERMINATED", failed=True),
              Trial("TERMINATED"), Trial("PENDING")]
    logger.on_step_begin(0, trials)
    assert (logger.finished, logger.failed, logger.over_budget) == (4, 3, True)
    logger.queue.stop()


def test_a_resumed_final_phase_registers_the_model_once(tmp_path):
    import torch

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "register", tmp_path / "artifacts")
    run = tracker.start_run("study", {}, {})
    example = torch.zeros(2, 4).numpy()
    first = tracker.log_model(run, echo_model(), {}, example, [], "toy-model")
    again = tracker.log_model(run, echo_model(), {}, example, [], "toy-model")
    assert first == again == "toy-model/1"
    assert len(tracker.client.search_model_versions("name = 'toy-model'")) == 1


def echo_model():
    """The smallest pyfunc model: its input back."""
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    return Echo()


def test_a_queue_behind_the_store_sends_each_runs_waiting_batches_as_one_call(tmp_path):
    """Catching up: a trial's params, metrics, tags and end, queued while the store was slow, go
    out as one log_batch and its end; other runs' calls in between keep their own order."""
    from search.tracking.delivery import Batch, RunCall
    from search.tracking.tracker import ChildRun
    from search.tracking.trial_logger import start_child

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "merge", tmp_path / "artifacts")
    parent = tracker.start_run("study", {}, {})
    batches = []
    log_batch = tracker.log_batch
    tracker.log_batch = lambda run_id, *args: (batches.append(run_id), log_batch(run_id, *args))
    slow = threading.Event()
    queue = quiet_queue(tracker)
    queue.put(slow.wait)  # the store is slow to answer: everything below waits behind this call
    a, b = ChildRun("", "trial_001"), ChildRun("", "trial_002")
    for child, tid in ((a, "ta"), (b, "tb")):
        queue.put(RunCall(child, start_child(tracker, parent, child, tid)))
        queue.put(Batch(child, params={"lr": 0.1, "tid": tid}))
    for step in (1, 2):
        for child in (a, b):
            queue.put(Batch(child, metrics=[("val_accuracy", 0.5 + step / 10, step), ("val_loss", 1.0 / step, step)]))
    queue.put(Batch(a, tags={"hpsearch.status": "completed"}, end="FINISHED"))
    slow.set()
    assert queue.flush(timeout=30)
    queue.stop()
    assert batches == [a.run_id, b.run_id]  # one call per run for everything it had waiting
    runs = tracker.child_runs(parent)
    assert runs["ta"].steps == {1, 2} and runs["tb"].steps == {1, 2} and runs["ta"].status == "completed"
    finished = tracker.client.get_run(a.run_id)
    assert finished.info.status == "FINISHED" and finished.data.params == {"lr": "0.1", "tid": "ta"}
    assert tracker.client.get_run(b.run_id).info.status == "RUNNING"


def test_a_create_the_rest_client_sent_twice_leaves_one_run_per_trial(tmp_path):
    """MLflow's REST client re-sends a create whose answer was lost (a server stopping mid-call);
    the store may have done both: the trial keeps its earliest run, the extra one is deleted."""
    from search.tracking.tracker import TRIAL_TAG

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "twice", tmp_path / "artifacts")
    parent = tracker.start_run("study", {}, {})
    create = tracker.client.create_run
    made = []

    def sent_twice(*args, **kwargs):
        made.append(create(*args, **kwargs).info.run_id)
        time.sleep(0.01)  # the resend comes later: start times differ
        run = create(*args, **kwargs)
        made.append(run.info.run_id)
        return run

    tracker.client.create_run = sent_twice
    run_id = tracker.start_run("trial_001", {"lr": 0.1}, {TRIAL_TAG: "t1"}, parent_id=parent)
    assert run_id == made[0] and len(made) == 2
    children = tracker.child_runs(parent)
    assert list(children) == ["t1"] and children["t1"].run_id == made[0]
    assert tracker.client.get_run(made[1]).info.lifecycle_stage == "deleted"
    assert tracker.client.get_run(run_id).data.params == {"lr": "0.1"}
    # A run that is not a trial's (the study's parent, a retrain) is left as made.
    tracker.client.create_run = create
    assert tracker.start_run("again", {}, {}, parent_id=parent) != run_id


def test_a_search_tracked_in_a_sqlite_file_of_its_own_keeps_its_artifacts_beside_that_file(tmp_path, monkeypatch):
    """MLflow's default artifact root for a SQLite store is ./mlruns under the current folder: a search
    run from the repository with --tracking-uri sqlite:///elsewhere.db wrote mlruns/ into it. A new
    experiment in any local SQLite file keeps them beside the file; a server keeps its own."""
    from search.tracking.tracker import artifact_root

    monkeypatch.chdir(tmp_path)
    assert artifact_root("sqlite:///relative/mlflow.db") == tmp_path / "relative" / "mlartifacts"
    assert artifact_root(f"sqlite:///{tmp_path}/store/other.db?timeout=30") == tmp_path / "store" / "mlartifacts"
    assert artifact_root("http://127.0.0.1:5000") is None and artifact_root("sqlite://") is None
    elsewhere, cwd = tmp_path / "store", tmp_path / "cwd"
    elsewhere.mkdir(exist_ok=True)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uri = f"sqlite:///{elsewhere / 'other.db'}"
    tracker = Tracker(uri, "artifacts", artifact_root(uri))
    run = tracker.start_run("parent", {}, {})
    (tmp_path / "best.yaml").write_text("x: 1\n")
    tracker.log_artifact(run, tmp_path / "best.yaml")
    assert list(cwd.iterdir()) == []
    assert list((elsewhere / "mlartifacts").rglob("best.yaml"))
