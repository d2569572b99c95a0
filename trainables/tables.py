"""Datasets stored as CSV: images as one label column plus one column per pixel
(`pixels_csv`), and tabular data with a target column (`tabular_csv`).

Labels of either kind are remapped to 0..K-1 (sorted, numerically where they are numbers); the
mapping travels with the dataset into best.yaml and model.pt. Without a test file a stratified
20% of the rows is held out as the test split (trainables.datasets.held_out: a fixed seed, so
every run holds out the same rows). Tabular features are not standardised here: like image channels they are
standardised by the network's first layer, with statistics of the split being trained on
(never the test rows). Rows become network input through trainables/encoding.py (fitted on the
training rows), which the dataset carries (`Dataset.encoding`) so the saved model applies it to
new rows too.

Both kinds register themselves here (trainables/dataset_registry.py). pandas is imported only
when a CSV file is read, so that registering them costs image studies nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainables.dataset_registry import CSV, DatasetEntry, register_dataset
from trainables.datasets import HOLDOUT_FRACTION, HOLDOUT_SEED, Dataset, DatasetInfo, Split, held_out, stratified_split
from trainables.errors import UserError

if TYPE_CHECKING:  # both need pandas, imported where a file is read (see above)
    import pandas as pd

    from trainables.encoding import PixelColumns, TabularEncoder


def _read(path: str | None, what: str) -> pd.DataFrame:
    import pandas as pd

    p = Path(path or "").expanduser()
    if not path or not p.is_file():
        raise UserError(f"{what} {p} not found; pass an existing CSV file")
    try:
        frame = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{p} is not a readable CSV file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if frame.empty:
        raise UserError(f"{p} has no data rows")
    return frame


def _encode_labels(train: pd.Series, test: pd.Series | None, column: str) -> tuple[np.ndarray, np.ndarray | None,
                                                                                   dict[str, int]]:
    from trainables.encoding import sorted_values

    if train.isna().any():
        raise UserError(f"column {column!r} has {int(train.isna().sum())} empty labels; fill or drop those rows")
    labels = sorted_values(train)
    if len(labels) < 2:
        raise UserError(f"column {column!r} has only one value ({labels[0]!r}); a classifier needs two or more")
    mapping = {_label_name(v): i for i, v in enumerate(labels)}
    y = train.map(lambda v: mapping[_label_name(v)]).to_numpy(np.int64)
    y_test = None
    if test is not None:
        unseen = sorted({_label_name(v) for v in test.dropna()} - set(mapping))
        if unseen or test.isna().any():
            raise UserError(f"the test file has labels the training file lacks in {column!r}: "
                            f"{', '.join(unseen[:5]) or 'empty'}")
        y_test = test.map(lambda v: mapping[_label_name(v)]).to_numpy(np.int64)
    return y, y_test, mapping


def _label_name(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _dataset(kind: str, x: np.ndarray, y: np.ndarray, x_test, y_test, mapping: dict[str, int],
             source: str, encoding: TabularEncoder | PixelColumns) -> Dataset:
    if x_test is None:
        train, test = held_out(Split(x, y))
    else:
        train, test = Split(x, y), Split(x_test, y_test)
    info = DatasetInfo(kind, "", tuple(mapping), counts=(len(train), len(test)))
    return Dataset(info, train, test, source, label_map=mapping, encoding=encoding)


# --- images as pixel columns -------------------------------------------------------------------

def _label_column(frame: pd.DataFrame) -> str:
    for column in frame.columns:
        if str(column).strip().lower() == "label":
            return column
    return frame.columns[0]


def infer_image_shape(pixels: int) -> tuple[int, int, int]:
    side = math.isqrt(pixels)
    if side * side != pixels:
        raise UserError(f"{pixels} pixel columns do not make a square grey image", option="image_shape", fix="C,H,W")
    return 1, side, side


def _pixel_columns(frame: pd.DataFrame, label: str, shape: tuple[int, int, int], path: str) -> PixelColumns:
    from trainables.encoding import PixelColumns

    names = tuple(str(c) for c in frame.columns if c != label)
    if len(names) != int(np.prod(shape)):
        raise UserError(f"image shape {','.join(map(str, shape))} has {int(np.prod(shape))} pixels but {path} "
                        f"has {len(names)} pixel columns (besides the label {label!r})", option="image_shape",
                        fix="C,H,W that fits them")
    return PixelColumns(names, tuple(shape))  # type: ignore[arg-type]


def load_pixels_csv(data_file: str | None, test_file: str | None,
                    image_shape: tuple[int, int, int] | None) -> Dataset:
    frame = _read(data_file, "data file")
    label = _label_column(frame)
    shape = image_shape or infer_image_shape(frame.shape[1] - 1)
    if len(shape) != 3 or min(shape) < 1 or shape[0] not in (1, 3):
        raise UserError(f"an image shape must be C,H,W with 1 or 3 channels, got {','.join(map(str, shape))}",
                        option="image_shape", fix="C,H,W")
    test = _read(test_file, "test file") if test_file else None
    if test is not None and list(test.columns) != list(frame.columns):
        raise UserError(f"{test_file} has other columns than {data_file}; both need the same header")
    y, y_test, mapping = _encode_labels(frame[label], None if test is None else test[label], str(label))
    pixels = _pixel_columns(frame, label, shape, str(data_file))
    x = pixels.transform(frame, str(data_file))
    x_test = None if test is None else pixels.transform(test, str(test_file))
    return _dataset("pixels_csv", x, y, x_test, y_test, mapping, str(Path(data_file).resolve()), pixels)


# --- tabular rows --------------------------------------------------------------------------------

def load_tabular_csv(data_file: str | None, test_file: str | None, target: str | None) -> Dataset:
    frame = _read(data_file, "data file")
    if target not in frame.columns:
        raise UserError(f"{data_file} has no target column {target!r}; its columns are: "
                        f"{', '.join(map(str, frame.columns[:20]))}{' ...' if len(frame.columns) > 20 else ''}")
    if frame.shape[1] < 2:
        raise UserError(f"{data_file} has no feature columns besides the target {target!r}")
    test = _read(test_file, "test file") if test_file else None
    if test is not None and set(test.columns) != set(frame.columns):
        raise UserError(f"{test_file} has other columns than {data_file}; both need the same header")
    y, y_test, mapping = _encode_labels(frame[target], None if test is None else test[target], target)
    features = frame.drop(columns=[target])
    if test is None:
        # Hold out first, so the fill values and vocabularies are the training rows' alone.
        train_idx, test_idx = stratified_split(y, HOLDOUT_FRACTION, HOLDOUT_SEED)
        train_rows, test_rows, y, y_test = features.iloc[train_idx], features.iloc[test_idx], y[train_idx], y[test_idx]
    else:
        train_rows, test_rows = features, test
    from trainables.encoding import TabularEncoder

    encoder = TabularEncoder.fit(train_rows)
    return _dataset("tabular_csv", encoder.transform(train_rows), y, encoder.transform(test_rows), y_test, mapping,
                    str(Path(data_file).resolve()), encoder)


# --- the registry's entries ----------------------------------------------------------------------
# A reader and a check are called with data_dir and their options by name (DatasetEntry); CSV
# data is read from its files, so data_dir is not used.

def _needs_file(kind: str, data_file: str | None) -> None:
    if not data_file:
        raise UserError(f"{kind} data needs a CSV file (and optionally a test file)", option="data_file",
                        fix="FILE.csv")


def _check_tabular(data_dir: str | None, data_file: str | None, target: str | None, **_) -> None:
    _needs_file("tabular_csv", data_file)
    if not target:
        raise UserError("tabular data needs the column to predict", option="target", fix="COLUMN")


register_dataset(DatasetEntry(
    "pixels_csv", CSV,
    lambda data_dir, data_file, test_file, image_shape: load_pixels_csv(data_file, test_file, image_shape),
    "images as CSV rows, one column per pixel", "`--data-file` (and `--test-file`), with `--image-shape` (*CSV data*)",
    options=("data_file", "test_file", "image_shape"),
    check=lambda data_dir, data_file, **_: _needs_file("pixels_csv", data_file), called="pixel CSV files"))
register_dataset(DatasetEntry(
    "tabular_csv", CSV,
    lambda data_dir, data_file, test_file, target: load_tabular_csv(data_file, test_file, target),
    "any table, one column to predict", "`--data-file` (and `--test-file`), with `--target` (*CSV data*)",
    options=("data_file", "test_file", "target"), check=_check_tabular, images=False, called="tabular CSV files"))
