"""Each new study end to end, the way a user runs it: a real tiny search, the exported best.yaml
retrained with `search.train`. The transfer study fine-tunes a checkpoint that a tiny MNIST
run inside this test produced, on MNIST classes that run never saw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from search.results.best_config import BestConfig
from tests.conftest import run_module

pytestmark = pytest.mark.slow
TINY = ("--smoke", "--samples", "2", "--max-epochs", "1")


def search(results, space, name, *args):
    proc = run_module("search.run", space, *TINY, "--name", name, "--results-dir", str(results), *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return BestConfig.load(results / name / "best.yaml")


def retrain(results, name, *args):
    proc = run_module("search.train", str(results / name / "best.yaml"), "--smoke", "--epochs", "1", "--name",
                      f"{name}-again", "--results-dir", str(results), *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return BestConfig.load(results / f"{name}-again" / "best.yaml")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def digits(data_root, results):
    """A tiny MNIST run on the digits 0-6: the network the transfer tests fine-tune."""
    source = search(results, "mnist_space", "digits", "--data-dir", str(data_root), "--classes", "0,1,2,3,4,5,6")
    assert source.classes == [str(d) for d in range(7)]
    return results / "digits" / "model.pt"


def test_transfer_from_a_tiny_mnist_run_to_classes_it_never_saw(data_root, results, digits):
    weights = digits
    best = search(results, "transfer_space", "new-digits", "--data-dir", str(data_root), "--dataset", "mnist",
                  "--classes", "7,8,9", "--weights", str(weights))
    assert best.hyperparameters["family"] == "transfer"
    assert best.classes == ["7", "8", "9"] and best.data["weights"] == str(weights)
    assert best.metrics["test_accuracy"] > 0.5  # three classes: chance is a third
    saved = torch.load(results / "new-digits" / "model.pt", weights_only=True)
    assert saved["backbone"]["kind"] == "hpsearch" and saved["input_shape"] == (1, 28, 28)
    again = retrain(results, "new-digits")  # weights and data come from best.yaml
    assert again.metrics["test_accuracy"] > 0.5


def test_pixel_csv_study_maps_labels_and_retrains(data_root, results):
    from trainables.readers import load_dataset

    mnist = load_dataset("mnist", str(data_root)).sliced(1200, 300, seed=0)
    for split, name in ((mnist.train, "train.csv"), (mnist.test, "test.csv")):
        frame = pd.DataFrame(split.x.reshape(len(split), -1), columns=[f"pixel{i + 1}" for i in range(784)])
        frame.insert(0, "label", np.where(split.y >= 9, split.y + 1, split.y))  # letters-style gap: no 9
        frame.to_csv(results / name, index=False)
    best = search(results, "pixels_csv_space", "letters", "--data-file", str(results / "train.csv"),
                  "--test-file", str(results / "test.csv"), "--image-shape", "1,28,28")
    assert best.classes == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "10"]
    assert best.data["image_shape"] == [1, 28, 28]
    assert retrain(results, "letters").metrics["test_accuracy"] > 0.3


def test_tabular_study_with_text_columns_and_retrain(results):
    rng = np.random.default_rng(0)
    n = 600
    age = rng.integers(30, 80, n)
    pain = rng.choice(["ATA", "NAP", "ASY", "TA"], n)
    frame = pd.DataFrame({"Age": age, "ChestPainType": pain, "MaxHR": rng.normal(140, 20, n).round(),
                          "HeartDisease": ((age > 55) | (pain == "ASY")).astype(int)})
    frame.to_csv(results / "heart.csv", index=False)
    best = search(results, "tabular_csv_space", "heart", "--data-file", str(results / "heart.csv"),
                  "--target", "HeartDisease")
    assert best.classes == ["0", "1"] and best.hyperparameters["family"] == "mlp"
    assert retrain(results, "heart").metrics["test_accuracy"] > 0.5


def test_cifar10_study_with_augmentation(data_root, results):
    if not (data_root / "cifar10" / "cifar10-subset.npz").is_file():
        pytest.skip("the CIFAR-10 subset is not in the shared datasets")
    best = search(results, "cifar10_space", "cifar", "--data-dir", str(data_root))
    assert 2650 < best.search["train_images"] < 2750 and len(best.classes) == 10  # 90% of the smoke slice
    assert any(k.startswith("aug_") for k in best.hyperparameters)


def letter(char: str, i: int):
    """A dark letter on a light 40x40 colour scan, placed and sized a little differently each time."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (40, 40), (235 + i % 20, 230, 225))
    font = ImageFont.load_default(size=22 + i % 6)
    ImageDraw.Draw(image).text((8 + i % 5, 6 + i % 4), char, fill=(20 + i % 30, 20, 40), font=font)
    return image


def test_a_digit_network_fine_tuned_on_a_folder_of_letters_predicts_new_files(results, digits, tmp_path,
                                                                              monkeypatch):
    """The README's walk-through (docs/data.md has it whole): scanned letters (dark on light, colour,
    40x40) in one folder per class, fine-tuned from the digit network with --invert, then new files
    predicted by `search.predict` exactly as the training code prepares and classifies them."""
    from trainables.images import ImageFormat, prepare
    from trainables.predictor import Predictor
    from trainables.transfer import convert_images

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    letters, new = tmp_path / "letters", tmp_path / "new"
    for char in "ABG":
        (letters / char).mkdir(parents=True)
        for i in range(20):
            letter(char, i).save(letters / char / f"{i:02d}.png")
    new.mkdir()
    for char in "ABG":
        for i in range(20, 23):
            letter(char, i).save(new / f"{char}{i}.png")
    best = search(results, "transfer_space", "scans", "--data-dir", str(letters), "--invert", "--weights",
                  str(digits), "--max-epochs", "3")
    assert best.classes == ["A", "B", "G"] and best.data["invert"] is True
    model = results / "scans" / "model.pt"
    proc = run_module("search.predict", str(model), str(new), "--output", str(tmp_path / "out.csv"))
    assert proc.returncode == 0, proc.stderr
    predicted = pd.read_csv(tmp_path / "out.csv")
    assert len(predicted) == 9
    # The training code's way: the folder's format (colour scans, inverted), then the backbone's input.
    saved = torch.load(model, weights_only=True)
    fmt = ImageFormat.from_dict(saved["input"]["format"])
    assert (fmt.size, fmt.channels, fmt.invert) == ((40, 40), 3, True)
    files = sorted(new.iterdir())
    x = convert_images(np.stack([prepare(f, fmt) for f in files]), tuple(saved["input_shape"]))
    net = Predictor.load(model).net
    with torch.no_grad():
        expected = [best.classes[i] for i in net(torch.from_numpy(x).float()).argmax(1)]
    assert list(predicted["class"]) == expected
