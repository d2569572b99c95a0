"""The one entry point to the data of a run: `DataSpec` is what a user says about the data (a
registered dataset, CSV files, or a folder of images, and the options that go with them);
`load_data` turns it into a `Dataset` with the reader the dataset registered
(trainables/dataset_registry.py).

Importing this module imports the modules that define the built-in readers, which register
their datasets as they are imported: so whatever loads data sees every built-in dataset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Imported for the datasets they register: Fashion-MNIST, MNIST and CIFAR-10; the CSV kinds; image
# folders (none of them imports pandas or decodes anything when imported).
import trainables.folders  # noqa: F401
import trainables.readers  # noqa: F401
import trainables.tables  # noqa: F401
from trainables.dataset_registry import OPTIONS, DatasetEntry, dataset_entry, option_owners
from trainables.datasets import Dataset
from trainables.errors import UserError


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
        entry = dataset_entry(self.dataset)  # unknown: "unknown dataset ...; known: ..."
        self._refuse_options_for_others(entry)
        if entry.check is not None:
            entry.check(**self.reader_options(entry))

    def _refuse_options_for_others(self, entry: DatasetEntry) -> None:
        """Options of other datasets are refused rather than ignored: a user who passes
        --target to an image study has misunderstood something the run should not hide."""
        def given(name: str) -> bool:
            value = getattr(self, name)
            return value is not None and value is not False

        if any(given(f) and f not in entry.options for f in ("data_file", "test_file")):
            owners = ", ".join(e.name for e in option_owners("data_file"))
            raise UserError(f"data_file/test_file are for CSV studies ({owners}); {self.dataset} is read from a "
                            "data directory", option="data_dir")
        for name in OPTIONS:
            if given(name) and name not in entry.options:
                owners = " or ".join(f"{e.called or e.name} ({e.name})" for e in option_owners(name))
                raise UserError(f"{name} is for {owners}; leave it out")

    def reader_options(self, entry: DatasetEntry) -> dict:
        """What the dataset's reader and check are called with: data_dir and its own options."""
        return {"data_dir": self.data_dir, **{name: getattr(self, name) for name in entry.options}}

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
    entry = dataset_entry(spec.dataset)
    dataset = entry.read(**spec.reader_options(entry))
    if entry.norm is not None and dataset.norm is None:
        dataset = dataclasses.replace(dataset, norm=entry.norm)
    return dataset.select_classes(spec.classes) if spec.classes else dataset
