"""The containers every part of trainables shares: what a dataset is (`DatasetInfo`, `Dataset`),
its splits (`Split`), what one training run sees (`TrainingData`), and the statistics and
stratified splits computed from them. Nothing here reads files: trainables/readers.py reads the
registered datasets, trainables/tables.py CSV files, trainables/folders.py image folders, and
trainables/data.py picks between them by the registry (trainables/dataset_registry.py).

Images are uint8 arrays of shape (N, C, H, W) kept resident; trials receive them through the
Ray object store (zero-copy on a node) and cut batches by tensor indexing. Tabular rows are
float32 arrays of shape (N, F, 1, 1): one "channel" per feature, so the same per-channel
standardisation (the network's first layer, trainables.model.Normalize) and batching serve both.
The test images are never part of what a search trial receives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainables.crossval import Folds, stratified_folds
from trainables.errors import UserError
from trainables.images import ImageFormat

if TYPE_CHECKING:  # encoding needs pandas, which image studies never import
    from trainables.encoding import PixelColumns, TabularEncoder

# A folder of the user's own images, one sub-folder per class (trainables/folders.py).
IMAGE_FOLDER = "image_folder"
# Data without a test set of its own (a single CSV file, an image folder without test/) holds out
# this stratified share as its test split, with a fixed seed so every run holds out the same items.
HOLDOUT_FRACTION, HOLDOUT_SEED = 0.2, 0


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folder: str  # torchvision's folder name under a data root
    classes: tuple[str, ...]
    debian_dir: Path | None = None
    # sha256 of each published file's unpacked bytes: the same whether a copy is gzipped,
    # re-gzipped (Debian's package) or plain. Checked when a file claims the published image
    # count, so a damaged copy is caught while a user's own subset in the same layout still loads.
    sha256: dict[str, str] | None = None
    counts: tuple[int, int] = (60000, 10000)



@dataclass
class Split:
    """Images (N, C, H, W) uint8 and labels (N,) int64."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> "Split":
        return Split(np.ascontiguousarray(self.x[idx]), np.ascontiguousarray(self.y[idx]))


@dataclass
class TrainingData:
    """What one training run sees: a training split, an optional evaluation split, and the
    normalisation statistics of the training split (the network's first layer applies them;
    the images are never stored as floats). With `folds` (cross-validation) there is no
    evaluation split: each fold's network validates on its fold of `train`."""

    train: Split
    val: Split | None
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    folds: Folds | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def full_scale(self) -> float:
        """What `mean` and `std` are fractions of: 255 for uint8 pixels, 1 for float features."""
        return 255.0 if self.train.x.dtype == np.uint8 else 1.0


@dataclass
class Dataset:
    info: DatasetInfo
    train: Split
    test: Split
    source: str
    # Fixed normalisation (e.g. a transfer backbone's); None: statistics of the training split.
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # How the original labels map to class indices, for labels that were remapped (CSV data).
    label_map: dict[str, int] | None = None
    # How every image was prepared from its file (image folders): what a prediction must repeat.
    image_format: ImageFormat | None = None
    # CSV data: how the original columns became `x` (trainables.encoding.TabularEncoder or
    # PixelColumns), saved with the model so it takes those columns too.
    encoding: "TabularEncoder | PixelColumns | None" = None

    def _stats(self, x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.norm if self.norm is not None else channel_stats(x)

    def for_search(self, val_fraction: float, seed: int) -> TrainingData:
        """Training data minus a stratified validation split; the test split is left out."""
        train_idx, val_idx = stratified_split(self.train.y, val_fraction, seed)
        train = self.train.take(train_idx)
        return TrainingData(train, self.train.take(val_idx), self.info.classes, *self._stats(train.x))

    def for_cv(self, k: int, seed: int) -> TrainingData:
        """All training images, in k stratified folds fixed by `seed` (trainables.crossval);
        the test split is left out. Each fold's statistics are of the rows it trains on."""
        of_row = stratified_folds(self.train.y, k, self.info.classes, seed)
        stats = tuple(self.norm if self.norm is not None else channel_stats(self.train.x, np.flatnonzero(of_row != f))
                      for f in range(k))
        return TrainingData(self.train, None, self.info.classes, *self._stats(self.train.x), folds=Folds(of_row, stats))

    def for_final(self) -> TrainingData:
        """All training images (train + validation) for the final retrain; evaluation is the
        caller's single pass over ``self.test``."""
        return TrainingData(self.train, None, self.info.classes, *self._stats(self.train.x))

    def select_classes(self, names: tuple[str, ...]) -> "Dataset":
        """Only the images of these classes, relabelled 0..K-1 in the order given."""
        unknown = [n for n in names if n not in self.info.classes]
        if unknown or len(set(names)) < 2:
            raise UserError(f"a class selection needs two or more of {', '.join(self.info.classes)}; "
                            f"got {', '.join(names)}", option="classes")
        old = np.array([self.info.classes.index(n) for n in names])
        lookup = np.full(len(self.info.classes), -1)
        lookup[old] = np.arange(len(old))

        def keep(split: Split) -> Split:
            idx = np.flatnonzero(np.isin(split.y, old))
            return Split(np.ascontiguousarray(split.x[idx]), lookup[split.y[idx]].astype(np.int64))

        info = dataclasses.replace(self.info, classes=tuple(names), sha256=None)
        return dataclasses.replace(self, info=info, train=keep(self.train), test=keep(self.test))

    def sliced(self, n_train: int, n_test: int, seed: int) -> "Dataset":
        """A small stratified slice, for smoke runs and tests (what the data is stays: its
        normalisation, label map, image format and encoding)."""
        return dataclasses.replace(
            self,
            train=self.train.take(stratified_subset(self.train.y, n_train, seed)),
            test=self.test.take(stratified_subset(self.test.y, n_test, seed)),
        )


def channel_stats(x: np.ndarray, rows: np.ndarray | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std, on the [0, 1] scale for uint8 images, as-is for float features;
    of the given `rows` only, where given (a fold's, without copying them out)."""
    # Computed in chunks over uint8 so a large dataset never exists as float32 in memory.
    c = x.shape[1]
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    total = np.zeros(c)
    total_sq = np.zeros(c)
    count = len(x) if rows is None else len(rows)
    for start in range(0, count, 8192):
        part = x[start:start + 8192] if rows is None else x[rows[start:start + 8192]]
        chunk = part.astype(np.float64) / scale
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += (chunk ** 2).sum(axis=(0, 2, 3))
    n = count * x.shape[2] * x.shape[3]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 1e-12))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: each class gives ``round(val_fraction * count)`` images."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = max(1, int(round(val_fraction * len(idx))))
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def held_out(split: Split) -> tuple[Split, Split]:
    """(train, test) of data that has no test set: a stratified HOLDOUT_FRACTION as the test."""
    train_idx, test_idx = stratified_split(split.y, HOLDOUT_FRACTION, HOLDOUT_SEED)
    return split.take(train_idx), split.take(test_idx)


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    if n >= len(y):
        return np.arange(len(y))
    _, keep = stratified_split(y, n / len(y), seed)
    return keep
