"""Warm starts (search.tune.warm): an old scikit-learn GridSearchCV's cv_results_ read through a mapping
file into fashion_space's terms, the refusals of sources that do not fit, and a searcher that
starts from earlier trials. The warm-started end-to-end study is in tests/test_report.py."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

from search.results.optuna_store import STEPS_PER_EPOCH, Store
from search.tune.tuner import make_plan, make_searcher
from search.tune.warm import FROM, grid_curve, load_sources, not_yet_evaluated, resolve
from spaces.registry import get_study
from spaces.study import SpaceContext
from tests.conftest import run_cli_here
from trainables.errors import UserError

SPACE = get_study("fashion_space")
CTX = SpaceContext((1, 28, 28), 10, 6_000_000)
MAPPING = """\
params:
  learning_rate_init: lr
  alpha: weight_decay
  batch_size: batch_size
  activation: {name: activation, values: {logistic: sigmoid}}
epochs: 5
"""


def old_grid(folder: Path) -> Path:
    """A real GridSearchCV's cv_results_, saved the way its users save it: a small MLP on
    scikit-learn's digits, 2 folds, 12 points (the parameter names are scikit-learn's, not ours)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    grid = GridSearchCV(MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0),
                        {"activation": ["relu", "logistic", "identity"], "learning_rate_init": [1e-3, 1e-2],
                         "batch_size": [32, 64], "alpha": [1e-4]}, cv=2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=5 does not converge: that is not the point here
        grid.fit(x[:300] / 16.0, y[:300])
    path = folder / "cv_results.csv"
    pd.DataFrame(grid.cv_results_).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def grid_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    (folder / "map.yaml").write_text(MAPPING)
    return old_grid(folder), folder / "map.yaml"


def test_an_old_grid_becomes_finished_trials_in_this_spaces_terms(grid_files):
    csv, mapping = grid_files
    source, = load_sources([csv], SPACE.define, CTX, "val_accuracy", "max", 10, mapping)
    table = pd.read_csv(csv)
    # "identity" has no counterpart in the space: those 4 points keep their other parameters.
    assert len(source.trials) == 12 and source.kind == "grid" and source.skipped == 0
    by_score = sorted(source.trials, key=lambda t: t.value)
    assert [t.value for t in by_score] == sorted(table["mean_test_score"])
    for t in source.trials:
        assert t.state == TrialState.COMPLETE and t.user_attrs[FROM] == "cv_results.csv"
        assert t.params["lr"] in (1e-3, 1e-2) and t.params["batch_size"] in (32, 64)
        assert t.params.get("activation", "relu") in ("relu", "sigmoid")  # logistic, renamed
        assert t.last_step == 5 * STEPS_PER_EPOCH and t.user_attrs["epochs_seen"] == 5
    assert sum("activation" not in t.params for t in source.trials) == 4


def test_the_grids_anytime_curve_counts_every_fold(grid_files):
    csv, mapping = grid_files
    curve = grid_curve(csv, mapping, 10)
    assert curve["trial_epochs"].tolist() == [5 * 2 * (i + 1) for i in range(12)]
    assert curve["best"].is_monotonic_increasing


def test_without_a_map_only_the_names_the_space_shares_are_taken(grid_files):
    csv, _ = grid_files
    source, = load_sources([csv], SPACE.define, CTX, "val_accuracy", "max", 10)
    assert source.dropped == ("alpha", "learning_rate_init")
    assert {k for t in source.trials for k in t.params} == {"activation", "batch_size"}
    assert "not in this space: alpha, learning_rate_init" in source.describe()


def test_a_grid_that_does_not_map_is_refused_in_one_line(grid_files, tmp_path):
    csv, _ = grid_files
    other = tmp_path / "other.csv"
    pd.read_csv(csv).rename(columns={"param_activation": "param_act", "param_batch_size": "param_bs"}).to_csv(other)
    with pytest.raises(UserError, match="none of the grid's parameters .* --warm-start-map"):
        load_sources([other], SPACE.define, CTX, "val_accuracy", "max", 10)
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  learning_rate_init: learning_rate\n")
    with pytest.raises(UserError, match="'learning_rate', which is not a parameter of this space"):
        load_sources([csv], SPACE.define, CTX, "val_accuracy", "max", 10, bad)
    bad.write_text("params:\n  momentum: lr\n")
    with pytest.raises(UserError, match="names momentum, which the grid .* does not have"):
        load_sources([csv], SPACE.define, CTX, "val_accuracy", "max", 10, bad)
    not_grid = tmp_path / "table.csv"
    not_grid.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a GridSearchCV cv_results_ table"):
        load_sources([not_grid], SPACE.define, CTX, "val_accuracy", "max", 10)


def test_sources_are_resolved_before_anything_starts(tmp_path):
    (tmp_path / "study-a").mkdir()
    (tmp_path / "study-a" / "study.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    assert resolve(["study-a"], tmp_path) == [(tmp_path / "study-a").resolve()]  # a name in the results folder
    with pytest.raises(UserError, match="has no study.json"):
        resolve([str(tmp_path / "empty")], tmp_path)
    with pytest.raises(UserError, match="no such study"):
        resolve(["nope"], tmp_path)


def test_a_searcher_starts_from_the_warm_trials_and_skips_start_points_they_ran(grid_files, tmp_path):
    csv, mapping = grid_files
    warm = load_sources([csv], SPACE.define, CTX, "val_accuracy", "max", 10, mapping)[0].trials
    ran = dict(SPACE.start_points[0])
    assert not_yet_evaluated([ran], [*warm, _trial_like(ran)]) == []
    plan = make_plan(SPACE, cluster_cpus=2, cluster_gpus=0, gpus=0, samples=None, max_epochs=10,
                     time_budget_min=None, seed=0)
    from tests.test_train import toy_data

    searcher = make_searcher(SPACE, plan, toy_data(), Store.in_study_folder(tmp_path, "w"), warm_trials=list(warm))
    config = searcher.searcher.suggest("t1")
    assert config["conv_layers"] in (1, 2, 3)
    stored = Store.in_study_folder(tmp_path, "w").load().trials
    assert sum(FROM in t.user_attrs for t in stored) == 12
    assert [t.user_attrs.get("tune_trial_id") for t in stored if t.state == TrialState.RUNNING] == ["t1"]


def _trial_like(params: dict):
    import optuna

    dist = optuna.distributions.CategoricalDistribution
    return optuna.trial.create_trial(params=params, distributions={k: dist([v]) for k, v in params.items()}, value=0.9)


@pytest.mark.parametrize("args, message", [
    (["--warm-start-map", "m.yaml"], "pass --warm-start GRID.csv too"),
    (["--warm-start", "nope"], "no such study"),
    (["--resume", "--name", "x", "--warm-start", "nope"], "drop --warm-start"),
])
def test_bad_warm_start_arguments(tmp_path, args, message):
    (tmp_path / "m.yaml").write_text(MAPPING)
    args = [a if a != "m.yaml" else str(tmp_path / "m.yaml") for a in args]
    proc = run_cli_here("search.run", "fashion_space", *args, "--results-dir", str(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_grid_study_cannot_be_warm_started(tmp_path):
    proc = run_cli_here("search.run", "fashion_grid", "--warm-start", "x", "--results-dir", str(tmp_path))
    assert proc.returncode == 2 and "runs a fixed grid" in proc.stderr
