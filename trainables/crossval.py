"""K-fold cross-validation, for data too small for a trustworthy hold-out split: the folds
(`Folds`, made by `stratified_folds` from a fixed seed, so every trial sees the same ones) and
what a cross-validated epoch reports (`fold_scores`: the mean over folds under the usual metric
names, so searchers and ASHA rank as before, with the spread and each fold's value beside it).

`trainables.train.fit` trains one network per fold in lock-step; this module knows nothing of
training, only which rows each fold holds and how its scores combine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from trainables.errors import UserError

# The scores a cross-validated epoch averages over folds; each also gets `NAME_std` and
# `NAME_foldK` (K from 1).
FOLD_METRICS = ("val_loss", "val_accuracy")
_SPREAD = re.compile(rf"^({'|'.join(FOLD_METRICS)})_(std|fold\d+)$")


def is_fold_metric(name: str) -> bool:
    """A spread or per-fold score (`val_accuracy_std`, `val_loss_fold2`) that a CV epoch reports."""
    return bool(_SPREAD.match(name))


@dataclass(frozen=True)
class Folds:
    """Which fold validates each training row, and the normalisation statistics of each fold's
    training rows (its network's first layer; the rows it validates on are not in them). The
    rows themselves stay in the one resident training split that every fold indexes."""

    of_row: np.ndarray  # (N,) int64: the fold (0..k-1) that validates each row
    stats: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]  # per fold: (mean, std)

    @property
    def k(self) -> int:
        return len(self.stats)

    def val_rows(self, fold: int) -> np.ndarray:
        return np.flatnonzero(self.of_row == fold)

    def train_rows(self, fold: int) -> np.ndarray:
        return np.flatnonzero(self.of_row != fold)


def check_k(k: int) -> None:
    if k < 2:
        raise UserError(f"cross-validation needs at least 2 folds, got {k}", option="cv",
                        fix="2 or more (or leave it out for the usual hold-out validation split)")


def stratified_folds(y: np.ndarray, k: int, classes: tuple[str, ...], seed: int) -> np.ndarray:
    """The fold (0..k-1) of each row: every class spread over the folds as evenly as it divides,
    fold sizes within one row of each other, the same for the same labels and seed. Refused
    where a class has fewer than k rows: some fold would validate without it."""
    check_k(k)
    counts = np.bincount(y, minlength=len(classes))
    short = [(classes[c], int(n)) for c, n in enumerate(counts) if 0 < n < k]
    if short:
        name, n = min(short, key=lambda item: item[1])
        problem = (f"class {name!r} has {n} training example{'s' * (n != 1)}, fewer than the {k} folds of "
                   "cross-validation (every fold must validate on every class)")
        if n < 2:
            raise UserError(f"{problem}; add examples of it or leave cross-validation off")
        raise UserError(problem, option="cv", fix=f"{n} or less")
    rng = np.random.default_rng(seed)
    # One class after another, each in a seeded order, dealt round-robin: the deal continues
    # across classes, so no fold collects every class's remainder.
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    of_row = np.empty(len(y), dtype=np.int64)
    of_row[order] = np.arange(len(order)) % k
    return of_row


def fold_scores(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """One epoch's reports of the k fold networks as one: the mean of each (the spread and each
    fold's value of the validation scores beside it). A fold that diverged makes the epoch
    diverged, as one network's would: validation loss undefined, accuracy 0, ranked last."""
    out = dict(per_fold[0])  # epoch, epochs_seen: the same in every fold
    for key in ("train_loss", *FOLD_METRICS):
        values = [f[key] for f in per_fold if key in f]
        if len(values) < len(per_fold):
            continue
        out[key] = float(np.mean(values))
        if key in FOLD_METRICS:
            out[f"{key}_std"] = float(np.std(values))
            out.update({f"{key}_fold{i + 1}": float(v) for i, v in enumerate(values)})
    diverged = any(f.get("diverged") for f in per_fold)
    out["diverged"] = float(diverged)
    if diverged:
        out.update(val_loss=float("nan"), val_accuracy=0.0, val_loss_std=float("nan"), val_accuracy_std=0.0)
    return out
