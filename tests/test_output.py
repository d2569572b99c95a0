"""A command prints what its user asked for and nothing more: no library's warnings (MLflow's
CloudPickle and type-hint warnings), no progress bars (carriage returns), no tracebacks."""

from __future__ import annotations

import pytest

from search.results.best_config import BestConfig
from spaces.fashion_space import GRID_WINNER
from tests.conftest import run_module
from tests.test_data import fake_dataset

pytestmark = pytest.mark.slow  # a retrain and an MLflow model logged, in a new interpreter


def test_a_retrain_prints_its_two_lines_and_nothing_else(tmp_path):
    """search.train goes through the final model's whole path: retrain, test, save, and log the
    model to MLflow (models from code, artifacts copied), on a small stand-in of Fashion-MNIST."""
    fake_dataset(tmp_path / "data" / "FashionMNIST" / "raw", n_train=200, n_test=50)
    BestConfig(space="fashion_space", dataset="fashion_mnist", hyperparameters=GRID_WINNER, epochs=1, seed=0).save(
        tmp_path / "best.yaml")
    proc = run_module("search.train", str(tmp_path / "best.yaml"), "--data-dir", str(tmp_path / "data"),
                      "--results-dir", str(tmp_path / "results"), "--name", "again")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("retraining ") and lines[1].startswith("test accuracy: ")
    assert "search reported" not in lines[1] and "nan" not in lines[1]  # this best.yaml was never tested
    assert "\r" not in proc.stdout
    assert (tmp_path / "results" / "again" / "model.pt").is_file()
