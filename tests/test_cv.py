"""Cross-validation (`--cv K`): the folds (stratified, disjoint, covering, fixed by the seed), the
refusal of folds a class cannot fill, a CV epoch's scores as the mean of its folds' own, a
resumed CV trial continuing exactly, and one small search end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import run_cli_here, run_module, user_error
from tests.test_train import CFG, toy_data
from trainables.crossval import fold_scores, is_fold_metric, stratified_folds
from trainables.datasets import Dataset, DatasetInfo, TrainingData
from trainables.train import Batches, evaluate, fit

CLASSES = tuple(str(c) for c in range(10))


def labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)[np.random.default_rng(3).permutation(sum(counts))]


def test_folds_are_stratified_disjoint_covering_and_fixed_by_the_seed():
    y = labels([30, 17, 9, 5])
    of_row = stratified_folds(y, 4, ("a", "b", "c", "d"), seed=7)
    assert of_row.shape == y.shape and set(of_row) == {0, 1, 2, 3}  # each row in exactly one fold
    sizes = np.bincount(of_row)
    assert sizes.max() - sizes.min() <= 1
    for c in range(4):
        per_fold = np.bincount(of_row[y == c], minlength=4)
        assert per_fold.min() >= 1 and per_fold.max() - per_fold.min() <= 1, (c, per_fold)
    assert np.array_equal(of_row, stratified_folds(y, 4, ("a", "b", "c", "d"), seed=7))
    assert not np.array_equal(of_row, stratified_folds(y, 4, ("a", "b", "c", "d"), seed=8))


def test_dataset_folds_cover_the_training_data_and_train_on_the_rest():
    data = toy_data(n=200, with_val=False)
    dataset = Dataset(DatasetInfo("toy", "toy", CLASSES), data.train, data.train, "test")
    cv = dataset.for_cv(3, seed=0)
    assert cv.val is None and cv.train is dataset.train and cv.folds.k == 3
    vals = [cv.folds.val_rows(k) for k in range(3)]
    assert np.array_equal(np.sort(np.concatenate(vals)), np.arange(len(dataset.train)))
    for k in range(3):
        assert not set(cv.folds.train_rows(k)) & set(vals[k])
        assert len(cv.folds.train_rows(k)) + len(vals[k]) == len(dataset.train)
    # Each fold's network normalises with statistics of the rows it trains on.
    rows = cv.folds.train_rows(1)
    assert cv.folds.stats[1][0][0] == pytest.approx(dataset.train.x[rows].mean() / 255.0)


@pytest.mark.parametrize("counts, k, match", [
    ([10, 10, 2], 3, r"class '2' has 2 training examples, fewer than the 3 folds.*; pass --cv 2 or less"),
    ([10, 1, 10], 3, r"class '1' has 1 training example, fewer .*add examples of it or leave cross-validation off"),
    ([10, 10], 1, r"at least 2 folds, got 1; pass --cv 2 or more"),
])
def test_folds_a_class_cannot_fill_are_refused_in_one_line(counts, k, match):
    with user_error(match) as info:
        stratified_folds(labels(counts), k, tuple(str(c) for c in range(len(counts))), seed=0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("args, fragment", [
    (("--cv", "1"), "at least 2 folds, got 1; pass --cv 2 or more"),
    (("--cv", "3", "--final", "checkpoint"), "under --cv 3 a trial has 3 networks"),
])
def test_cli_refuses_in_one_line(tmp_path, args, fragment):
    proc = run_cli_here("search.run", "tabular_csv_space", *args, "--results-dir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and fragment in proc.stderr, proc.stderr


def test_a_cv_epoch_reports_the_mean_of_its_folds():
    base = toy_data(n=180, with_val=False)
    dataset = Dataset(DatasetInfo("toy", "toy", CLASSES), base.train, base.train, "test")
    data = dataset.for_cv(3, seed=0)
    reports, snapshots = [], []
    result = fit(CFG, data, epochs=2, seed=4, device=torch.device("cpu"),
                 on_epoch=lambda m, snap: (reports.append(m), snapshots.append(snap())))
    assert [m["epoch"] for m in reports] == [1, 2]
    last = reports[-1]
    folds = [last[f"val_accuracy_fold{k}"] for k in (1, 2, 3)]
    assert last["val_accuracy"] == pytest.approx(np.mean(folds))
    assert last["val_accuracy_std"] == pytest.approx(np.std(folds))
    assert last["val_loss"] == pytest.approx(np.mean([last[f"val_loss_fold{k}"] for k in (1, 2, 3)]))
    # The per-fold scores are each fold network's own, on the rows it never trained on.
    state = snapshots[-1]
    assert len(state["folds"]) == 3 and state["epoch"] == 2
    for k, fold_state in enumerate(state["folds"]):
        fold_data = TrainingData(base.train, None, CLASSES, tuple(fold_state["mean"]), tuple(fold_state["std"]))
        twin = fit(CFG, fold_data, epochs=0, seed=4, device=torch.device("cpu")).model
        twin.load_state_dict(fold_state["model"])
        held_out = Batches(base.train, torch.device("cpu")).subset(data.folds.val_rows(k))
        assert evaluate(twin, held_out, 10).accuracy == pytest.approx(folds[k])
    assert not result.diverged


def test_a_resumed_cv_trial_continues_exactly(tmp_path):
    base = toy_data(n=150, with_val=False)
    data = Dataset(DatasetInfo("toy", "toy", CLASSES), base.train, base.train, "test").for_cv(2, seed=1)
    straight = fit(CFG, data, epochs=2, seed=5, device=torch.device("cpu"))
    first = []
    fit(CFG, data, epochs=1, seed=5, device=torch.device("cpu"), schedule_epochs=2,
        on_epoch=lambda m, snap: first.append(snap()))
    # Through a file, as a trial's checkpoint goes: tensors and plain types only.
    torch.save(first[-1], tmp_path / "checkpoint.pt")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    resumed = fit(CFG, data, epochs=2, seed=5, device=torch.device("cpu"), state=state)
    assert resumed.history[-1]["val_loss"] == pytest.approx(straight.history[-1]["val_loss"], rel=1e-5)
    assert resumed.history[-1]["val_accuracy_fold2"] == straight.history[-1]["val_accuracy_fold2"]


def test_a_diverged_fold_makes_the_epoch_diverged():
    ok = {"epoch": 1, "epochs_seen": 1.0, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9, "diverged": 0.0}
    bad = {**ok, "val_loss": float("nan"), "val_accuracy": 0.0, "diverged": 1.0}
    scores = fold_scores([ok, bad])
    assert scores["diverged"] == 1.0 and scores["val_accuracy"] == 0.0 and np.isnan(scores["val_loss"])
    assert is_fold_metric("val_accuracy_std") and is_fold_metric("val_loss_fold3")
    assert not is_fold_metric("val_accuracy") and not is_fold_metric("train_loss_std")


@pytest.mark.slow
def test_cv_search_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    n = 150
    a, b = rng.normal(size=n), rng.normal(size=n)
    pd.DataFrame({"a": a, "b": b, "label": np.where(a + b > 0, "yes", "no")}).to_csv(tmp_path / "small.csv",
                                                                                      index=False)
    proc = run_module("search.run", "tabular_csv_space", "--data-file", str(tmp_path / "small.csv"),
                      "--target", "label", "--cv", "3", "--smoke", "--samples", "2", "--max-epochs", "2",
                      "--results-dir", str(tmp_path), "--name", "cv", "--cpus", "2", "--quiet",
                      cwd=None)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = tmp_path / "cv"
    table = pd.read_csv(study / "trials.csv")
    assert {"val_accuracy", "val_accuracy_std", "val_loss_std"} <= set(table.columns)
    assert table["val_accuracy_std"].notna().any()
    history = pd.read_csv(study / "history.csv")
    assert {"val_accuracy_fold1", "val_accuracy_fold3"} <= set(history.columns)
    best = yaml.safe_load((study / "best.yaml").read_text())
    assert best["search"]["cv"] == 3
    assert json.loads((study / "study.json").read_text())["cv"] == 3
