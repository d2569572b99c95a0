"""A study's phases, each taking and returning typed values:

    prepare   the request's data, loaded and split once (every bad-input check before training)
    search    Ray Tune's trials (new or restored), ended by the study, a budget or Ctrl-C
    choose    the best trial that can be a final model
    finalize  the final model (retrained or the best checkpoint), tested once, saved, logged

`search.study.study_run` runs them in order with tracking and resume around them; the benchmarks
call `search` itself, so what they measure is what users run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from search.data_args import DataChoice, load_choice
from search.results.best_config import BestConfig
from search.results.files import BEST_FILE, OPTUNA_DB, TUNE_DIR
from search.results.optuna_store import Store
from search.results.records import TrialRecord, trial_records
from search.results.request import SMOKE_TEST, SMOKE_TRAIN, StudyRequest
from search.study.final import FinalResult, FinalSpec, from_checkpoint, log_final, retrain, save_model
from search.tracking.tracker import Tracker
from search.tracking.trial_logger import TrialLogger
from search.tune.asha import promotions, stop_reasons
from search.tune.budget import BudgetPlan, budget_stopped
from search.tune.searcher import close_paused
from search.tune.tuner import BenchHooks, Plan, best_checkpoint, build_tuner, restore_tuner
from search.tune.warm import warm_counts
from search.util.clock import command_started
from search.util.progress import say
from search.util.provenance import git_commit, package_versions
from spaces.study import Study
from trainables.datasets import Dataset, TrainingData
from trainables.model import NetConfig
from trainables.transfer import Backbone

# --- prepare ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    dataset: Dataset  # every training image (the final retrain) and the held-out test images
    # The training images split into the search's train and validation, or under cross-validation
    # all of them in folds.
    search_data: TrainingData
    backbone: Backbone | None  # transfer studies: the network they fine-tune


def prepare(study: Study, request: StudyRequest) -> Prepared:
    dataset, backbone = load_choice(DataChoice.from_dict(request.data))
    if request.smoke:
        dataset = dataset.sliced(SMOKE_TRAIN, SMOKE_TEST, request.seed)
    # The folds come from the study's seed: every trial, and a resumed search, sees the same ones.
    search_data = dataset.for_cv(request.cv, request.seed) if request.cv else \
        dataset.for_search(study.settings.val_fraction, request.seed)
    return Prepared(dataset, search_data, backbone)


# --- search -----------------------------------------------------------------------------------


class CtrlC:
    """The first Ctrl-C asks Tune to stop the way it stops on SIGUSR1: no new trials, the
    experiment state saved, running trials left resumable. A second Ctrl-C stops at once."""

    def __init__(self):
        self.pressed = False

    def _handler(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        print("\nstopping: saving the search state (Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)

    def __enter__(self) -> "CtrlC":
        # Tune's own SIGINT handler is off (TUNE_DISABLE_SIGINT_HANDLER, set by the CLI) so
        # that this one can tell an interruption from a search that ended by itself.
        self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)


@dataclass
class SearchOutcome:
    results: Any  # Tune's ResultGrid: checkpoints and metrics per trial
    records: list[TrialRecord]
    interrupted: bool  # Ctrl-C: the state is saved and the study resumable
    budget: dict | None = None  # what the time budget wrote when it ended the search (search.tune.budget)


@dataclass(frozen=True)
class SearchContext:
    """What the search phase works with, as StudyContext is what the final phase works with."""

    study: Study
    plan: Plan
    data: TrainingData  # the search's split (or folds) of the training images
    folder: Path  # the study folder: Tune's state and, by default, the Optuna store
    logger: TrialLogger  # every trial's results to MLflow, as they come
    backbone: Backbone | None = None  # transfer studies: the network they fine-tune
    budget: BudgetPlan | None = None  # the time budget (search.tune.budget): the final phase keeps its room
    store: Store | None = None  # the Optuna store, when not the study folder's optuna.db
    warm_trials: tuple = ()  # earlier trials TPE starts from (search.tune.warm), taken by a new search only
    hooks: BenchHooks | None = None  # the benchmarks' seam (search.tune.tuner.BenchHooks); None for commands


def search(ctx: SearchContext, finished: bool = False) -> SearchOutcome:
    """Run the search in the study folder on the Ray session already started: a new one, or the
    saved one continued. `finished`: the search already ended (the study reached its final phase):
    its results are read back, nothing runs."""
    if (ctx.folder / TUNE_DIR / "tuner.pkl").exists():
        tuner = restore_tuner(ctx.study, ctx.plan, ctx.data, ctx.folder, ctx.backbone, ctx.hooks)
    else:
        tuner = build_tuner(ctx.study, ctx.plan, ctx.data, ctx.folder, ctx.logger, ctx.backbone, ctx.budget,
                            ctx.store, ctx.warm_trials, ctx.hooks)
    if finished:  # the search ended before (the driver died in the final phase): read it, run nothing
        return ended(tuner.get_results(), ctx.folder, ctx.plan, ctx.store, interrupted=False)
    with CtrlC() as ctrl_c:
        results = tuner.fit()
    return ended(results, ctx.folder, ctx.plan, ctx.store, ctrl_c.pressed)


def ended(results, folder: Path, plan: Plan, store: Store | None, interrupted: bool) -> SearchOutcome:
    """The search's outcome: each trial's record, with why it ended where it ended (the scheduler's
    own record, search.tune.asha, and the budget's, search.tune.budget). A search that ended (not one
    interrupted, which resumes) closes the trials left paused at a rung as PRUNED in the store."""
    tune_dir = folder / TUNE_DIR
    reasons, fired = stop_reasons(tune_dir), budget_stopped(tune_dir)
    if fired is not None:
        reasons = {**{str((r.metrics or {}).get("trial_id")): "budget" for r in results}, **reasons}
    records = trial_records(results, plan.max_epochs, reasons, promotions(tune_dir))
    if not interrupted:
        paused = {r.trial_id for r in records if r.status == "paused"}
        if paused and (store is not None or (folder / OPTUNA_DB).exists()):
            close_paused(store or Store.in_study_folder(folder, folder.name), paused)
    return SearchOutcome(results, records, interrupted, fired)


# --- choose -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BestTrial:
    record: TrialRecord
    config: NetConfig
    best_epoch: int
    scores: dict[str, float]  # its best epoch's metric and validation loss (and the metric's spread under CV)
    checkpoint: Path | None  # that epoch's weights, where Tune kept them
    note: str = ""  # why it was chosen over the table's first row (a start point kept), or ""


def score_at(record: TrialRecord, metric: str, fidelity: float) -> float | None:
    """The trial's `metric` when it had trained `fidelity` epochs (a whole epoch or a rung inside
    one), or None if it never reported there."""
    for row in [*record.history, *record.partials]:
        if float(row.get("epochs_seen", row.get("epoch", -1))) == fidelity and metric in row:
            return float(row[metric])
    return None


def _reports(record: TrialRecord) -> list[tuple[float, dict]] | None:
    """Each of the trial's reports (whole epochs and rungs inside one) with the seconds of training
    that reached it, in time order; None if a report lacks its seconds. A report's seconds are the
    whole epochs' before it plus its own epoch's so far: the time a run from scratch takes to get
    there, whatever pauses it had on the way."""
    epochs = sorted(record.history, key=lambda row: float(row["epoch"]))
    before = [0.0]
    for row in epochs:
        if not row.get("epoch_seconds"):
            return None
        before.append(before[-1] + float(row["epoch_seconds"]))
    reports = [(before[i + 1], row) for i, row in enumerate(epochs)]
    for row in record.partials:
        whole = int(float(row["epochs_seen"]))
        if not row.get("epoch_seconds") or whole >= len(before):
            return None
        reports.append((before[whole] + float(row["epoch_seconds"]), row))
    return sorted(reports, key=lambda report: report[0])


def score_within(record: TrialRecord, metric: str, seconds: float) -> float | None:
    """The trial's `metric` after `seconds` of training (interpolated between the reports on
    either side, timed as _reports times them), or None if it reported nothing that early or
    lacks the seconds of a report."""
    points = [(t, float(row[metric])) for t, row in _reports(record) or [] if metric in row]
    if not points or seconds < points[0][0]:
        return None
    for (t0, s0), (t1, s1) in zip(points, points[1:]):
        if t0 <= seconds <= t1:
            return s0 if t1 == t0 else s0 + (s1 - s0) * (seconds - t0) / (t1 - t0)
    return points[-1][1]


def training_seconds(record: TrialRecord) -> float:
    """Seconds the trial trained, as _reports times them (0 if a report lacks its seconds)."""
    reports = _reports(record)
    return reports[-1][0] if reports else 0.0


def _noise(a: float, b: float, images: int) -> float:
    """One standard error of the difference of two accuracies, each on `images` images."""
    return math.sqrt((a * (1 - a) + b * (1 - b)) / max(images, 1))


def is_start_point(record: TrialRecord, study: Study) -> bool:
    return any(all(record.config.get(k) == v for k, v in point.items()) for point in study.start_points)


def kept_start_point(study: Study, scored: pd.DataFrame, records: dict[str, TrialRecord],
                     val_size: int) -> tuple[TrialRecord, str] | None:
    """The best start point, unless the table's leader beats it by more than the noise of
    validation accuracy both where the two trained equally far and where they trained equally
    long; with why, else None.

    Equally far: a leader chosen at a quarter or one epoch by a margin one validation split cannot
    resolve is a coin toss against the study's known-good configuration, and under a time budget
    the winner is then trained many times longer than it was compared (measured, issue 19: on 2
    cores two of three 12-minute searches chose such a leader, 0.0002 and 0.005 ahead after one
    epoch, and it tested worse than the start point trained alone). Equally long: the final phase
    trains the choice for the time left, not for a number of epochs, so a leader three times
    slower per epoch gets a third of the start point's epochs there (measured, issue 19: a leader
    with a 99-filter first block, 0.008 ahead at 3 epochs but at 38 s an epoch against the
    textbook network's 13, trained 6 more epochs where the textbook network would have had about
    20). The noise is one standard error of the difference of two accuracies on `val_size` images
    (about 0.006 at 0.88 on 6,000)."""
    leader = records[str(scored.iloc[0]["trial_id"])]
    if is_start_point(leader, study):
        return None
    points = [records[str(t)] for t in scored["trial_id"] if is_start_point(records[str(t)], study)]
    if not points:
        return None
    point, metric = points[0], study.settings.metric
    fidelity = min(leader.epochs_seen, point.epochs_seen)
    a, b = score_at(leader, metric, fidelity), score_at(point, metric, fidelity)
    if a is None or b is None:
        return None
    noise = _noise(a, b, val_size)
    far = f"{metric} at {fidelity:g} epoch{'' if fidelity == 1 else 's'}"
    if a - b <= noise:
        return point, (f"{point.name} (a start point) rather than {leader.name}, which led it by {a - b:+.4f} "
                       f"{far}, within the validation noise ({noise:.4f})")
    seconds = min(training_seconds(leader), training_seconds(point))
    a_t, b_t = score_within(leader, metric, seconds), score_within(point, metric, seconds)
    if a_t is None or b_t is None:
        return None
    noise_t = _noise(a_t, b_t, val_size)
    if a_t - b_t > noise_t:
        return None
    return point, (f"{point.name} (a start point) rather than {leader.name}, which led it by {a - b:+.4f} {far} "
                   f"but by {a_t - b_t:+.4f} within the same {seconds:.0f} s of training (noise {noise_t:.4f}): "
                   f"the final model trains for a time, not for epochs")


def choose(study: Study, table: pd.DataFrame, outcome: SearchOutcome,
           start_point_noise: int | None = None) -> BestTrial | None:
    """The best trial with at least one whole epoch (one stopped inside its first epoch was
    ranked, but has no checkpoint to test) that fits the user's device (the table's `fits`:
    --max-mmacs, --max-latency-ms), or None when no trial qualifies. A search that ended before
    any trial trained a whole epoch (a short budget; pause-and-promote before its first
    promotion) chooses the best at its first rung, which the final phase retrains.
    `start_point_noise` (the validation images, for an accuracy metric, where the final model
    trains for the time left): the best start point stays the choice unless the leader beats it
    by more than that validation split's noise, both as far and as long as they both trained
    (kept_start_point)."""
    s = study.settings
    if s.metric not in table:
        return None
    fits = table["fits"].astype(bool) if "fits" in table else True
    candidates = table[(table["status"] != "failed") & fits].dropna(subset=[s.metric])
    whole = candidates[candidates.get("best_epoch", 0) >= 1]
    scored = whole if not whole.empty else candidates
    if scored.empty:
        return None
    records = {r.trial_id: r for r in outcome.records}
    row, note = scored.iloc[0], ""
    kept = kept_start_point(study, scored, records, start_point_noise) if start_point_noise else None
    if kept is not None:
        note = kept[1]
        row = scored[scored["trial_id"] == kept[0].trial_id].iloc[0]
    record = records[row["trial_id"]]
    spread = f"{s.metric}_std"  # cross-validation: how far the folds' scores spread around it
    scores = {s.metric: float(row[s.metric]), "val_loss": float(row["val_loss"]),
              **({spread: float(row[spread])} if spread in row and pd.notna(row[spread]) else {})}
    return BestTrial(record, NetConfig.from_flat(record.config), int(row["best_epoch"]), scores,
                     best_checkpoint(outcome.results, record.trial_id, s.metric, s.mode), note)


def start_point_noise(study: Study, request: StudyRequest, prepared: Prepared, budget: BudgetPlan | None) -> int | None:
    """choose's `start_point_noise` for this study: the validation images where a start point may
    be kept (an accuracy metric on one validation split, a final model trained for the time the
    budget leaves), else None. A final that tests or retrains a trial as far as it trained
    needs the trial that did best, not the configuration likely best."""
    s = study.settings
    if budget is None or request.final not in ("stretch", "continue") or request.cv or not study.start_points:
        return None
    val = prepared.search_data.val
    return len(val) if s.metric.endswith("accuracy") and s.mode == "max" and val is not None else None


# --- finalize ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyContext:
    """What the final phase works with: the study, as asked and as planned, and its MLflow run."""

    study: Study
    request: StudyRequest
    prepared: Prepared
    plan: Plan
    tracker: Tracker
    parent_run_id: str
    threads: int  # CPU threads of the final phase: a whole node's (nothing else runs then)
    budget: BudgetPlan | None = None  # the study's time budget (search.tune.budget), if it has one


@dataclass(frozen=True)
class Finished:
    best: BestConfig  # what best.yaml says
    final: FinalResult
    spec: FinalSpec
    registered: str  # "NAME/VERSION" in the model registry, or ""


def epoch_pace(record: TrialRecord) -> float:
    """Seconds an epoch of the trial took: the median of its whole epochs, or, with none, its
    first rung's seconds per epoch (a trial stopped inside its first epoch)."""
    seconds = [float(h["epoch_seconds"]) for h in record.history if h.get("epoch_seconds")]
    if seconds:
        return statistics.median(seconds)
    partial = [p for p in record.partials if p.get("epoch_seconds") and p.get("epochs_seen")]
    return float(partial[0]["epoch_seconds"]) / float(partial[0]["epochs_seen"]) if partial else math.inf


