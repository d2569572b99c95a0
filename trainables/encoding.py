"""How rows of a CSV file become network input, fitted once on the training rows and then applied
the same way to the training rows, the test rows and any new rows a saved model is given.

`TabularEncoder`: the original feature columns in order; numbers stay numbers (a missing or
infinite value becomes the column's training mean), other columns are one-hot encoded with the
values seen in training (an unseen value: all zeros). `PixelColumns`: images stored one pixel per
column, by name. Both are saved in model.pt as plain types (`to_dict`), so the model takes the
original columns, text and gaps included, and can never encode them otherwise than training did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainables.errors import UserError

log = logging.getLogger(__name__)

NUMBER, TEXT = "number", "text"
# A text column with more distinct values than this is an identifier (a name, an id, free text),
# not a category: one-hot encoded it would be a feature per row (a 582 KB file with an id column
# of 20,000 values became 16,001 features and 5.5 GB). It is left out, and the note says so.
MAX_CATEGORIES = 100


def sorted_values(values: pd.Series) -> list:
    """The distinct values, numerically sorted where they are all numbers, else as text."""
    unique = values.dropna().unique().tolist()
    try:
        return sorted(unique, key=float)
    except (TypeError, ValueError):
        return sorted(unique, key=str)


def _finite(values: pd.Series, column: str, note: bool = True) -> pd.Series:
    # inf / -inf (and values too large for float32) count as missing, like empty cells: one of
    # them would make the column's mean inf and its standard deviation NaN.
    values = values.astype(np.float64)
    bad = ~np.isfinite(values) & values.notna() | (values.abs() > np.finfo(np.float32).max)
    if bad.any() and note:
        log.warning("note: column %r: %d infinite or out-of-range value(s) treated as missing", column, int(bad.sum()))
    return values.mask(bad)


def missing_columns(frame: pd.DataFrame, needed: tuple[str, ...], what: str) -> None:
    """One error naming every column a model needs that `frame` lacks."""
    have = {str(c) for c in frame.columns}
    missing = [c for c in needed if c not in have]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise UserError(f"the input lacks {len(missing)} of the {len(needed)} {what} the model takes: {shown}")


@dataclass(frozen=True)
class Column:
    """One original column: a number with its fill value, or text with its one-hot vocabulary."""

    name: str
    kind: str  # NUMBER or TEXT
    fill: float = 0.0
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return 1 if self.kind == NUMBER else len(self.categories)

    def encode(self, values: pd.Series) -> np.ndarray:
        """(N, width) float32."""
        if self.kind == NUMBER:
            # Text in a number column (a typo, "n/a") is a missing value, as an empty cell is; said,
            # as infinities are.
            coerced = pd.to_numeric(values, errors="coerce")
            text = coerced.isna() & values.notna()
            if text.any():
                example = str(values[text].iloc[0])[:40]
                log.warning("note: column %r: %d text value(s) (e.g. %r) in a number column treated as missing "
                            "(filled with %g)", self.name, int(text.sum()), example, self.fill)
            numbers = _finite(coerced, self.name)
            return numbers.fillna(self.fill).to_numpy(np.float32)[:, None]
        text = _as_text(values)
        if not self.categories:
            return np.zeros((len(values), 0), np.float32)
        return np.stack([(text == c).fillna(False).to_numpy(np.float32) for c in self.categories], axis=1)

    def to_dict(self) -> dict:
        if self.kind == NUMBER:
            return {"name": self.name, "kind": NUMBER, "fill": self.fill}
        return {"name": self.name, "kind": TEXT, "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, d: dict) -> "Column":
        return cls(str(d["name"]), str(d["kind"]), float(d.get("fill", 0.0)),
                   tuple(str(c) for c in d.get("categories", ())))


def _as_text(values: pd.Series) -> pd.Series:
    """Cells as the strings they were read as (a whole float 3.0 is "3", as read from "3")."""
    def name(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return pd.NA
        if isinstance(v, (float, np.floating)) and float(v).is_integer() and values.dtype.kind == "f":
            return str(int(v))
        return str(v)
    if values.dtype.kind in "OUSf" and not isinstance(values.dtype, pd.StringDtype):
        return values.map(name).astype("string")
    return values.astype("string")


@dataclass(frozen=True)
class TabularEncoder:
    columns: tuple[Column, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> "TabularEncoder":
        columns, identifiers = [], []
        for name in frame.columns:
            values = frame[name]
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                finite = _finite(values, str(name), note=False)  # transform notes them
                columns.append(Column(str(name), NUMBER, fill=float(finite.mean()) if finite.notna().any() else 0.0))
                continue
            text = _as_text(values)
            distinct = int(text.nunique())
            if distinct > MAX_CATEGORIES:
                identifiers.append(f"{name!r} ({distinct:,} values)")
                continue
            columns.append(Column(str(name), TEXT, categories=tuple(sorted_values(text))))
        if not columns:
            raise UserError(f"no feature columns are left: {', '.join(identifiers)} have more than {MAX_CATEGORIES} "
                            "distinct values, too many to be categories; add columns the target depends on")
        if identifiers:
            log.warning("note: text column(s) %s have more than %d distinct values: read as identifiers, not "
                        "categories, and left out (group the values into fewer categories to use one)",
                        ", ".join(identifiers), MAX_CATEGORIES)
        return cls(tuple(columns))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def features(self) -> tuple[str, ...]:
        """The network's input features: a number's name, or NAME=VALUE per one-hot category."""
        return tuple(name for c in self.columns
                     for name in ((c.name,) if c.kind == NUMBER else (f"{c.name}={v}" for v in c.categories)))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows with (at least) the original columns -> (N, F, 1, 1) float32; other columns (the
        target, an id) are ignored."""
        missing_columns(frame, self.names, "columns")
        by_name = {str(c): c for c in frame.columns}
        parts = [c.encode(frame[by_name[c.name]]) for c in self.columns]
        x = np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0), np.float32)
        return np.ascontiguousarray(x[:, :, None, None])

    def example(self, x: np.ndarray, rows: int = 2) -> pd.DataFrame:
        """The first encoded rows of `x` back as original columns (a text column's one-hot
        category, or empty where none is set): an input example for the saved model."""
        flat = x[:rows].reshape(min(rows, len(x)), -1)
        out, at = {}, 0
        for c in self.columns:
            if c.kind == NUMBER:
                out[c.name] = flat[:, at].astype(np.float64)
            else:
                hot = flat[:, at:at + c.width]
                out[c.name] = [c.categories[int(h.argmax())] if c.width and h.max() > 0 else None for h in hot]
            at += c.width
        return pd.DataFrame(out)

    def to_dict(self) -> dict:
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: dict) -> "TabularEncoder":
        return cls(tuple(Column.from_dict(c) for c in d["columns"]))


