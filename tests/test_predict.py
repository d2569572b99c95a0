"""A saved model predicts from raw input exactly as training prepared it: table rows with their
original columns (text and gaps included), images of another size and channel count, image
files, through `Predictor`, `python -m search.predict` and the logged MLflow pyfunc model; input
that does not fit is one line and exit status 2."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from search.predict import cli
from search.study.final import FinalSpec, log_final, retrain, save_model
from tests.test_final import CNN, MLP, brightness_images
from trainables.datasets import Dataset, DatasetInfo
from trainables.images import ImageFormat, prepare
from trainables.model import NetConfig
from trainables.predictor import Predictor
from trainables.tables import load_tabular_csv

LEVELS = (30, 90, 150, 210)


def rows(n: int, seed: int) -> pd.DataFrame:
    """The class is a number's band, nudged by a text column; both have gaps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    size = 100.0 + 50.0 * y + rng.normal(0, 5, n)
    colour = np.where(y == 2, "red", rng.choice(["blue", "green"], n)).astype(object)
    size[::11], colour[::7] = np.nan, None
    return pd.DataFrame({"size": size, "colour": colour, "noise": rng.normal(0, 1, n),
                         "kind": np.array(["small", "mid", "large"])[y]})


def train(dataset: Dataset, params: dict, tmp_path):
    spec = FinalSpec(NetConfig.from_flat(params), epochs=8, seed=0, threads=1, precision="fp32")
    final = retrain(spec, dataset, on_ray=False)
    save_model(final, spec, dataset, "toy_space", tmp_path)
    return final, spec


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tabular")
    rows(300, 0).to_csv(folder / "train.csv", index=False)
    new = rows(40, 1)
    new.loc[3, "colour"] = "purple"  # unseen in training: all zeros, as for the test rows
    new.to_csv(folder / "new.csv", index=False)
    # new.csv as the test file: the training code's own encoding of its rows is dataset.test.x.
    dataset = load_tabular_csv(str(folder / "train.csv"), str(folder / "new.csv"), "kind")
    final, spec = train(dataset, MLP, folder)
    return folder, dataset, final, spec


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    info = DatasetInfo("toy", "", ("a", "b", "c", "d"), counts=(400, 100))
    dataset = Dataset(info, brightness_images(400, 0), brightness_images(100, 1), "toy")
    final, spec = train(dataset, CNN, folder)
    return folder, dataset, final, spec


def training_predictions(folder, x: np.ndarray) -> np.ndarray:
    """What the training code's network says about already prepared input."""
    predictor = Predictor.load(folder / "model.pt")
    with torch.no_grad():
        return predictor.net(torch.from_numpy(x).float()).argmax(1).numpy()


def raw_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 20, 16, 3) uint8 colour images, grey-levelled by class: another size and channel count."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = np.array(LEVELS)[y][:, None, None, None] + rng.integers(-20, 21, (n, 20, 16, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y


def test_tabular_rows_predict_as_the_training_code_encodes_them(tabular, capsys):
    folder, dataset, _, _ = tabular
    assert dataset.encoding is not None
    frame = pd.read_csv(folder / "new.csv")
    expected = training_predictions(folder, dataset.test.x)
    predictor = Predictor.load(folder / "model.pt")
    classes, probabilities = predictor.predict(frame.drop(columns=["kind"]))
    assert [predictor.classes.index(c) for c in classes] == expected.tolist()
    assert probabilities.shape == (40, 3) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert np.mean(np.array(classes) == frame["kind"].to_numpy()) > 0.8
    # The CLI, on the raw CSV file (its extra target column ignored).
    with pytest.raises(SystemExit) as done:
        cli([str(folder), str(folder / "new.csv"), "--output", str(folder / "out.csv")])
    assert done.value.code == 0
    written = pd.read_csv(folder / "out.csv")
    assert written["class"].tolist() == classes
    assert written["input"].iloc[0].endswith("new.csv:1")
    assert {f"probability.{c}" for c in predictor.classes} <= set(written.columns)


