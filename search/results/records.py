"""What Tune recorded about each trial, digested once: name, config, per-epoch history,
status and error. The trials table and the MLflow reconciliation are both built from it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from trainables.crossval import is_fold_metric
from trainables.latency import LATENCY_METRICS

# completed: trained every epoch; stopped_early: the stopping scheduler ended it at a rung; paused:
# pause-and-promote left it paused at a rung when the search ended (it was not among the best
# there); stopped_by_budget: the study's time budget ended the search while it trained.
FINAL_STATUSES = ("completed", "stopped_early", "paused", "stopped_by_budget", "diverged", "failed")
# Why a trial that did not train every epoch ended, where it was not the scheduler's stop rule:
# search.tune.asha.stop_reasons ("paused") and the time budget ("budget").
REASON_STATUS = {"paused": "paused", "budget": "stopped_by_budget", "asha": "stopped_early"}


def trial_status(epochs_done: int, max_epochs: int, diverged: bool, failed: bool, reason: str = "") -> str:
    if failed:
        return "failed"
    if diverged:
        return "diverged"
    if epochs_done >= max_epochs:
        return "completed"
    return REASON_STATUS.get(reason, "stopped_early")


def trial_name(number: int) -> str:
    return f"trial_{number:03d}"


def trial_number(experiment_tag: str) -> int:
    """Tune's experiment tag starts with the trial's creation index ("3_activation=relu,...");
    it is saved with the experiment, so names stay the same across resumes."""
    return int(experiment_tag.split("_", 1)[0])


def trial_number_from_path(path: str, trial_id: str) -> int | None:
    """The same index, read from a trial folder name ("tune_trial_<id>_<index>_<config>_<date>")."""
    found = re.search(rf"_{re.escape(trial_id)}_(\d+)_", Path(path).name + "_")
    return int(found.group(1)) if found else None


def too_many_failures(failed: int, finished: int, max_fraction: float, min_finished: int = 4) -> bool:
    """The failure budget: more than `max_fraction` of the finished trials failed (counted
    over at least `min_finished`, so two early failures do not end a search)."""
    return failed > max_fraction * max(finished, min_finished)


# timestamp (Tune's, seconds) orders epochs across trials for the report's anytime curve. The
# latency is in the row of the epoch after which it was measured (search.tune.trial: once per worker).
HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_accuracy", "epoch_seconds", "diverged", "timestamp",
                *LATENCY_METRICS)
# Under cross-validation also the spread and per-fold scores (trainables.crossval.is_fold_metric).
# A report made inside an epoch (an early ASHA rung, e.g. after a quarter epoch) carries
# `partial: 1` and `epochs_seen`; it is not an epoch of the history.
PARTIAL_KEYS = ("epochs_seen", "train_loss", "val_loss", "val_accuracy", "timestamp", "epoch_seconds")


def _flag(value) -> bool:
    """Tune's tables hold NaN where a result lacked a key; NaN is truthy, a flag is 1."""
    return value is True or (isinstance(value, (int, float)) and value == 1)


def finite(metrics: dict) -> dict[str, float]:
    """Numbers a tracking store accepts: NaN and infinities (a diverged trial) are left out."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


@dataclass
class TrialRecord:
    trial_id: str
    name: str
    config: dict
    history: list[dict] = field(default_factory=list)
    status: str = "failed"
    error: str = ""
    partials: list[dict] = field(default_factory=list)  # reports inside an epoch (PARTIAL_KEYS)
    numerics: str = ""  # trainables.numerics.Accel.name the trial ran in
    promotions: int = 0  # rungs pause-and-promote resumed it past

    @property
    def epochs(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0

    @property
    def epochs_seen(self) -> float:
        """How far the trial trained, in epochs: a trial ASHA stopped at a quarter-epoch rung
        has 0 whole epochs but 0.25 seen (its cost and how far its score can be trusted)."""
        return max([float(self.epochs)] + [float(p["epochs_seen"]) for p in self.partials])

    @property
    def latency(self) -> dict[str, float]:
        """Its inference latency (trainables.latency), the latest measured; empty if never
        measured (a trial stopped or failed inside its first epoch)."""
        out: dict[str, float] = {}
        for row in self.history:
            out.update(finite({k: row[k] for k in LATENCY_METRICS if k in row}))
        return out


def trial_records(results, max_epochs: int, reasons: dict[str, str] | None = None,
                  promotions: dict[str, int] | None = None) -> list[TrialRecord]:
    """`reasons`: why trials that stopped early stopped (search.tune.asha.stop_reasons, and "budget"
    for the ones the time budget ended); `promotions`: how often each was promoted."""
    reasons, promotions = reasons or {}, promotions or {}
    records = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = str(metrics.get("trial_id") or Path(result.path).name)
        number = trial_number_from_path(result.path, trial_id)
        frame = result.metrics_dataframe
        rows = [] if frame is None or "epoch" not in frame else frame.to_dict("records")
        # An epoch that was run again after a crash appears twice in Tune's log: keep the last.
        by_epoch = {int(row["epoch"]): {k: v for k, v in row.items() if k in HISTORY_KEYS or is_fold_metric(k)}
                    for row in rows if not _flag(row.get("failed")) and not _flag(row.get("partial"))}
        history = [by_epoch[e] for e in sorted(by_epoch)]
        by_point = {float(row["epochs_seen"]): {k: v for k, v in row.items() if k in PARTIAL_KEYS}
                    for row in rows if _flag(row.get("partial"))}
        numerics = next((str(row["numerics"]) for row in reversed(rows) if isinstance(row.get("numerics"), str)), "")
        error = str(metrics.get("error") or "") or (str(result.error) if result.error is not None else "")
        failed = result.error is not None or _flag(metrics.get("failed"))
        diverged = any(_flag(row.get("diverged")) for row in history)
        epochs = int(history[-1]["epoch"]) if history else 0
        records.append(TrialRecord(
            trial_id=trial_id, name=trial_name(number) if number is not None else trial_id,
            config=dict(result.config or {}), history=history,
            status=trial_status(epochs, max_epochs, diverged, failed, reasons.get(trial_id, "")), error=error,
            partials=[by_point[p] for p in sorted(by_point)], numerics=numerics,
            promotions=promotions.get(trial_id, 0),
        ))
    return sorted(records, key=lambda r: r.name)
