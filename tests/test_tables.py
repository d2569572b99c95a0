from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import user_error
from trainables.data import DataSpec, load_data
from trainables.errors import UserError
from trainables.tables import load_pixels_csv, load_tabular_csv


def pixel_csv(path, n=60, shape=(1, 6, 6), labels=(0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12), seed=0):
    rng = np.random.default_rng(seed)
    c, h, w = shape
    y = np.array([labels[i % len(labels)] for i in range(n)])
    pixels = rng.integers(0, 256, (n, h * w * c))
    frame = pd.DataFrame(pixels, columns=[f"pixel{i + 1}" for i in range(h * w * c)])
    frame.insert(0, "label", y)
    frame.to_csv(path, index=False)
    return frame


def test_pixel_labels_are_remapped_and_images_kept_exactly(tmp_path):
    frame = pixel_csv(tmp_path / "train.csv")
    pixel_csv(tmp_path / "test.csv", n=24, seed=1)
    ds = load_pixels_csv(str(tmp_path / "train.csv"), str(tmp_path / "test.csv"), (1, 6, 6))
    # Letters-style labels with a gap (no 9) become 0..11, sorted numerically (10 after 8).
    assert ds.label_map == {str(v): i for i, v in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12])}
    assert ds.info.classes[9] == "10" and ds.train.y.max() == 11
    assert ds.train.x.shape == (60, 1, 6, 6) and ds.train.x.dtype == np.uint8
    assert np.array_equal(ds.train.x[3, 0].ravel(), frame.iloc[3, 1:].to_numpy())
    assert len(ds.test) == 24


def test_without_a_test_file_a_fixed_stratified_fifth_is_held_out(tmp_path):
    pixel_csv(tmp_path / "train.csv", n=120)
    a = load_pixels_csv(str(tmp_path / "train.csv"), None, None)  # 36 pixels: square grey inferred
    b = load_pixels_csv(str(tmp_path / "train.csv"), None, None)
    assert len(a.test) == 24 and len(a.train) == 96
    assert np.array_equal(a.test.x, b.test.x)


@pytest.mark.parametrize("shape,message", [((1, 5, 5), "has 25 pixels but .* has 36 pixel columns"),
                                           ((2, 3, 6), "1 or 3 channels")])
def test_shape_not_matching_the_pixel_count_is_named(tmp_path, shape, message):
    pixel_csv(tmp_path / "train.csv")
    with pytest.raises(UserError, match=message):
        load_pixels_csv(str(tmp_path / "train.csv"), None, shape)


def test_test_labels_unseen_in_training_are_an_error(tmp_path):
    pixel_csv(tmp_path / "train.csv", labels=(0, 1))
    pixel_csv(tmp_path / "test.csv", labels=(0, 1, 7))
    with pytest.raises(UserError, match="labels the training file lacks.*7"):
        load_pixels_csv(str(tmp_path / "train.csv"), str(tmp_path / "test.csv"), None)


def heart_csv(path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.integers(30, 80, n).astype(float)
    chol = rng.normal(220, 40, n)
    sex = rng.choice(["M", "F"], n)
    pain = rng.choice(["ATA", "NAP", "ASY", "TA"], n)
    target = ((age > 55) ^ (pain == "ASY")).astype(int)
    chol[::17] = np.nan  # missing values are filled with the training mean
    frame = pd.DataFrame({"Age": age, "Sex": sex, "ChestPainType": pain, "Cholesterol": chol, "HeartDisease": target})
    frame.to_csv(path, index=False)
    return frame


def test_tabular_one_hot_encodes_text_and_keeps_numbers(tmp_path):
    heart_csv(tmp_path / "heart.csv")
    ds = load_tabular_csv(str(tmp_path / "heart.csv"), None, "HeartDisease")
    # Age, Sex=F, Sex=M, 4 pain types, Cholesterol -> 8 features, as (N, F, 1, 1) floats.
    assert ds.train.x.shape[1:] == (8, 1, 1) and ds.train.x.dtype == np.float32
    assert not np.isnan(ds.train.x).any()
    assert ds.info.classes == ("0", "1")
    onehot = ds.train.x[:, 1:3, 0, 0]
    assert np.array_equal(onehot.sum(axis=1), np.ones(len(ds.train)))


def test_standardisation_uses_the_training_split_only(tmp_path):
    heart_csv(tmp_path / "heart.csv")
    ds = load_tabular_csv(str(tmp_path / "heart.csv"), None, "HeartDisease")
    data = ds.for_search(0.2, seed=0)
    assert data.mean[0] == pytest.approx(float(data.train.x[:, 0].mean()), rel=1e-5)
    assert data.mean[0] != pytest.approx(float(np.concatenate([ds.train.x, ds.test.x])[:, 0].mean()), rel=1e-9)


def test_multiclass_text_targets(tmp_path):
    frame = heart_csv(tmp_path / "heart.csv")
    frame["grade"] = np.where(frame["Age"] > 60, "high", np.where(frame["Age"] > 45, "mid", "low"))
    frame.drop(columns=["HeartDisease"]).to_csv(tmp_path / "grades.csv", index=False)
    ds = load_tabular_csv(str(tmp_path / "grades.csv"), None, "grade")
    assert ds.info.classes == ("high", "low", "mid")


def test_csv_without_the_target_column_names_the_columns(tmp_path):
    heart_csv(tmp_path / "heart.csv")
    with pytest.raises(UserError, match="no target column 'Outcome'; its columns are: Age, Sex"):
        load_tabular_csv(str(tmp_path / "heart.csv"), None, "Outcome")


@pytest.mark.parametrize("spec,message", [
    (dict(dataset="tabular_csv", data_file="x.csv"), "needs the column to predict; pass --target"),
    (dict(dataset="pixels_csv"), "needs a CSV file .*; pass --data-file"),
    (dict(dataset="mnist", data_file="x.csv"), "are for CSV studies"),
    (dict(dataset="cifar100"), "unknown dataset 'cifar100'"),
])
def test_data_spec_checks_its_options(spec, message):
    with user_error(message):
        DataSpec(**spec)


def test_missing_csv_file_is_one_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_data(DataSpec("pixels_csv", data_file=str(tmp_path / "nope.csv")))


def test_selecting_classes_relabels_in_the_order_given(tmp_path):
    pixel_csv(tmp_path / "train.csv", n=120)
    ds = load_pixels_csv(str(tmp_path / "train.csv"), None, None).select_classes(("11", "0", "5"))
    assert ds.info.classes == ("11", "0", "5")
    assert set(ds.train.y) == {0, 1, 2} and len(ds.train) == 24
    with user_error("needs two or more of .*; pass --classes"):
        ds.select_classes(("0", "ten"))