def test_images_of_any_size_and_files_predict_as_the_prepared_images(images, tmp_path, capsys):
    from PIL import Image

    folder, dataset, final, _ = images
    x, y = raw_images(24, 2)
    fmt = ImageFormat((12, 12), 1)
    expected = training_predictions(folder, np.stack([prepare(image, fmt) for image in x]))
    assert np.mean(expected == y) > 0.9
    predictor = Predictor.load(folder / "model.pt")
    assert predictor.image_format == fmt
    for batch in (x, x.transpose(0, 3, 1, 2), x.astype(np.float32) / 255.0):  # (N,H,W,C), (N,C,H,W), 0-1 floats
        classes, _ = predictor.predict(batch)
        assert [predictor.classes.index(c) for c in classes] == expected.tolist()
    pictures = tmp_path / "pictures"
    (pictures / "sub").mkdir(parents=True)
    for i, image in enumerate(x):
        Image.fromarray(image).save(pictures / ("sub" if i % 2 else "") / f"{i:02d}.png")
    files = sorted(pictures.rglob("*.png"))
    by_file = {f.name: c for f, c in zip(files, predictor.predict(files).classes)}
    assert [predictor.classes.index(by_file[f"{i:02d}.png"]) for i in range(len(x))] == expected.tolist()
    assert predictor.predict(pictures).classes == predictor.predict(files).classes  # a folder, recursively
    with pytest.raises(SystemExit) as done:
        cli([str(folder / "model.pt"), str(pictures)])
    assert done.value.code == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["input", "class", "probability"] and len(printed) == 1 + len(x)
    # The model's own test images, raw as the dataset holds them: the final test accuracy again.
    assert np.mean(np.array(predictor.predict(dataset.test.x).classes) ==
                   np.array(dataset.info.classes)[dataset.test.y]) == pytest.approx(final.test_accuracy, abs=0.01)


@pytest.fixture(scope="module")
def logged(tabular, images, tmp_path_factory) -> str:
    """Both toy models logged and registered as the final phase does it; the store's URI."""
    from search.tracking.tracker import Tracker

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracker = Tracker(uri, "predict", folder / "artifacts")
    for name, (model_folder, dataset, final, spec) in {"tab": tabular, "img": images}.items():
        run = tracker.start_run(name, {}, {})
        assert log_final(tracker, run, final, spec, dataset, model_folder, register_as=f"toy-{name}") == f"toy-{name}/1"
    return uri


def test_the_logged_mlflow_model_takes_raw_input(logged, tabular, images, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged)
    models = {name: mlflow.pyfunc.load_model(f"models:/toy-{name}/1") for name in ("tab", "img")}
    frame = pd.read_csv(tabular[0] / "new.csv")
    table = models["tab"].predict(frame)
    assert table["class"].tolist() == Predictor.load(tabular[0] / "model.pt").predict(frame).classes
    x, _ = raw_images(8, 3)
    predictor = Predictor.load(images[0] / "model.pt")
    assert models["img"].predict(x)["class"].tolist() == predictor.predict(x).classes
    paths = []
    for i, image in enumerate(x):
        from PIL import Image

        Image.fromarray(image).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    assert models["img"].predict(pd.DataFrame({"image": paths}))["class"].tolist() == predictor.predict(x).classes


# Loads both registered models where hpsearch cannot be imported (its editable install's import
# hook and the checkout taken off the path) and prints their classes for the inputs given.
SERVE_WITHOUT_HPSEARCH = """
import importlib.util, json, sys
import numpy as np, pandas as pd
REPO, URI, ROWS, IMAGES = sys.argv[1:]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path[:] = [p for p in sys.path if p not in ("", ".", REPO)]
assert all(importlib.util.find_spec(name) is None for name in ("search", "spaces", "trainables"))
import mlflow
mlflow.set_tracking_uri(URI)
tab, img = (mlflow.pyfunc.load_model(f"models:/toy-{name}/1") for name in ("tab", "img"))
answer = {"tab": tab.predict(pd.read_csv(ROWS))["class"].tolist(),
          "img": img.predict(np.load(IMAGES))["class"].tolist(),
          "trainables": sys.modules["trainables"].__file__}
print(json.dumps(answer))
"""