@dataclass(frozen=True)
class PixelColumns:
    """Images stored one pixel per column, row by row with channels last: the columns by name
    and the (C, H, W) they make."""

    names: tuple[str, ...]
    shape: tuple[int, int, int]

    def transform(self, frame: pd.DataFrame, source: str = "the input") -> np.ndarray:
        """-> (N, C, H, W) uint8; values 0-255, or fractions of full brightness."""
        missing_columns(frame, self.names, "pixel columns")
        by_name = {str(c): c for c in frame.columns}
        try:
            values = frame[[by_name[n] for n in self.names]].to_numpy(np.float32)
        except (ValueError, TypeError):
            raise UserError(f"{source} has non-numeric pixel values; every pixel column must be a number") from None
        if np.isnan(values).any():
            raise UserError(f"{source} has empty pixel values")
        if values.size and values.max() <= 1.0 and (values % 1 != 0).any():
            values = values * 255.0  # pixels stored as fractions of full brightness
        if values.size and (values.min() < 0 or values.max() > 255):
            raise UserError(f"{source} has pixel values outside 0-255 ({values.min():g} to {values.max():g})")
        c, h, w = self.shape
        return np.ascontiguousarray(values.round().astype(np.uint8).reshape(-1, h, w, c).transpose(0, 3, 1, 2))

    def to_dict(self) -> dict:
        return {"names": list(self.names), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> "PixelColumns":
        return cls(tuple(str(n) for n in d["names"]), tuple(int(v) for v in d["shape"]))  # type: ignore[arg-type]
