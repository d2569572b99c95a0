"""The study's Optuna store (search.tune.searcher): what the searcher writes as trials run and end,
and that a resumed searcher continues the same study. Driven through the searcher's own Tune
hooks, without Ray running trials; the end-to-end search writing it is in tests/test_search_e2e.py."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.trial import TrialState

from search.results.optuna_store import STEPS_PER_EPOCH, Store, check_new_store
from search.tune.searcher import resuming_in
from search.tune.tuner import make_plan, make_searcher
from spaces.registry import get_study
from tests.conftest import run_cli_here
from tests.test_train import toy_data
from trainables.errors import UserError


def searcher_in(folder, name="s", max_epochs=4):
    plan = make_plan(get_study("fashion_space"), cluster_cpus=2, cluster_gpus=0, gpus=0, samples=None,
                     max_epochs=max_epochs, time_budget_min=None, seed=0)
    return make_searcher(get_study("fashion_space"), plan, toy_data(), Store.in_study_folder(folder, name)).searcher


def run_trial(searcher, tid, epochs, scores, failed=False):
    assert searcher.suggest(tid) is not None
    for epoch, score in zip(epochs[:-1], scores[:-1]):
        searcher.on_trial_result(tid, {"val_accuracy": score, "epochs_seen": epoch, "training_iteration": 1})
    last = {"val_accuracy": scores[-1], "epochs_seen": epochs[-1]}  # Tune gives the last result to complete
    if failed:
        last = {"val_accuracy": 0.0, "failed": 1.0, "error": "Traceback...\nRuntimeError: out of memory",
                "epochs_seen": epochs[-1]}
    searcher.on_trial_complete(tid, last)


def test_finished_stopped_and_failed_trials_are_recorded_with_their_fidelity(tmp_path):
    searcher = searcher_in(tmp_path)
    run_trial(searcher, "a", [0.25, 1, 2, 3, 4], [0.5, 0.7, 0.8, 0.82, 0.85])  # all 4 epochs, best the last
    run_trial(searcher, "b", [0.25, 1, 2], [0.4, 0.6, 0.55])  # ASHA stopped it after two epochs
    run_trial(searcher, "c", [0.25], [0.1], failed=True)
    trials = {t.user_attrs["tune_trial_id"]: t for t in Store.in_study_folder(tmp_path, "s").load().trials}
    a, b, c = trials["a"], trials["b"], trials["c"]
    assert a.state == TrialState.COMPLETE and a.value == 0.85
    assert a.user_attrs["best_epochs"] == 4 and a.user_attrs["epochs_seen"] == 4
    assert a.intermediate_values[int(0.25 * STEPS_PER_EPOCH)] == 0.5 and a.last_step == 4 * STEPS_PER_EPOCH
    assert b.state == TrialState.PRUNED and b.user_attrs["epochs_seen"] == 2 and b.last_step == 2 * STEPS_PER_EPOCH
    assert b.user_attrs["best_score"] == 0.6 and b.user_attrs["best_epochs"] == 1  # its best epoch, not its last
    assert c.state == TrialState.FAIL and c.user_attrs["error"] == "RuntimeError: out of memory"
    study = Store.in_study_folder(tmp_path, "s").load()
    assert study.user_attrs["hpsearch.max_epochs"] == 4 and study.user_attrs["hpsearch.metric"] == "val_accuracy"


def test_a_restored_searcher_continues_the_stored_study(tmp_path):
    searcher = searcher_in(tmp_path)
    as_built = pickle.dumps(searcher)  # what tuner.pkl holds
    run_trial(searcher, "a", [1, 2, 3, 4], [0.6, 0.7, 0.8, 0.82])
    searcher.suggest("b")
    searcher.on_trial_result("b", {"val_accuracy": 0.5, "epochs_seen": 1})
    state = tmp_path / "searcher.pkl"
    searcher.save(str(state))
    searcher.suggest("lost")  # asked after Tune's last save: dies with the driver
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("optuna.db", "optuna.db-wal", "optuna.db-shm"):  # the study folder moved, write-ahead log too
        if (tmp_path / name).exists():
            (tmp_path / name).rename(moved / name)

    resuming_in(moved)
    try:
        restored = pickle.loads(as_built)  # Tune unpickles the tuner's searcher, then restores its state
        restored.restore(str(state))
    finally:
        resuming_in(None)  # other tests unpickle without resuming
    assert restored.store.url.endswith("moved/optuna.db")
    restored.on_trial_result("b", {"val_accuracy": 0.75, "epochs_seen": 2})
    restored.on_trial_complete("b", {"val_accuracy": 0.75, "epochs_seen": 4})
    assert restored.suggest("c") is not None
    trials = {t.user_attrs.get("tune_trial_id"): t for t in Store.in_study_folder(moved, "s").load().trials}
    assert trials["b"].state == TrialState.COMPLETE
    assert trials["b"].intermediate_values == {100: 0.5, 200: 0.75, 400: 0.75}
    assert trials["lost"].state == TrialState.FAIL  # not left RUNNING forever
    assert trials["c"].state == TrialState.RUNNING and len(trials) == 4


def test_start_points_enter_the_store_only_as_they_are_proposed(tmp_path):
    """A study stopped (--samples 1) before its second start point leaves nothing WAITING in the store."""
    searcher = searcher_in(tmp_path)
    points = searcher._start_points.copy()  # fashion_space's two, in order
    assert len(points) == 2 and Store.in_study_folder(tmp_path, "s").load().trials == []
    run_trial(searcher, "a", [1, 2, 3, 4], [0.6, 0.7, 0.8, 0.82])
    (first,) = Store.in_study_folder(tmp_path, "s").load().trials
    assert first.state == TrialState.COMPLETE and first.params.items() <= points[0].items()
    assert searcher.suggest("b") is not None
    second = Store.in_study_folder(tmp_path, "s").load().trials[1]
    assert second.state == TrialState.RUNNING and second.params.items() <= points[1].items()
    assert second.params != first.params
    assert searcher.suggest("c") is not None and searcher._start_points == []  # TPE's own from here


def test_a_new_study_does_not_join_another_of_its_name_in_a_shared_database(tmp_path):
    shared = f"sqlite:///{tmp_path / 'server.db'}"
    check_new_store(Store(shared, "fashion-1"))  # nothing there yet
    optuna.create_study(study_name="fashion-1", storage=shared)
    with pytest.raises(UserError, match="already has a study named 'fashion-1'"):
        check_new_store(Store(shared.replace("sqlite:///", "sqlite:////"), "fashion-1"))


def test_an_unreachable_database_is_one_line():
    with pytest.raises(UserError, match="cannot open the Optuna store|needs a database driver"):
        Store("postgresql://user:secret@127.0.0.1:9/optuna", "s").storage()


def test_a_renamed_study_folder_still_finds_its_study(tmp_path):
    searcher = searcher_in(tmp_path / "first", name="first")
    run_trial(searcher, "a", [1, 2, 3, 4], [0.6, 0.7, 0.8, 0.82])
    (tmp_path / "first").rename(tmp_path / "renamed")
    (tmp_path / "renamed" / "study.json").write_text('{"name": "renamed"}')
    study = Store.of_folder(tmp_path / "renamed").load(read_only=True)
    assert study.study_name == "first" and len(study.trials) == 1


def test_a_password_in_the_database_url_is_refused(tmp_path):
    proc = run_cli_here("search.run", "fashion_space", "--optuna-storage", "postgresql://me:secret@db/optuna",
                        "--results-dir", str(tmp_path))
    assert proc.returncode == 2 and "holds a password" in proc.stderr and "secret" not in proc.stderr


def test_the_folder_store_writes_ahead(tmp_path):
    """SQLite's write-ahead log, synced at checkpoints: Optuna commits once per suggested
    parameter, and with the default journal every commit waited for the disk (search.bench scale)."""
    engine = Store.in_study_folder(tmp_path, "s").storage().engine
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
