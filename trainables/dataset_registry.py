"""The dataset registry: one `DatasetEntry` per name `--dataset` takes, registered with
`register_dataset` by the module that defines its reader, when that module is imported
(trainables/readers.py: Fashion-MNIST, MNIST, CIFAR-10; trainables/tables.py: the CSV kinds;
trainables/folders.py: image folders). trainables/data.py imports those modules, so importing
it, or anything that loads data, fills the registry, as importing `spaces` fills the study
registry (spaces/registry.py).

This module owns the records and the questions asked of them: which names there are (the CLI's
help, "unknown dataset" errors), which dataset takes which option, whether a folder holds a
registered dataset's files, and the table docs/data.md shows (`markdown_table`, checked by
tests/test_data.py so the page cannot go stale). Reading is the readers'; choosing and checking a
run's data is trainables/data.py's. How to add a dataset: docs/data.md, *Adding a dataset*.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trainables.datasets import Dataset
from trainables.errors import UserError

# What a dataset's data is, which says where it comes from: a registered dataset is known by its
# name and its reader finds (or makes) the data itself; the other kinds read the user's own files.
REGISTERED = "registered"
CSV = "CSV files"
FOLDER = "image folder"
KIND_ORDER = (REGISTERED, CSV, FOLDER)  # the order names are listed in: the published datasets first

# The DataSpec fields that belong to some datasets only (data_dir and classes are every dataset's):
# a dataset names the ones its reader takes in `DatasetEntry.options`, and is refused the others.
OPTIONS = ("data_file", "test_file", "image_shape", "target", "image_size", "channels", "invert")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset `--dataset` can name. `read` and `check` are called with the run's data_dir
    and, by name, the options in `options` (e.g. `read(data_dir, data_file=..., test_file=...)`),
    with the values the user gave (None where not given)."""

    name: str
    kind: str  # REGISTERED, CSV or FOLDER
    read: Callable[..., Dataset]
    description: str  # one line: what the data is
    found: str  # where the data is read from, as docs/data.md says it
    input_shape: tuple[int, int, int] | None = None  # (C, H, W); None: the user's data decides
    classes: tuple[str, ...] | None = None  # None: the user's data decides
    # Fixed per-channel (mean, std) on the [0, 1] scale, given to every network trained on it;
    # None (every built-in dataset): the statistics of the split being trained on, computed when
    # the data is split (trainables.datasets.channel_stats), never of the test images.
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    options: tuple[str, ...] = ()  # which of OPTIONS `read` takes
    # What the dataset needs of its options (a file, a column), checked when a DataSpec is made,
    # so a study is refused before it starts, not after its data is read. Raises UserError.
    check: Callable[..., None] | None = None
    # Registered datasets read from files: whether a folder holds them where `read` looks, so
    # that a folder of the user's own images given to an image study can be told from a data root.
    holds: Callable[[Path], bool] | None = None
    images: bool = True  # its data is images, so a folder of the user's images can stand in for it
    called: str = ""  # how an error names data of this kind ("pixel CSV files"); default: the name

    def __post_init__(self) -> None:
        if self.kind not in KIND_ORDER:
            raise ValueError(f"dataset {self.name!r}: kind must be one of {KIND_ORDER}, got {self.kind!r}")
        unknown = set(self.options) - set(OPTIONS)
        if unknown:
            raise ValueError(f"dataset {self.name!r}: unknown options {sorted(unknown)}; known: {OPTIONS}")


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> DatasetEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"dataset {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def unregister_dataset(name: str) -> None:
    """Forget a dataset (tests that register one of their own remove it again)."""
    _REGISTRY.pop(name, None)


def dataset_names(kind: str | None = None) -> list[str]:
    """Every registered name (or those of one kind), in the same order whichever module was
    imported first: by kind (KIND_ORDER), then by name."""
    entries = sorted(_REGISTRY.values(), key=lambda e: (KIND_ORDER.index(e.kind), e.name))
    return [e.name for e in entries if kind is None or e.kind == kind]


def dataset_entry(name: str) -> DatasetEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}") from None


def option_owners(option: str) -> list[DatasetEntry]:
    """The datasets that take `option` (one of OPTIONS), for errors that say where it belongs."""
    return [_REGISTRY[name] for name in dataset_names() if option in _REGISTRY[name].options]


def holds_dataset(name: str, data_dir: str) -> bool:
    """Whether `data_dir` holds dataset `name`'s files where its reader looks (only names are
    checked); False for datasets that are not found in a data directory."""
    entry, root = dataset_entry(name), Path(data_dir).expanduser()
    return entry.holds is not None and root.is_dir() and entry.holds(root)


def markdown_table() -> str:
    """The registry as docs/data.md shows it between its `datasets` markers."""
    def shape(e: DatasetEntry) -> str:
        return " x ".join(map(str, e.input_shape)) if e.input_shape else "from the data"

    rows = ["| `--dataset` | kind | input (C x H x W) | classes | what | where it is read from |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name in dataset_names():
        e = _REGISTRY[name]
        classes = str(len(e.classes)) if e.classes else "from the data"
        rows.append(f"| `{name}` | {e.kind} | {shape(e)} | {classes} | {e.description} | {e.found} |")
    return "\n".join(rows) + "\n"
