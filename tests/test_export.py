from __future__ import annotations

import pytest

from search.results.best_config import BestConfig
from spaces.fashion_space import TEXTBOOK_CNN
from trainables.errors import UserError
from trainables.model import NetConfig


def best(**changes) -> BestConfig:
    fields = dict(space="fashion_space", dataset="fashion_mnist",
                  hyperparameters=NetConfig.from_flat(TEXTBOOK_CNN).to_flat(), epochs=7, seed=3,
                  metrics={"val_accuracy": 0.91, "test_accuracy": 0.92})
    return BestConfig(**{**fields, **changes})


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "best.yaml"
    original = best()
    original.save(path)
    loaded = BestConfig.load(path)
    assert loaded.hyperparameters == original.hyperparameters
    assert (loaded.epochs, loaded.seed, loaded.metrics) == (7, 3, original.metrics)
    assert NetConfig.from_flat(loaded.hyperparameters) == NetConfig.from_flat(TEXTBOOK_CNN)


@pytest.mark.parametrize("text,message", [
    ("space: [unclosed", "not valid YAML at line"),
    ("- just\n- a list\n", "expected a mapping"),
    ("space: fashion_space\n", "missing key\\(s\\) dataset, hyperparameters, epochs, seed"),
])
def test_unreadable_yaml(tmp_path, text, message):
    path = tmp_path / "best.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        BestConfig.load(path)


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(best().to_yaml() + "learning_rate: 0.1\n")
    with pytest.raises(UserError, match="unknown key\\(s\\) learning_rate"):
        BestConfig.load(path)


@pytest.mark.parametrize("edit,message", [
    (("epochs: 7", "epochs: 0"), "epochs must be a positive integer"),
    (("dropout: 0.3", "dropout: 2.0"), "dropout=2.0"),
    (("kernel_size: 3", "kernel_size: 4"), "kernel_size=4"),
])
def test_out_of_range_values_are_named(tmp_path, edit, message):
    path = tmp_path / "best.yaml"
    path.write_text(best().to_yaml().replace(*edit))
    with pytest.raises(UserError, match=message):
        BestConfig.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        BestConfig.load(tmp_path / "nope.yaml")
