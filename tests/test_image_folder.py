"""Folders of the user's own images as a dataset: small folders drawn here with PIL (three shapes,
mixed sizes, modes and file formats) are decoded, held out, cached and refused the way a user
would meet them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import run_module, user_error
from trainables.data import DataSpec, load_data

CLASSES = ("circle", "square", "triangle")
MODES = ("L", "RGB", "P", "RGBA")


def draw(shape: str, i: int, size: tuple[int, int] = (28, 28), mode: str = "L") -> Image.Image:
    """A light shape on a dark ground, placed a little differently each time; (w, h) = size."""
    w, h = size
    image = Image.new("RGB", size, (0, 0, 0))
    d = ImageDraw.Draw(image)
    o = i % 4
    box = (w // 5 + o, h // 5 + o, w - w // 5 - 4 + o, h - h // 5 - 4 + o)
    colour = (255, 200 + i % 50, 120 + 10 * (i % 8))
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
    if mode == "P":
        return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return image.convert(mode)


def make_folder(root: Path, n: int = 12, classes=CLASSES, modes=MODES, big: tuple[int, int] | None = None) -> Path:
    """`n` images per class: mostly 28x28, every fourth 36x32, cycling through `modes`; the first
    class holds one JPEG, one BMP and one WebP."""
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n):
            size = big or ((32, 36) if i % 4 == 3 else (28, 28))
            image = draw(name, i + c, size, modes[i % len(modes)])
            suffix = {0: ".jpg", 1: ".bmp", 2: ".webp"}.get(i, ".png") if c == 0 else ".png"
            if suffix in (".jpg", ".bmp") and image.mode in ("P", "RGBA"):
                image = image.convert("RGB")
            image.save(folder / f"{i:02d}{suffix}")
    return root


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "hpsearch" / "image_folders"


def load(folder: Path, **options):
    return load_data(DataSpec("image_folder", data_dir=str(folder), **options))


def test_decodes_class_folders_and_holds_out_a_stratified_share(tmp_path, cache):
    ds = load(make_folder(tmp_path / "shapes"))
    assert ds.info.classes == CLASSES
    # Colour images among them: 3 channels; the most common size: 28x28.
    assert ds.train.x.dtype == np.uint8 and ds.train.x.shape[1:] == (3, 28, 28)
    assert ds.image_format is not None and ds.image_format.size == (28, 28) and ds.image_format.channels == 3
    # 20% of each class held out (as for CSV files): 12 -> 2 or 3 test images per class, 36 in all.
    assert len(ds.train) + len(ds.test) == 36
    assert sorted(np.bincount(ds.test.y).tolist()) == [2, 2, 2] or set(np.bincount(ds.test.y)) <= {2, 3}
    assert set(np.unique(ds.train.y)) == {0, 1, 2}
    assert ds.train.x.max() > 200 and ds.train.x.min() == 0  # light shapes on a dark ground
    # The same images are held out every time.
    again = load(tmp_path / "shapes")
    assert np.array_equal(again.test.y, ds.test.y) and np.array_equal(again.test.x, ds.test.x)
    assert list(cache.glob("*.npz"))


def test_grey_folders_are_one_channel_and_options_override(tmp_path):
    folder = make_folder(tmp_path / "grey", modes=("L",))
    ds = load(folder)
    assert ds.train.x.shape[1:] == (1, 28, 28)
    sized = load(folder, image_size=(16, 20), channels=3)
    assert sized.train.x.shape[1:] == (3, 16, 20) and sized.image_format.size == (16, 20)
    inverted = load(folder, invert=True)
    assert np.array_equal(inverted.train.x, 255 - ds.train.x) and inverted.image_format.invert


def test_large_images_default_to_at_most_max_side(tmp_path):
    from trainables.images import MAX_SIDE

    ds = load(make_folder(tmp_path / "big", n=3, big=(300, 200)))
    assert ds.train.x.shape[2:] == (round(200 * MAX_SIDE / 300), MAX_SIDE)


def test_train_and_test_folders(tmp_path):
    make_folder(tmp_path / "split" / "train", n=6)
    make_folder(tmp_path / "split" / "test", n=3, classes=CLASSES[:2])  # a test folder may lack a class
    ds = load(tmp_path / "split")
    assert ds.info.classes == CLASSES and (len(ds.train), len(ds.test)) == (18, 6)
    assert np.bincount(ds.test.y).tolist() == [3, 3]


def test_a_second_load_reads_the_cache_and_a_changed_file_is_decoded_again(tmp_path, monkeypatch):
    import trainables.folders as folders

    folder = make_folder(tmp_path / "shapes", n=4)
    first = load(folder)
    calls = []
    real = folders.decode
    monkeypatch.setattr(folders, "decode", lambda *a: calls.append(a) or real(*a))
    second = load(folder)
    assert calls == [] and np.array_equal(first.train.x, second.train.x)
    assert second.image_format == first.image_format
    load(folder, image_size=(10, 10))  # another format: decoded
    assert len(calls) == 1
    path = folder / "square" / "00.png"
    draw("circle", 0).save(path)
    os.utime(path, ns=(1, 1))
    load(folder)
    assert len(calls) == 2


@pytest.mark.parametrize("build, match", [
    (lambda d: (d / "a.png").parent.mkdir() or draw("circle", 0).save(d / "a.png"),
     r"has no class folders \(its 1 images are not in class folders\).*; pass --data-dir"),
    (lambda d: d.mkdir(), r"has no class folders \(it holds no images\)"),
    (lambda d: make_folder(d, n=3, classes=("only",)), r"has one class folder \(only\); a classifier needs two"),
    (lambda d: (make_folder(d, n=3, classes=("a", "b")), (d / "c").mkdir()), r"class folder .*c holds no images"),
    (lambda d: (make_folder(d, n=3, classes=("a", "b")), (d / "b" / "02.png").write_bytes(
        (d / "b" / "01.png").read_bytes()[:60])), r"cannot read image .*b/02\.png"),
    (lambda d: (make_folder(d / "train", n=3, classes=("a", "b")), make_folder(d / "test", n=2, classes=("a", "z"))),
     r"test folder .* has classes the training folder lacks: z"),
    (lambda d: (make_folder(d, n=2, classes=("a", "b")), (d / "b" / "01.png").unlink()),
     r"class folder .*b has one image; holding out a test share needs two"),
    (lambda d: ((d / "notes").mkdir(parents=True), (d / "notes" / "x.txt").write_text("hi"), (d / "more").mkdir()),
     r"image folder .*bad holds no images \(.*\) in its class folders \(more, notes\); pass --data-dir"),
])
def test_bad_folders_get_one_line(tmp_path, build, match):
    folder = tmp_path / "bad"
    build(folder)
    with user_error(match):
        load(folder)


def test_truncated_image_named_even_with_size_and_channels_given(tmp_path):
    folder = make_folder(tmp_path / "shapes", n=3)
    data = (folder / "square" / "01.png").read_bytes()
    (folder / "square" / "01.png").write_bytes(data[: len(data) // 2])
    with user_error(r"cannot read image .*square/01\.png"):
        load(folder, image_size=(8, 8), channels=1)


def test_folder_options_are_refused_for_other_datasets_and_saved_for_folders(tmp_path):
    with user_error(r"^image_size is for image folders"):
        DataSpec("mnist", image_size=(8, 8))
    with user_error(r"^invert is for image folders"):
        DataSpec("pixels_csv", data_file="x.csv", invert=True)
    with user_error(r"image folder dataset needs its folder; pass --data-dir"):
        DataSpec("image_folder")
    with user_error(r"1 \(grey\) or 3 \(colour\) channels, not 2; pass --channels"):
        DataSpec("image_folder", data_dir="d", channels=2)
    spec = DataSpec("image_folder", data_dir="d", image_size=(16, 20), channels=1, invert=True)
    assert DataSpec.from_dict(spec.to_dict()) == spec
    assert "invert" not in DataSpec("mnist").to_dict()  # other datasets' saved settings stay as they were


def choice(*argv: str):
    from search.data_args import choice_from_args
    from search.run import build_parser
    from spaces.registry import get_study

    args = build_parser().parse_args(list(argv))
    s = get_study(args.space).settings
    return choice_from_args(args, s.dataset, s.needs_backbone).spec


def test_a_folder_of_class_folders_given_to_an_image_study_is_read_as_one(tmp_path):
    folder = str(make_folder(tmp_path / "shapes", n=2))
    assert choice("fashion_space", "--data-dir", folder).dataset == "image_folder"
    assert choice("pixels_csv_space", "--data-dir", folder).dataset == "image_folder"
    spec = choice("mnist_space", "--data-dir", str(tmp_path), "--image-size", "12x14", "--invert")
    assert (spec.dataset, spec.image_size, spec.invert) == ("image_folder", (12, 14), True)
    # Not for the tabular study, nor where the flag names another dataset.
    with user_error(r"channels is for image folders"):
        choice("fashion_space", "--dataset", "mnist", "--data-dir", folder, "--channels", "1")


def test_a_dataset_root_stays_the_registered_dataset(data_root):
    assert choice("fashion_space", "--data-dir", str(data_root)).dataset == "fashion_mnist"


def test_images_too_large_for_the_cost_cap_suggest_a_smaller_size():
    from search.tune.tuner import check_cost_cap, make_plan
    from spaces.registry import get_study
    from trainables.datasets import Split, TrainingData

    study = get_study("fashion_space")
    plan = make_plan(study, cluster_cpus=2, cluster_gpus=0, gpus=0, samples=2, max_epochs=1, time_budget_min=None,
                     seed=0)

    def data(shape):
        split = Split(np.zeros((4, *shape), np.uint8), np.array([0, 1, 0, 1]))
        return TrainingData(split, split, ("a", "b"), (0.5,) * shape[0], (0.2,) * shape[0])

    check_cost_cap(study, plan, data((3, 64, 64)), image_folder=True)
    with user_error(r"every network of fashion_space needs more than its CPU cost cap of 6 million .* on 3x320x320 "
                    r"images .*; pass --image-size smaller H,W \(e.g. 160,160\)"):
        check_cost_cap(study, plan, data((3, 320, 320)), image_folder=True)


@pytest.mark.slow
def test_fashion_space_searches_a_folder_end_to_end(tmp_path):
    folder = make_folder(tmp_path / "shapes", n=12)
    results = tmp_path / "results"
    proc = run_module("search.run", "fashion_space", "--dataset", "image_folder", "--data-dir", str(folder),
                      "--smoke", "--samples", "2", "--max-epochs", "1", "--results-dir", str(results), "--name", "f",
                      env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from search.results.best_config import BestConfig

    best = BestConfig.load(results / "f" / "best.yaml")
    assert best.classes == list(CLASSES) and best.dataset == "image_folder"
    assert best.data["data_dir"] == str(folder)
