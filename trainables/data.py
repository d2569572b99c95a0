"""The one entry point to the data of a run: `DataSpec` is what a user says about the data (a
registered dataset, or CSV files, and the options that go with them); `load_data` turns it into
a `Dataset`, reading a registered dataset with trainables/readers.py and CSV files with
trainables/tables.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from trainables.datasets import CSV_KINDS, Dataset
from trainables.errors import UserError
from trainables.readers import DATASETS, load_dataset


@dataclass(frozen=True)
class DataSpec:
    """The data of a run, as the user gave it: a registered dataset (`data_dir` optional) or a
    CSV kind with its files. Saved with a study (resume) and in best.yaml (retrain)."""

    dataset: str
    data_dir: str | None = None
    data_file: str | None = None
    test_file: str | None = None
    image_shape: tuple[int, int, int] | None = None
    target: str | None = None
    classes: tuple[str, ...] | None = None  # keep only these classes of a registered dataset

    def __post_init__(self) -> None:
        if self.dataset not in (*DATASETS, *CSV_KINDS):
            raise UserError(f"unknown dataset {self.dataset!r}; known: {', '.join([*DATASETS, *CSV_KINDS])}")
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

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        d = dict(d)
        for key in ("image_shape", "classes"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


def load_data(spec: DataSpec) -> Dataset:
    if spec.dataset in CSV_KINDS:
        from trainables import tables  # CSV parsing needs pandas; image studies never import it

        if spec.dataset == "pixels_csv":
            dataset = tables.load_pixels_csv(spec.data_file, spec.test_file, spec.image_shape)
        else:
            dataset = tables.load_tabular_csv(spec.data_file, spec.test_file, spec.target)
    else:
        dataset = load_dataset(spec.dataset, spec.data_dir)
    return dataset.select_classes(spec.classes) if spec.classes else dataset
