"""The one entry point to the data of a run: `DataSpec` is what a user says about the data (a
registered dataset, CSV files, or a folder of images, and the options that go with them);
`load_data` turns it into a `Dataset`, reading a registered dataset with trainables/readers.py,
CSV files with trainables/tables.py and image folders with trainables/folders.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from trainables.datasets import CSV_KINDS, IMAGE_FOLDER, Dataset
from trainables.errors import UserError
from trainables.images import ImageFormat
from trainables.readers import DATASETS, load_dataset

KINDS = (*DATASETS, *CSV_KINDS, IMAGE_FOLDER)


@dataclass(frozen=True)
class DataSpec:
    """The data of a run, as the user gave it: a registered dataset (`data_dir` optional), a
    CSV kind with its files, or an image folder (`data_dir`) with the format its images are
    decoded to (None: chosen from the files). Saved with a study (resume) and in best.yaml (retrain)."""

    dataset: str
    data_dir: str | None = None
    data_file: str | None = None
    test_file: str | None = None
    image_shape: tuple[int, int, int] | None = None
    target: str | None = None
    classes: tuple[str, ...] | None = None  # keep only these classes of a registered dataset
    image_size: tuple[int, int] | None = None  # image folders: (H, W) every image is resized to
    channels: int | None = None  # image folders: 1 (grey) or 3 (colour)
    invert: bool = False  # image folders: dark-on-light images turned light-on-dark

    def __post_init__(self) -> None:
        self._check_types()
        if self.dataset not in KINDS:
            raise UserError(f"unknown dataset {self.dataset!r}; known: {', '.join(KINDS)}")
        if self.dataset in CSV_KINDS and not self.data_file:
            raise UserError(f"{self.dataset} data needs a CSV file (and optionally a test file)",
                            option="data_file", fix="FILE.csv")
        if self.dataset not in CSV_KINDS and (self.data_file or self.test_file):
            raise UserError(f"data_file/test_file are for CSV studies; {self.dataset} is read from a data "
                            "directory", option="data_dir")
        if self.image_shape is not None and self.dataset != "pixels_csv":
            raise UserError("image_shape is for pixel CSV files (pixels_csv); leave it out")
        if self.target is not None and self.dataset != "tabular_csv":
            raise UserError("target is for tabular CSV files (tabular_csv); leave it out")
        if self.dataset == "tabular_csv" and not self.target:
            raise UserError("tabular data needs the column to predict", option="target", fix="COLUMN")
        if self.dataset != IMAGE_FOLDER:
            for name, value in (("image_size", self.image_size), ("channels", self.channels),
                                ("invert", self.invert or None)):
                if value is not None:
                    raise UserError(f"{name} is for image folders (dataset image_folder); leave it out")
            return
        if not self.data_dir:
            raise UserError("an image folder dataset needs its folder", option="data_dir",
                            fix="DIR (one sub-folder of images per class)")
        ImageFormat(self.image_size or (1, 1), self.channels or 1)  # the same checks, before any decoding

    def _check_types(self) -> None:
        """Saved settings (study.json, best.yaml) may have been edited: a wrong type is named
        here, not met as a traceback deep in loading."""
        def ints(n: int):
            return lambda v: isinstance(v, tuple) and len(v) == n and all(_whole(x) for x in v)

        rules = {
            **{k: (lambda v: v is None or isinstance(v, str), "text") for k in (
                "data_dir", "data_file", "test_file", "target")},
            "dataset": (lambda v: isinstance(v, str), "text"),
            "image_shape": (lambda v: v is None or ints(3)(v), "three whole numbers C,H,W"),
            "image_size": (lambda v: v is None or ints(2)(v), "two whole numbers H,W"),
            "classes": (lambda v: v is None or (isinstance(v, tuple) and all(isinstance(c, str) for c in v)),
                        "a list of class names"),
            "channels": (lambda v: v is None or _whole(v), "1 or 3"),
            "invert": (lambda v: isinstance(v, bool), "true or false"),
        }
        for name, (ok, what) in rules.items():
            value = getattr(self, name)
            if not ok(value):
                raise UserError(f"bad data settings: {name} must be {what}, not {value!r}"[:200])

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if v is not None and not (k == "invert" and not v)}

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        d = dict(d)
        for key in ("image_shape", "classes", "image_size"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_data(spec: DataSpec) -> Dataset:
    if spec.dataset in CSV_KINDS:
        from trainables import tables  # CSV parsing needs pandas; image studies never import it

        if spec.dataset == "pixels_csv":
            dataset = tables.load_pixels_csv(spec.data_file, spec.test_file, spec.image_shape)
        else:
            dataset = tables.load_tabular_csv(spec.data_file, spec.test_file, spec.target)
    elif spec.dataset == IMAGE_FOLDER:
        from trainables.folders import load_image_folder

        dataset = load_image_folder(spec.data_dir, spec.image_size, spec.channels, spec.invert)
    else:
        dataset = load_dataset(spec.dataset, spec.data_dir)
    return dataset.select_classes(spec.classes) if spec.classes else dataset