def final_spec(ctx: StudyContext, best: BestTrial) -> FinalSpec:
    """What the final model will be: what --final asks for where the time budget allows it, else
    the best trial's own checkpoint (with a note saying why). Under a budget, the retrain's
    length comes from the pace the best trial trained at (the median of its epochs, scaled to the
    final training set), and `stretch` and `continue` train until the budget's end less what
    follows training. Under cross-validation a trial's checkpoint holds one network per fold, none
    trained on all the data: it is neither tested nor continued (continue becomes stretch)."""
    request, plan, budget = ctx.request, ctx.plan, ctx.budget
    base = FinalSpec(best.config, epochs=max(1, best.best_epoch), seed=request.seed, threads=ctx.threads,
                     use_gpu=plan.gpus_per_trial > 0, schedule_epochs=plan.max_epochs, precision=request.precision,
                     mode="retrain", asked=request.final)
    usable = best.checkpoint is not None and not request.cv
    checkpoint = dataclasses.replace(base, mode="checkpoint") if usable else None
    if request.final == "checkpoint" and checkpoint is not None:
        return checkpoint
    if budget is None or request.final == "checkpoint":
        return base  # stretch and continue need a time to train to; without a budget they are a retrain
    pace = epoch_pace(best.record) * budget.scale
    until = budget.train_until(command_started())
    left = until - time.time()
    epochs = int(left / pace + 0.5)
    note = ""
    if request.final == "continue":
        if usable and epochs >= 1:
            total = best.best_epoch + epochs
            return dataclasses.replace(base, mode="continue", epochs=total, schedule_epochs=total, deadline=until,
                                       start_epoch=best.best_epoch)
        if usable:
            return dataclasses.replace(checkpoint, note=(
                f"the {max(left, 0) / 60:.1f} min left would not train another epoch: {best.record.name}'s own "
                f"weights from epoch {best.best_epoch} are tested instead"))
        note = (f"{best.record.name} has no checkpoint to continue "
                f"({'its folds are separate networks' if request.cv else 'it stopped inside its first epoch'}): "
                "its configuration is trained afresh for the time left")
    if request.final in ("stretch", "continue"):
        if epochs >= max(1, best.best_epoch) or checkpoint is None:
            return dataclasses.replace(base, mode="stretch", epochs=max(1, epochs), schedule_epochs=max(1, epochs),
                                       deadline=until, note=note)
        why = (f"the {max(left, 0) / 60:.1f} min left would train about {epochs} epochs, fewer than "
               f"{best.record.name} trained: its own weights from epoch {best.best_epoch} are tested instead")
    else:
        if pace * best.best_epoch <= left or checkpoint is None:
            return base
        why = (f"retraining for {best.best_epoch} epochs would take {pace * best.best_epoch / 60:.1f} min, "
               f"{max(left, 0) / 60:.1f} are left: {best.record.name}'s own weights are tested instead")
    return dataclasses.replace(checkpoint, note=why)


