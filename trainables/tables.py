"""Datasets stored as CSV: images as one label column plus one column per pixel
(`pixels_csv`), and tabular data with a target column (`tabular_csv`).

Labels of either kind are remapped to 0..K-1 (sorted, numerically where they are numbers); the
mapping travels with the dataset into best.yaml and model.pt. Without a test file a stratified
20% of the rows is held out as the test split (trainables.datasets.held_out: a fixed seed, so
every run holds out the same rows). Tabular features are not standardised here: like image channels they are
standardised by the network's first layer, with statistics of the split being trained on
(never the test rows).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.datasets import Dataset, DatasetInfo, Split, held_out
from trainables.errors import UserError


def _read(path: str | None, what: str) -> pd.DataFrame:
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


def _sorted_labels(values: pd.Series) -> list:
    unique = values.dropna().unique().tolist()
    try:
        return sorted(unique, key=float)
    except (TypeError, ValueError):
        return sorted(unique, key=str)


def _encode_labels(train: pd.Series, test: pd.Series | None, column: str) -> tuple[np.ndarray, np.ndarray | None,
                                                                                   dict[str, int]]:
    if train.isna().any():
        raise UserError(f"column {column!r} has {int(train.isna().sum())} empty labels; fill or drop those rows")
    labels = _sorted_labels(train)
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
             source: str) -> Dataset:
    if x_test is None:
        train, test = held_out(Split(x, y))
    else:
        train, test = Split(x, y), Split(x_test, y_test)
    info = DatasetInfo(kind, "", tuple(mapping), counts=(len(train), len(test)))
    return Dataset(info, train, test, source, label_map=mapping)


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


def _pixels(frame: pd.DataFrame, label: str, shape: tuple[int, int, int], path: str) -> np.ndarray:
    pixels = frame.drop(columns=[label])
    if pixels.shape[1] != int(np.prod(shape)):
        raise UserError(f"image shape {','.join(map(str, shape))} has {int(np.prod(shape))} pixels but {path} "
                        f"has {pixels.shape[1]} pixel columns (besides the label {label!r})", option="image_shape",
                        fix="C,H,W that fits them")
    try:
        values = pixels.to_numpy(np.float32)
    except ValueError:
        raise UserError(f"{path} has non-numeric pixel values; every column but the label must be a number") from None
    if np.isnan(values).any():
        raise UserError(f"{path} has empty pixel values")
    if values.max() <= 1.0 and values.dtype.kind == "f" and (values % 1 != 0).any():
        values = values * 255.0  # pixels stored as fractions of full brightness
    if values.min() < 0 or values.max() > 255:
        raise UserError(f"{path} has pixel values outside 0-255 ({values.min():g} to {values.max():g})")
    # Columns run row by row, channels last (C,H,W with C=1 is the same thing); stored C-first.
    c, h, w = shape
    return np.ascontiguousarray(values.round().astype(np.uint8).reshape(-1, h, w, c).transpose(0, 3, 1, 2))


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
    x = _pixels(frame, label, shape, str(data_file))
    x_test = None if test is None else _pixels(test, label, shape, str(test_file))
    return _dataset("pixels_csv", x, y, x_test, y_test, mapping, str(Path(data_file).resolve()))


# --- tabular rows --------------------------------------------------------------------------------

def _finite(values: pd.Series, column) -> pd.Series:
    values = values.astype(np.float64)
    bad = ~np.isfinite(values) & values.notna() | (values.abs() > np.finfo(np.float32).max)
    if bad.any():
        print(f"note: column {column!r}: {int(bad.sum())} infinite or out-of-range value(s) treated as missing",
              file=sys.stderr)
    return values.mask(bad)


def _encode_features(train: pd.DataFrame, test: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray | None,
                                                                             list[str]]:
    """Numbers stay numbers (a missing value becomes the training column's mean); other columns
    are one-hot encoded with the categories seen in training (unseen test categories: all zero)."""
    parts, names = [], []
    test_parts = []
    for column in train.columns:
        values = train[column]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if numeric:
            # inf / -inf (and values too large for float32) are treated as missing, like empty cells:
            # one of them would make the column's mean inf and its standard deviation NaN.
            values = _finite(values, column)
            fill = float(values.mean()) if values.notna().any() else 0.0
            parts.append(values.fillna(fill).to_numpy(np.float32)[:, None])
            names.append(str(column))
            if test is not None:
                test_values = _finite(pd.to_numeric(test[column], errors="coerce"), column)
                test_parts.append(test_values.fillna(fill).to_numpy(np.float32)[:, None])
            continue
        categories = _sorted_labels(values.astype("string"))
        as_text = values.astype("string")
        parts.append(np.stack([(as_text == c).fillna(False).to_numpy(np.float32) for c in categories], axis=1))
        names += [f"{column}={c}" for c in categories]
        if test is not None:
            test_text = test[column].astype("string")
            test_parts.append(
                np.stack([(test_text == c).fillna(False).to_numpy(np.float32) for c in categories], axis=1)
            )
    x = np.concatenate(parts, axis=1)
    x_test = np.concatenate(test_parts, axis=1) if test is not None else None
    return x, x_test, names


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
    x, x_test, _ = _encode_features(
        frame.drop(columns=[target]),
        None if test is None else test.drop(columns=[target])[frame.drop(columns=[target]).columns],
    )
    x = np.ascontiguousarray(x[:, :, None, None])
    x_test = None if x_test is None else np.ascontiguousarray(x_test[:, :, None, None])
    return _dataset("tabular_csv", x, y, x_test, y_test, mapping, str(Path(data_file).resolve()))