def test_the_logged_model_serves_without_hpsearch_and_prints_nothing(logged, tabular, images, tmp_path):
    """Models from code: nothing unpickled, the trainables package logged beside the model, and its
    notes (here: an infinite value in a row) go to logging, which a served model leaves silent."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    frame = pd.read_csv(tabular[0] / "new.csv").drop(columns=["kind"])
    frame.loc[0, "size"] = np.inf  # treated as missing, with a note, as training treated it
    frame.to_csv(tmp_path / "rows.csv", index=False)
    x, _ = raw_images(6, 4)
    np.save(tmp_path / "images.npy", x)
    # The bars are MLflow's, while it downloads the model: what is under test is the model itself.
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    proc = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_HPSEARCH, str(REPO), logged, str(tmp_path / "rows.csv"),
                           str(tmp_path / "images.npy")], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    answer = json.loads(proc.stdout)
    assert answer["tab"] == Predictor.load(tabular[0] / "model.pt").predict(frame).classes
    assert answer["img"] == Predictor.load(images[0] / "model.pt").predict(x).classes
    assert not answer["trainables"].startswith(str(REPO))  # the model's own copy of the code


def test_a_note_on_the_input_goes_to_logging_and_the_cli_shows_it(tabular, tmp_path, capsys, caplog):
    import logging

    from search.cli import show_notes

    folder = tabular[0]
    frame = pd.read_csv(folder / "new.csv")
    frame.loc[0, "size"] = np.inf
    frame.to_csv(tmp_path / "inf.csv", index=False)
    predictor = Predictor.load(folder / "model.pt")
    note = "note: column 'size': 1 infinite or out-of-range value(s) treated as missing"
    with caplog.at_level(logging.INFO, logger="trainables"):
        predictor.predict(frame)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [("trainables.encoding", logging.WARNING,
                                                                              note)]
    with pytest.raises(SystemExit) as done:
        cli([str(folder), str(tmp_path / "inf.csv")])
    assert done.value.code == 0 and note in capsys.readouterr().err  # a command shows it
    show_notes(quiet=True)  # what --quiet sets
    try:
        predictor.predict(frame)
        assert capsys.readouterr().err == ""
    finally:
        show_notes()


@pytest.mark.parametrize("case,message", [
    ("missing_columns", "lacks 1 of the 3 columns the model takes: 'colour'"),
    ("unreadable_image", "cannot read image .*broken.png"),
    ("no_such_input", "nothing.png not found"),
    ("no_model", "holds no model.pt"),
    ("images_for_rows", "takes table rows"),
    ("bad_output", "must be a .csv or .parquet file; pass --output"),
])
def test_input_that_does_not_fit_is_one_line_and_exit_2(tabular, images, tmp_path, capsys, case, message):
    import re

    tab, img = tabular[0], images[0]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    pd.read_csv(tab / "new.csv").drop(columns=["colour"]).to_csv(tmp_path / "cut.csv", index=False)
    argv = {
        "missing_columns": [str(tab), str(tmp_path / "cut.csv")],
        "unreadable_image": [str(img), str(tmp_path / "broken.png")],
        "no_such_input": [str(img), str(tmp_path / "nothing.png")],
        "no_model": [str(tmp_path), str(tmp_path / "broken.png")],
        "images_for_rows": [str(tab), str(tmp_path / "broken.png")],
        "bad_output": [str(img), str(tmp_path / "broken.png"), "--output", str(tmp_path / "out.txt")],
    }[case]
    with pytest.raises(SystemExit) as done:
        cli(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(message, err), err


def test_pixel_rows_predict_from_their_columns(tmp_path):
    from trainables.tables import load_pixels_csv

    def frame(n, seed):
        split = brightness_images(n, seed)
        return pd.DataFrame({"label": split.y, **{f"px{i}": split.x.reshape(n, -1)[:, i] for i in range(144)}})

    frame(200, 0).to_csv(tmp_path / "train.csv", index=False)
    frame(30, 1).to_csv(tmp_path / "new.csv", index=False)
    dataset = load_pixels_csv(str(tmp_path / "train.csv"), str(tmp_path / "new.csv"), None)
    train(dataset, CNN, tmp_path)
    predictor = Predictor.load(tmp_path / "model.pt")
    new = pd.read_csv(tmp_path / "new.csv")
    expected = training_predictions(tmp_path, dataset.test.x)
    assert [predictor.classes.index(c) for c in predictor.predict(new).classes] == expected.tolist()
    images = new.drop(columns=["label"]).to_numpy(np.uint8).reshape(-1, 12, 12)  # the same pixels as images
    assert [predictor.classes.index(c) for c in predictor.predict(images).classes] == expected.tolist()
