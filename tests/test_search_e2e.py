"""A real tiny search: Ray, Optuna TPE, ASHA and MLflow on a slice of real Fashion-MNIST,
then the exported best.yaml retrained with `search.train`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from search.results.best_config import BestConfig
from tests.conftest import REPO, run_module

pytestmark = pytest.mark.slow
SAMPLES, EPOCHS = 4, 2
LATENCY_LIMIT_MS = 1000  # far above any network here: the limit's plumbing, not a choice it changes


def hpsearch(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """The `hpsearch` command as a user runs it: the console script beside this Python (pip
    install -e . puts it there), else the same dispatcher as `python -m search`."""
    script = Path(sys.executable).parent / "hpsearch"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "search"]
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def study(data_root, tmp_path_factory):
    """The quick start, `hpsearch run fashion_space --smoke`, with a few more trials and epochs, a
    model registered and a latency limit: one search that the tests below share."""
    results = tmp_path_factory.mktemp("results")
    proc = hpsearch("run", "fashion_space", "--smoke", "--samples", str(SAMPLES), "--max-epochs", str(EPOCHS),
                    "--name", "tiny", "--results-dir", str(results), "--data-dir", str(data_root),
                    "--tracking-uri", f"sqlite:///{results / 'mlflow.db'}",
                    "--register-model", "tiny-cnn", "--max-latency-ms", str(LATENCY_LIMIT_MS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return results, proc


def test_the_quick_start_prints_only_what_a_user_asked_for(study):
    """No warning, traceback or progress bar (carriage returns) from any library, no NaN, every
    line short enough for a terminal, and the output ends with the next commands for this study."""
    results, proc = study
    assert proc.stderr == "", proc.stderr
    out = proc.stdout
    for noise in ("Traceback", "Warning", "warning:", "\r", "\033"):
        assert noise not in out, (noise, out)
    assert not re.search(r"\bnan\b", out, re.IGNORECASE), out
    assert all(len(line) <= 100 for line in out.splitlines()), [line for line in out.splitlines() if len(line) > 100]
    lines = out.splitlines()
    assert lines[0].startswith("study tiny: 4 trials x up to 2 epochs")
    assert "top 4 trials by val_accuracy:" in lines and f"results in {results / 'tiny'}/" in lines
    assert lines[-4:] == ["next:", f"  hpsearch report tiny --results-dir {results}",
                          f"  mlflow ui --backend-store-uri sqlite:///{results / 'mlflow.db'}",
                          f"  hpsearch predict tiny IMAGE --results-dir {results}"]


def test_outputs_and_progress(study):
    results, proc = study
    folder = results / "tiny"
    for name in ("best.yaml", "trials.parquet", "trials.csv", "model.pt", "confusion_matrix.csv"):
        assert (folder / name).is_file(), name
    # A line per trial as it ends or pauses at a rung (pause-and-promote), one more when promoted.
    named = {line.split()[2] for line in proc.stdout.splitlines() if line.startswith("[") and "] trial_" in line}
    assert named == {f"trial_{i:03d}" for i in range(1, SAMPLES + 1)}
    assert f"top {SAMPLES} trials by val_accuracy:" in proc.stdout
    table = pd.read_parquet(folder / "trials.parquet")
    assert len(table) == SAMPLES
    # 4 trials at the quarter-epoch rung: the best goes on; with no new trial to come the best of
    # the next rung goes on too (to the end); the rest are left paused.
    assert set(table["status"]) <= {"completed", "paused", "diverged"} and "paused" in set(table["status"])
    assert table["promotions"].sum() >= 1 and (table["status"] == "completed").sum() >= 1
    assert table["val_accuracy"].is_monotonic_decreasing
    assert (pd.read_csv(folder / "trials.csv")["trial"] == table["trial"]).all()
    # Tune's own CSV and JSON results per trial (resume and the trials table read them), no TensorBoard files.
    tune_dir = folder / "tune"
    assert len(list(tune_dir.glob("*/progress.csv"))) == len(list(tune_dir.glob("*/result.json"))) == SAMPLES
    assert not list(tune_dir.rglob("events.out.tfevents*"))
    # Every trial with a whole epoch measured its latency, within the limit: it fits.
    whole = table["epochs"] >= 1
    assert (table.loc[whole, "latency_ms_b1"] > 0).all() and table.loc[whole, "fits"].all()
    assert table.loc[~whole, "latency_ms_b1"].isna().all() and not table.loc[~whole, "fits"].any()


def test_the_optuna_store_holds_every_trial_with_its_fidelity(study):
    from optuna.trial import TrialState

    from search.results.optuna_store import Store

    results, _ = study
    table = pd.read_parquet(results / "tiny" / "trials.parquet").set_index("trial_id")
    stored = Store.in_study_folder(results / "tiny", "tiny").load().trials
    assert len(stored) == SAMPLES and all(t.state != TrialState.RUNNING for t in stored)
    for t in stored:
        row = table.loc[t.user_attrs["tune_trial_id"]]
        assert t.user_attrs["epochs_seen"] == pytest.approx(row["epochs_seen"])
        # Finished every epoch: COMPLETE with its best score; left paused at a rung: PRUNED.
        assert t.state == (TrialState.COMPLETE if row["epochs_seen"] >= EPOCHS else TrialState.PRUNED)
        assert t.user_attrs.get("paused", False) == (row["status"] == "paused")
        assert t.user_attrs["best_score"] == pytest.approx(row["val_accuracy"])


def test_best_yaml_and_test_accuracy(study):
    results, _ = study
    best = BestConfig.load(results / "tiny" / "best.yaml")
    table = pd.read_parquet(results / "tiny" / "trials.parquet")
    # The best trial with a whole epoch (a trial paused after a quarter epoch may score higher).
    top = table[table["best_epoch"] >= 1].iloc[0]
    assert best.search["best_trial"] == top["trial"]
    assert best.metrics["val_accuracy"] == pytest.approx(top["val_accuracy"])
    assert best.epochs == top["best_epoch"]
    assert best.search["trials"] == SAMPLES
    # 3,000 images for at most 2 epochs: far from the full figure, but clearly better than chance (0.1).
    assert best.metrics["test_accuracy"] > 0.6
    assert len(best.per_class_accuracy) == 10
    assert best.versions["ray"].startswith("2.60") and best.versions["optuna"].startswith("5.0")


def test_mlflow_parent_and_child_runs(study):
    from mlflow.tracking import MlflowClient

    results, _ = study
    best = BestConfig.load(results / "tiny" / "best.yaml")
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([best.mlflow["experiment_id"]], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == best.mlflow["parent_run_id"]]
    assert len(parents) == 1 and parents[0].info.run_id == best.mlflow["parent_run_id"]
    parent = parents[0]
    assert parent.data.tags["hpsearch.space"] == "fashion_space"
    assert parent.data.params["samples"] == str(SAMPLES)
    # --final continue (the default) without a time budget (--samples given) is a retrain.
    assert parent.data.params["precision"] == "auto" and parent.data.params["final"] == "continue"
    assert parent.data.params["scheduler"] == "promotion"
    assert float(parent.data.params["max_latency_ms"]) == LATENCY_LIMIT_MS
    assert parent.data.tags["hpsearch.final"] == "retrain"
    assert parent.data.metrics["test_accuracy"] == pytest.approx(best.metrics["test_accuracy"])
    assert "hpsearch.version.torch" in parent.data.tags and "hpsearch.git_commit" in parent.data.tags
    # MLflow's own provenance tags, which its UI shows as Source and Git Commit, on every run.
    for run in (parent, *children):
        assert run.data.tags["mlflow.source.name"] == "hpsearch run" and run.data.tags["mlflow.source.type"] == "LOCAL"
        assert run.data.tags["mlflow.source.git.commit"] == parent.data.tags["hpsearch.git_commit"]
    assert len(children) == SAMPLES
    assert {c.info.run_name for c in children} == {f"trial_{i:03d}" for i in range(1, SAMPLES + 1)}
    for child in children:
        assert child.data.tags["hpsearch.status"] in {"completed", "paused", "diverged"}
        assert "conv_layers" in child.data.params and "lr" in child.data.params
        assert "precision" not in child.data.params  # a run setting, never a hyperparameter
        assert child.data.tags["hpsearch.numerics"].endswith("+channels_last")
        assert float(child.data.tags["hpsearch.epochs_seen"]) >= 0.25
        epochs = int(child.data.tags["hpsearch.epochs"])
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))
        # The latency, measured once after the first whole epoch, is logged once, at that epoch.
        for name in ("latency_ms_b1", "latency_ms_b256"):
            latency = client.get_metric_history(child.info.run_id, name)
            assert [m.step for m in latency] == ([1] if epochs else []) and all(m.value > 0 for m in latency)
    assert [c.data.tags.get("hpsearch.best") for c in children].count("true") == 1
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best.yaml", "trials.csv", "confusion_matrix.csv"} <= artifacts
    models = client.search_logged_models(experiment_ids=[best.mlflow["experiment_id"]],
                                         filter_string=f"source_run_id = '{parent.info.run_id}'")
    assert len(models) == 1
    import mlflow

    # MLflow's fluent API, as a user loads the model; set_tracking_uri also writes MLFLOW_TRACKING_URI
    # into os.environ, which conftest's _environment_restored puts back after the test.
    mlflow.set_tracking_uri(client.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{models[0].model_id}")
    # A pyfunc model taking raw images of any size: no input schema to refuse them; its example is
    # two raw test images, and it answers with a class and probabilities.
    assert info.signature.inputs is None and info.flavors["python_function"]["code"] == "code"
    assert {"class", "probability"} <= set(info.signature.outputs.input_names())
    import numpy as np

    answer = mlflow.pyfunc.load_model(f"models:/{models[0].model_id}").predict(np.zeros((2, 40, 30, 3), np.uint8))
    assert len(answer) == 2 and answer["probability"].between(0, 1).all()
    # --register-model with the default SQLite store: version 1 of the name, from the study's run.
    (version,) = client.search_model_versions("name = 'tiny-cnn'")
    assert int(version.version) == 1 and version.run_id == parent.info.run_id
    assert parent.data.tags["hpsearch.registered_model"] == "tiny-cnn/1"


def test_search_train_round_trip(study, data_root):
    results, _ = study
    best = BestConfig.load(results / "tiny" / "best.yaml")
    proc = run_module("search.train", str(results / "tiny" / "best.yaml"), "--smoke", "--name", "again",
                      "--results-dir", str(results), "--data-dir", str(data_root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = BestConfig.load(results / "again" / "best.yaml")
    assert again.hyperparameters == best.hyperparameters and again.epochs == best.epochs
    # Same configuration, seed, data slice and epochs: the same model, so the same score.
    assert again.metrics["test_accuracy"] == pytest.approx(best.metrics["test_accuracy"], abs=0.01)
    assert (results / "again" / "model.pt").is_file()
    from mlflow.tracking import MlflowClient

    retrain = MlflowClient(f"sqlite:///{results / 'mlflow.db'}").get_run(again.mlflow["retrain_run_id"])
    assert retrain.data.tags["mlflow.source.name"] == "search.train" and retrain.data.tags["hpsearch.kind"] == "retrain"


def test_final_checkpoint_is_the_best_trials_own_weights(data_root, tmp_path):
    import torch

    proc = run_module("search.run", "fashion_space", "--smoke", "--samples", "2", "--max-epochs", "2",
                      "--final", "checkpoint", "--name", "ckpt", "--results-dir", str(tmp_path),
                      "--data-dir", str(data_root), "--precision", "fp32")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "best trial's own weights" in proc.stdout
    best = BestConfig.load(tmp_path / "ckpt" / "best.yaml")
    assert best.final["mode"] == "checkpoint" and best.final["numerics"] == "fp32+channels_last"
    table = pd.read_parquet(tmp_path / "ckpt" / "trials.parquet")
    top = table[table["trial"] == best.search["best_trial"]].iloc[0]
    assert best.epochs == top["best_epoch"] and best.schedule_epochs == 2
    saved = torch.load(tmp_path / "ckpt" / "model.pt", weights_only=True)
    assert saved["final"]["mode"] == "checkpoint"
    checkpoints = [torch.load(p, weights_only=True) for p in (tmp_path / "ckpt" / "tune").glob(
        f"*{top['trial_id']}*/checkpoint_*/checkpoint.pt")]
    (state,) = [c for c in checkpoints if c["epoch"] == best.epochs]
    for name, tensor in saved["state_dict"].items():
        torch.testing.assert_close(tensor, state["model"][name], msg=name)


def test_a_time_budget_stops_the_search_on_plan_and_stretches_the_final(data_root, tmp_path):
    """`--time-budget`: the search (pause-and-promote, more samples than fit) stops at its share
    of the budget, counted from the command's start, and says so; trials it ended are named as
    the budget's, not the scheduler's; the best trial's checkpoint trains on for the time left
    (continue)."""
    # More samples than any machine trains in the search's share (a fast one trained 50 of these
    # smoke trials in 45 s and the budget never stopped anything); 1.5 minutes: 45 s of search, then
    # a final phase with time to train on after its fixed costs.
    proc = run_module("search.run", "fashion_space", "--smoke", "--samples", "1000", "--max-epochs", "4",
                      "--time-budget", "1.5", "--name", "budget", "--results-dir", str(tmp_path),
                      "--data-dir", str(data_root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    stopped = json.loads((tmp_path / "budget" / "tune" / "budget.json").read_text())
    assert stopped["final"] == "continue" and stopped["stopped_search_after_s"] >= 45  # half of 1.5 minutes
    table = pd.read_parquet(tmp_path / "budget" / "trials.parquet")
    assert len(table) < 1000 and "stopped_early" not in set(table["status"])
    assert set(table["status"]) <= {"completed", "paused", "stopped_by_budget", "diverged"}
    best = BestConfig.load(tmp_path / "budget" / "best.yaml")
    # Normally the chosen trial trained on for the time left; with no whole epoch to continue, its
    # configuration afresh; on a machine too slow for even that, its own weights; with the reason.
    assert best.final["mode"] == "continue" or (best.final["mode"] in ("stretch", "checkpoint") and best.final["note"])
    if best.final["mode"] == "continue":  # the trial's epochs, then more; the schedule's horizon is all of them
        start = best.final["continued_from_epoch"]
        assert start >= 1 and best.epochs > start and best.schedule_epochs == best.epochs
        assert f"on from its epoch {start}" in proc.stdout
    if best.final["mode"] == "stretch":  # its schedule's horizon is the epochs it trained
        assert best.epochs >= 1 and best.schedule_epochs == best.epochs
