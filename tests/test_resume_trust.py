"""Resumes that wrote into another study, made a silent new store, or hung (issue 20, items 2 and
3), on a real killed search: a TPE study (Ray, Optuna's store, ASHA, MLflow) on a slice of real
Fashion-MNIST, its driver SIGKILLed mid-search. Each test resumes a copy of that folder, as a
user copies a study to try something, or damages the copy as a crash or a full disk would."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import optuna
import pytest

from tests.chaos import epochs_done, kill_tree, recorded_trials, start_search, wait_for
from tests.conftest import run_module

NAME = "killed"


def args(results: Path, data_root: Path, name: str = NAME) -> list[str]:
    return ["fashion_space", "--smoke", "--samples", "4", "--max-epochs", "3", "--name", name,
            "--results-dir", str(results), "--data-dir", str(data_root)]


@pytest.fixture(scope="module")
def killed(data_root, tmp_path_factory) -> tuple[Path, Path]:
    """(results root, the folder) of a TPE study whose driver was killed with trials unfinished;
    kept as it was killed: each test works on a copy."""
    results = tmp_path_factory.mktemp("results")
    proc = start_search(*args(results, data_root))
    folder = results / NAME
    try:
        # Killed once Tune has saved its state with the searcher's (what --resume restores).
        wait_for(lambda: epochs_done(folder) >= 3 and any((folder / "tune").glob("searcher-state-*.pkl")), 600,
                 "a few epochs and Tune's saved state")
    finally:
        kill_tree(proc)
    assert not (folder / "best.yaml").exists() and (folder / "optuna.db").is_file()
    template = tmp_path_factory.mktemp("template") / NAME
    shutil.copytree(folder, template, symlinks=True)
    return results, template


def fresh(killed, name: str) -> tuple[Path, Path]:
    """(the killed study, a copy of it beside it named `name`), both as the driver left them."""
    results, template = killed
    original = results / NAME
    if original.exists():
        shutil.rmtree(original)
    shutil.copytree(template, original, symlinks=True)
    copy = results / name
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(template, copy, symlinks=True)
    return original, copy


def stored(folder: Path) -> list[tuple[int, str]]:
    """(number, state) of every trial in a folder's own optuna.db, read as a viewer reads it."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}", skip_table_creation=True,
                                         skip_compatibility_check=True)
    study = optuna.load_study(study_name=NAME, storage=storage)
    return [(t.number, t.state.name) for t in study.get_trials(deepcopy=False)]


def one_line(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def test_a_copied_study_resumes_into_its_own_store_and_mlflow_run(killed, data_root):
    original, copy = fresh(killed, "copy")
    results = original.parent
    before = stored(original)
    rungs = (original / "tune" / "asha-rungs.json").read_bytes() if (original / "tune" / "asha-rungs.json").exists() \
        else None
    parent, children, count = recorded_trials(results, NAME)
    epochs_before = {name: steps for name, (_, steps, _) in children.items()}

    resumed = run_module("search.run", *args(results, data_root, "copy"), "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "is a copy of the study in" in resumed.stdout, resumed.stdout
    # The original is as the driver left it: its store, its ASHA rungs, its MLflow run.
    assert stored(original) == before
    if rungs is not None:
        assert (original / "tune" / "asha-rungs.json").read_bytes() == rungs
    _, children, after = recorded_trials(results, NAME)
    assert after == count and {name: steps for name, (_, steps, _) in children.items()} == epochs_before
    # The copy finished in its own store and under an MLflow run of its own.
    assert len(stored(copy)) >= 4 and all(state != "RUNNING" for _, state in stored(copy))
    copy_state = json.loads((copy / "study.json").read_text())
    assert copy_state["parent_run_id"] not in ("", parent.info.run_id)
    assert (copy_state["results_root"], copy_state["name"]) == (str(results), "copy")
    assert recorded_trials(results, "copy")[2] == 4

    # The original still resumes, in its own store, as if the copy had never run.
    again = run_module("search.run", *args(results, data_root), "--resume", timeout=600)
    assert again.returncode == 0 and "UpdateFinishedTrialError" not in again.stderr, again.stdout + again.stderr
    assert "is a copy" not in again.stdout
    assert len(stored(original)) >= 4 and recorded_trials(results, NAME)[0].info.run_id == parent.info.run_id


@pytest.mark.parametrize("damage", ["deleted", "truncated", "not sqlite"])
def test_a_resume_whose_store_is_missing_or_damaged_is_one_line_before_ray_starts(killed, data_root, damage):
    original, copy = fresh(killed, f"damaged-{damage.replace(' ', '-')}")
    before = stored(original)
    db = copy / "optuna.db"
    if damage == "deleted":
        db.unlink()
    elif damage == "truncated":  # `truncate -s 8192 optuna.db`
        with db.open("r+b") as f:
            f.truncate(8192)
    else:
        db.write_bytes(b"not a database at all" * 100)
    listing = sorted(p.name for p in copy.iterdir())
    started = time.monotonic()
    proc = run_module("search.run", *args(copy.parent, data_root, copy.name), "--resume", timeout=240)
    one_line(proc, f"cannot resume {copy.name}: ", "start a new study with another --name")
    assert time.monotonic() - started < 120  # refused before the data loads and Ray starts
    assert ("is missing" if damage == "deleted" else "damaged") in proc.stderr
    assert sorted(p.name for p in copy.iterdir()) == listing  # no new, empty store made
    assert stored(original) == before  # and nothing written into the original's


def test_a_searcher_state_tune_cannot_restore_ends_the_run_in_one_line(killed, data_root):
    original, copy = fresh(killed, "unrestorable")
    for state in (copy / "tune").glob("searcher-state-*.pkl"):
        state.write_bytes(state.read_bytes()[:20])  # cut short, as a crash mid-write leaves it
    proc = run_module("search.run", *args(copy.parent, data_root, copy.name), "--resume", timeout=300)
    one_line(proc, f"cannot restore the search in {copy}", "start a new study with another --name")