def finalize(ctx: StudyContext, best: BestTrial, table: pd.DataFrame) -> Finished:
    """The final model of `best`, tested once on the held-out images; model.pt, best.yaml and
    the MLflow records written."""
    s, request, data, tracker = ctx.study.settings, ctx.request, ctx.prepared, ctx.tracker
    record, parent = best.record, ctx.parent_run_id
    tracker.set_tags(parent, {"hpsearch.best_trial": record.name})
    children = tracker.child_runs(parent)
    if record.trial_id in children:
        tracker.set_tags(children[record.trial_id].run_id, {"hpsearch.best": "true"})
    spec = final_spec(ctx, best)
    if best.note:
        say(f"chosen: {best.note}")
    if spec.note:
        say(f"final model: {spec.note}")
    dataset = data.dataset
    if spec.mode == "checkpoint":
        say(f"testing {record.name}'s own weights from epoch {spec.epochs} (chosen on validation)\n"
            f"  once, on {len(dataset.test)} test images", flush=True)
        final = from_checkpoint(spec, best.checkpoint, data.search_data, dataset, data.backbone)
        # Tune keeps one best checkpoint; on a tie in score it names the epoch.
        spec = dataclasses.replace(spec, epochs=final.epoch)
    elif spec.mode == "stretch":
        say(f"training {record.name}'s configuration on all {len(dataset.train)} training images for the "
            f"{(spec.deadline - time.time()) / 60:.1f} min the budget leaves\n  (about {spec.epochs} epochs, its "
            f"schedule stretched to them), then testing it once on {len(dataset.test)} test images", flush=True)
        final = retrain(spec, dataset, on_ray=True, backbone=data.backbone)
        trained = len(final.history)
        spec = dataclasses.replace(spec, epochs=trained, schedule_epochs=trained)
    elif spec.mode == "continue":
        say(f"training {record.name} on from its epoch {spec.start_epoch}, on all {len(dataset.train)} training "
            f"images, for the {(spec.deadline - time.time()) / 60:.1f} min left\n  (about "
            f"{spec.epochs - spec.start_epoch} more epochs, its schedule stretched to them), then testing it once "
            f"on {len(dataset.test)} test images", flush=True)
        final = retrain(spec, dataset, on_ray=True, backbone=data.backbone, checkpoint_dir=best.checkpoint)
        trained = len(final.history)
        spec = dataclasses.replace(spec, epochs=trained, schedule_epochs=trained)
    else:
        # Two lines: each within a terminal's width (search.util.progress.WIDTH).
        say(f"retraining {record.name} on all {len(dataset.train)} training images for {spec.epochs} "
            f"epoch{'s' if spec.epochs != 1 else ''} of its {spec.schedule_epochs}-epoch schedule,\n"
            f"  then testing it once on {len(dataset.test)} test images", flush=True)
        final = retrain(spec, dataset, on_ray=True, backbone=data.backbone)
    folder = request.folder
    save_model(final, spec, dataset, ctx.study.name, folder, data.backbone)
    registered = log_final(tracker, parent, final, spec, dataset, folder, data.backbone, request.register_model)
    choice = DataChoice.from_dict(request.data)
    config = BestConfig(
        space=ctx.study.name, dataset=choice.spec.dataset, hyperparameters=best.config.to_flat(), epochs=spec.epochs,
        schedule_epochs=spec.schedule_epochs or spec.epochs, final=spec.describe(final.numerics),
        data=choice.to_dict(), classes=list(dataset.info.classes),
        seed=request.seed, val_fraction=s.val_fraction,
        metrics={**best.scores, "test_accuracy": final.test_accuracy, "test_loss": final.test_loss},
        per_class_accuracy=final.per_class_accuracy,
        search={"name": request.name, "best_trial": record.name, "trials": int(len(table)),
                **({"warm_start": warm_counts(request.store)} if request.warm_start else {}),
                **({"chosen": best.note} if best.note else {}),
                "trial_epochs": round(float(table["epochs_seen"].sum()), 2), "smoke": bool(request.smoke),
                "train_images": len(data.search_data.train), "results_dir": str(folder),
                **({"cv": request.cv} if request.cv else {})},
        mlflow={"tracking_uri": request.tracking_uri, "experiment_id": tracker.experiment_id,
                "parent_run_id": parent,
                "trial_run_id": children[record.trial_id].run_id if record.trial_id in children else ""},
        versions=package_versions(), git_commit=git_commit(),
    )
    config.save(folder / BEST_FILE)
    tracker.log_artifact(parent, folder / BEST_FILE)
    return Finished(config, final, spec, registered)
