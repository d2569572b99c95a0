"""The one training function: search trials, the final retrain and `search.train` all call `fit`.

`fit` is a plain loop over in-memory uint8 tensors that knows nothing of Ray. What differs
between callers is only what happens at the end of an epoch (`on_epoch`): a search trial
(search/tune/trial.py) reports metrics and a checkpoint to Tune; the final retrain just records the
history.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trainables.augment import augment
from trainables.crossval import fold_scores
from trainables.datasets import Split, TrainingData
from trainables.model import NetConfig, Normalize, build_model, lr_factor, make_optimizer, upgrade_state_dict
from trainables.numerics import Accel, accelerator

if TYPE_CHECKING:
    from trainables.transfer import Backbone

CHECKPOINT_FILE = "checkpoint.pt"
EVAL_BATCH = 2048
DIVERGENCE_CHECK_STEPS = 50


@dataclass(frozen=True)
class TrialSettings:
    """Run settings a trial needs; kept apart from hyperparameters so they are never logged as such."""

    max_epochs: int
    seed: int = 0
    threads: int = 1
    backbone: "Backbone | None" = None  # transfer studies: the network they fine-tune
    precision: str = "auto"  # trainables.numerics: auto | bf16 | fp32
    # Points (in epochs, e.g. 0.25) inside an epoch at which a trial also reports, so ASHA can
    # drop a poor configuration before its first epoch ends.
    report_points: tuple[float, ...] = ()


@dataclass(frozen=True)
class Deadline:
    """Train until a wall-clock time (`time.time()`, so a Ray task on another process of the
    machine keeps it) instead of for a fixed number of epochs: after each of the first two
    epochs the number of epochs becomes what fits in the time left at the measured pace,
    rounded up; after later ones it can only shrink, if the pace slows. Once `min_epochs` are
    done, the epoch still running at the deadline ends there, part trained (its `epochs_seen`
    says how far): so the time is used to its end (rounding to the nearest whole epoch ended
    12-minute runs up to 5% late or 7% early), at the cost of a cosine that stops a little short
    of zero. The learning-rate schedule's horizon follows the planned epochs, so the schedule is
    stretched to the time there is (a cosine decays to its end at the deadline); re-planned
    that early, the horizon moves a cosine's factor by under 1% (0.951 at 2/14 against 0.943
    at 2/13)."""

    at: float
    min_epochs: int = 1

    def epochs(self, done: int, seconds: list[float], planned: int) -> int:
        """The epochs to train in all, after `done` epochs that took `seconds` each."""
        if not seconds:
            return planned
        # The median, not the last: one epoch slowed by another process must not cut the plan;
        # and past the first, which also builds the model and warms the caches.
        pace = float(np.median(seconds[1:] if len(seconds) > 1 else seconds))
        fits = done + math.ceil((self.at - time.time()) / max(pace, 1e-6))
        best = fits if done <= 2 else min(planned, fits)
        return max(self.min_epochs, done, best)


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    diverged: bool = False
    accel: Accel = field(default_factory=Accel)


@dataclass(frozen=True)
class Scores:
    loss: float
    accuracy: float
    confusion: list[list[int]]  # rows: true class, columns: predicted


@dataclass(frozen=True)
class FinalResult:
    """A final model tested once: its weights (fp32, CPU, contiguous: they load into a plain
    model anywhere), the test scores, and how it was trained. Plain enough to come back from a
    Ray task."""

    state_dict: dict[str, torch.Tensor]
    test_accuracy: float
    test_loss: float
    per_class_accuracy: dict[str, float]
    confusion: list[list[int]]
    history: list[dict[str, float]]  # the retrain's epochs; empty for a trial's own checkpoint
    numerics: str
    mean: tuple[float, ...]  # the normalisation the network applies itself; for the record
    std: tuple[float, ...]
    train_seconds: float = 0.0
    diverged: bool = False
    epoch: int = 0  # the checkpoint's epoch (a trial's own checkpoint)


def pick_device(use_gpu: bool) -> torch.device:
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    # Arrays from the object store are read-only views; torch warns but we never write to them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a).to(device)


def input_norm(data: TrainingData) -> Normalize:
    """The first layer of a network trained on `data`: its statistics, in its input units."""
    return Normalize(data.mean, data.std, data.full_scale)


def _weights(state: dict, cfg: NetConfig, data: TrainingData) -> dict[str, torch.Tensor]:
    """A checkpoint's weights; one written before networks normalised their own input gets
    `data`'s statistics (what it trained with) as its first layer."""
    return upgrade_state_dict(state["model"], cfg.family, data.mean, data.std, data.full_scale)


class Batches:
    """Raw float batches cut from a resident uint8 tensor (no per-sample pipeline): pixel values
    0-255, or tabular features as they are. The network normalises them itself (its first layer,
    trainables.model.Normalize), so what it is trained on is what a saved model is given."""

    def __init__(self, split: Split, device: torch.device, accel: Accel | None = None):
        self.accel = accel or Accel()
        self.x = _tensor(split.x, device)
        self.y = _tensor(split.y, device)
        self.rows: torch.Tensor | None = None  # a subset's rows of x and y (a fold's); None: all

    def subset(self, rows: np.ndarray) -> "Batches":
        """These rows only, cut from the same resident tensors: k folds hold one copy of the data."""
        view = copy.copy(self)
        view.rows = torch.as_tensor(rows, dtype=torch.long, device=self.x.device)
        return view

    def __len__(self) -> int:
        return len(self.y) if self.rows is None else len(self.rows)

    def batch(self, idx: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rows is not None:
            idx = self.rows[idx]
        # A copy even for float features: nothing downstream may ever touch the resident data.
        x = self.x[idx].to(torch.float32, copy=True)
        return self.accel.layout(x), self.y[idx]

    def steps(self, batch_size: int) -> int:
        full, rest = divmod(len(self), batch_size)
        return full + (rest > 1)

    def shuffled(self, batch_size: int, generator: torch.Generator, shuffle: bool = True):
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        order = order.to(self.x.device)
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            if len(idx) > 1:  # a batch of one breaks batch norm on 1x1 maps
                yield self.batch(idx)

    def in_order(self, batch_size: int = EVAL_BATCH):
        for start in range(0, len(self), batch_size):
            yield self.batch(slice(start, start + batch_size))


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, num_classes: int) -> Scores:
    """Loss, accuracy and confusion matrix (rows: true class, columns: predicted)."""
    model.eval()
    loss_sum = 0.0
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=batches.x.device)
    for xb, yb in batches.in_order():
        with batches.accel.autocast(batches.x.device):
            logits = model(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        confusion += torch.bincount(yb * num_classes + logits.argmax(1), minlength=num_classes ** 2)
    confusion = confusion.view(num_classes, num_classes).cpu()
    n = len(batches)
    return Scores(loss_sum / n, confusion.diag().sum().item() / n, confusion.tolist())


class _Learner:
    """One network learning from one train/validation pair, an epoch at a time: its model,
    optimiser and data-order generator. `fit` drives one, or under cross-validation one per
    fold in lock-step (their batches index the same resident tensors)."""

    def __init__(self, cfg: NetConfig, data: TrainingData, train: Batches, val: Batches | None, seed: int,
                 device: torch.device, accel: Accel, backbone: "Backbone | None", horizon: int):
        self.cfg, self.data, self.train, self.val, self.device, self.accel = cfg, data, train, val, device, accel
        self.horizon = horizon
        torch.manual_seed(seed)
        norm = input_norm(data)
        self.model = build_model(cfg, data.input_shape, data.num_classes, backbone, norm).to(
            device, memory_format=accel.memory_format)
        self.optimizer = make_optimizer(cfg, self.model)
        self.generator = torch.Generator().manual_seed(seed)
        # Geometric augmentation pads with the mean (a normalised zero): shifted-in pixels look neutral.
        self.fill = norm.raw_mean()

    def load(self, state: dict) -> None:
        self.model.load_state_dict(_weights(state, self.cfg, self.data))
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

    def state(self) -> dict:
        # Plain types and tensors only, so checkpoints load with weights_only=True.
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "mean": list(self.data.mean), "std": list(self.data.std)}

    def validate(self, metrics: dict[str, float]) -> bool:
        """Adds the validation scores; False when the model has diverged."""
        scores = evaluate(self.model, self.val, self.data.num_classes)
        ok = math.isfinite(scores.loss)
        # A diverged model's predictions mean nothing: score it below chance so searchers
        # and schedulers rank it last, and leave the loss undefined.
        metrics.update(val_loss=scores.loss if ok else float("nan"), val_accuracy=scores.accuracy if ok else 0.0)
        return ok

    def epoch(self, epoch: int, started: float, report_points: tuple[float, ...] = (),
              on_partial: Callable[[dict[str, float]], None] | None = None,
              stop_at: float | None = None) -> dict[str, float]:
        """Train one epoch, then validate (where there is a validation split); the epoch's metrics.
        `stop_at` (`time.time()`): the epoch ends there if it has not ended before, after at least
        one step; its `epochs_seen` then says how much of it was trained."""
        cfg, train, model, optimizer, accel, device = \
            self.cfg, self.train, self.model, self.optimizer, self.accel, self.device
        # Sub-epoch report points that fall inside this epoch, as counts of images seen.
        pending = [p for p in report_points if epoch - 1 < p < epoch
                   and self.val is not None and on_partial is not None]
        steps_per_epoch = train.steps(cfg.batch_size)
        augmenting = cfg.augment.active
        model.train()
        loss_sum = torch.zeros((), device=device)
        seen, cut = 0, False
        step = (epoch - 1) * steps_per_epoch
        for xb, yb in train.shuffled(cfg.batch_size, self.generator, cfg.shuffle):
            factor = lr_factor(cfg, step, self.horizon * steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            step += 1
            if augmenting:
                xb, yb, y_mix, lam = augment(xb, yb, cfg.augment, self.generator, self.fill)
                xb = accel.layout(xb)
            else:
                y_mix = None
            with accel.autocast(device):
                out = model(xb)
                loss = F.cross_entropy(out, yb)
                if y_mix is not None:  # CutMix: labels weighted by the share of pixels each image gave
                    loss = lam * loss + (1.0 - lam) * F.cross_entropy(out, y_mix)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Accumulated on the device: a .item() per step would sync a GPU every batch.
            loss_sum += loss.detach() * len(yb)
            seen += len(yb)
            if step % DIVERGENCE_CHECK_STEPS == 0 and not torch.isfinite(loss_sum):
                break  # no point finishing an epoch whose loss is already NaN/inf
            if stop_at is not None and time.time() >= stop_at:
                cut = True
                break
            if pending and epoch - 1 + seen / len(train) >= pending[0]:
                partial = {"epoch": epoch - 1, "epochs_seen": pending.pop(0), "train_loss": loss_sum.item() / seen,
                           "partial": 1.0}
                self.validate(partial)
                partial["epoch_seconds"] = time.perf_counter() - started
                on_partial(partial)
                model.train()
        train_loss = loss_sum.item() / max(seen, 1)
        metrics: dict[str, float] = {"epoch": epoch, "train_loss": train_loss,
                                     "epochs_seen": epoch - 1 + seen / len(train) if cut else float(epoch)}
        diverged = not math.isfinite(train_loss)
        if self.val is not None and not diverged:
            diverged = not self.validate(metrics)
        if self.val is not None and diverged:
            metrics.update(val_loss=float("nan"), val_accuracy=0.0)
        metrics["diverged"] = float(diverged)
        return metrics


def _learners(cfg: NetConfig, data: TrainingData, seed: int, device: torch.device, accel: Accel,
              backbone: "Backbone | None", horizon: int) -> list[_Learner]:
    """One learner on `data`'s train and validation splits; under cross-validation one per fold,
    each on the other folds' rows with those rows' statistics, all indexing one copy of the data."""
    train = Batches(data.train, device, accel)
    folds = data.folds
    if folds is None:
        val = Batches(data.val, device, accel) if data.val is not None else None
        return [_Learner(cfg, data, train, val, seed, device, accel, backbone, horizon)]
    return [_Learner(cfg, dataclasses.replace(data, val=None, folds=None, mean=folds.stats[k][0],
                                              std=folds.stats[k][1]),
                     train.subset(folds.train_rows(k)), train.subset(folds.val_rows(k)), seed, device, accel,
                     backbone, horizon)
            for k in range(folds.k)]


def fit(
    cfg: NetConfig,
    data: TrainingData,
    epochs: int,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[dict[str, float], Callable[[], dict]], None] | None = None,
    state: dict | None = None,
    before_epoch: Callable[[int, nn.Module], None] | None = None,
    backbone: "Backbone | None" = None,
    accel: Accel | None = None,
    schedule_epochs: int | None = None,
    report_points: tuple[float, ...] = (),
    on_partial: Callable[[dict[str, float]], None] | None = None,
    deadline: Deadline | None = None,
) -> FitResult:
    """Train `cfg` for `epochs` epochs, evaluating on `data.val` after each if present.

    With `data.folds` (cross-validation) it trains one network per fold in lock-step, epoch by
    epoch, and each epoch's metrics are the folds' mean with their spread and per-fold values
    (trainables.crossval.fold_scores); there are no reports inside an epoch then, and the
    result's model is the first fold's.
    `schedule_epochs` is the horizon of the learning-rate schedule (default `epochs`): the final
    retrain stops at the epoch where a trial peaked but follows the schedule that trial followed.
    `state` is a checkpoint dict from an earlier call; training continues after its epoch.
    `on_epoch(metrics, snapshot)` is called after every epoch; `snapshot()` builds the
    checkpoint dict (model, optimizer, RNG, history and the config itself; under
    cross-validation each fold's model, optimizer and generator under "folds").
    `on_partial(metrics)` is called with validation scores at each of `report_points` (in epochs,
    e.g. 0.25) that falls inside an epoch; those results carry `partial: 1`.
    `accel` defaults to what suits `device` (see `trainables.numerics.accelerator`).
    `deadline`: train until then instead (`epochs` is the first plan, and the schedule's horizon
    follows the plan; see `Deadline`); the result's history says how many epochs it became.
    """
    accel = accel or accelerator(device)
    learners = _learners(cfg, data, seed, device, accel, backbone, schedule_epochs or epochs)
    cv = data.folds is not None
    result = FitResult(learners[0].model, accel=accel)
    if state is not None:
        if cv and len(state.get("folds", ())) != len(learners):
            raise ValueError(f"the checkpoint has {len(state.get('folds', ()))} folds, the data {len(learners)}")
        for learner, learner_state in zip(learners, state["folds"] if cv else [state]):
            learner.load(learner_state)
        # Dropout draws from the global generator: restore it too, or a resumed trial diverges
        # from the one that was interrupted.
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        result.history = list(state["history"])

    def snapshot() -> dict:
        # Plain types and tensors only, so checkpoints load with weights_only=True.
        common = {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None, "history": result.history,
            "epoch": len(result.history), "config": cfg.to_flat(), "seed": seed,
            "input_shape": list(data.input_shape), "classes": list(data.classes), "numerics": accel.name,
        }
        if cv:
            return {**common, "folds": [learner.state() for learner in learners]}
        return {**learners[0].state(), **common}

    epoch = first = len(result.history)
    while epoch < epochs:
        epoch += 1
        if before_epoch is not None:
            before_epoch(epoch, learners[0].model)
        started = time.perf_counter()
        if cv:
            metrics = fold_scores([learner.epoch(epoch, started) for learner in learners])
        else:
            # Past the epochs the deadline must allow, its last epoch ends at the deadline even
            # mid-way: whole epochs of 40-60 s cannot land a 12-minute command within 5%.
            stop_at = deadline.at if deadline is not None and epoch - first > deadline.min_epochs else None
            metrics = learners[0].epoch(epoch, started, report_points, on_partial, stop_at)
        cut = metrics["epochs_seen"] < epoch
        result.diverged = bool(metrics.pop("diverged"))
        metrics["epoch_seconds"] = time.perf_counter() - started
        metrics["diverged"] = float(result.diverged)
        result.history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics, snapshot)
        if result.diverged or cut:
            break
        if deadline is not None:
            # Planned from this call's epochs only: a continued trial's own epochs ran elsewhere,
            # on other data and threads, and say nothing of this pace.
            epochs = first + deadline.epochs(epoch - first, [h["epoch_seconds"] for h in result.history[first:]],
                                             epochs - first)
            for learner in learners:
                learner.horizon = epochs
    return result


# --- the final model -----------------------------------------------------------------------

def retrain_and_test(cfg: NetConfig, data: TrainingData, test: Split, settings: TrialSettings,
                     use_gpu: bool = False, schedule_epochs: int | None = None,
                     deadline: Deadline | None = None, state: dict | None = None) -> FinalResult:
    """Retrain on all training images for `settings.max_epochs` (following a learning-rate
    schedule of `schedule_epochs`, default the same), or until `deadline` with the schedule
    stretched to it, then evaluate once on `test`. With `state` (a trial's checkpoint) the
    training continues from it, on `data`, instead of starting afresh: the result's history
    holds the trial's epochs, then this training's."""
    torch.set_num_threads(max(1, settings.threads))
    device = pick_device(use_gpu)
    started = time.perf_counter()
    result = fit(cfg, data, settings.max_epochs, settings.seed, device, backbone=settings.backbone,
                 accel=accelerator(device, settings.precision), schedule_epochs=schedule_epochs, deadline=deadline,
                 state=state)
    final = _tested(result.model, data, test, device, result.accel, result.history, result.diverged, started)
    if state is not None:  # the network keeps the statistics it first trained with (its first layer's)
        final = dataclasses.replace(final, mean=tuple(state["mean"]), std=tuple(state["std"]))
    return final


def evaluate_checkpoint(state: dict, data: TrainingData, test: Split, backbone: "Backbone | None" = None,
                        use_gpu: bool = False, precision: str = "auto") -> FinalResult:
    """The final model without a retrain: a trial's own checkpoint (`state`, chosen by validation,
    so still an honest test), evaluated once on `test` (its weights carry the normalisation it
    trained with, `data`'s). Returns what `retrain_and_test` returns."""
    device = pick_device(use_gpu)
    accel = accelerator(device, precision)
    cfg = NetConfig.from_flat(state["config"])
    model = build_model(cfg, data.input_shape, data.num_classes, backbone, input_norm(data)).to(device)
    model.load_state_dict(_weights(state, cfg, data))
    started = time.perf_counter()
    final = _tested(model, data, test, device, accel, [dict(h) for h in state["history"]], False, started)
    return dataclasses.replace(final, epoch=int(state["epoch"]))


def _tested(model: nn.Module, data: TrainingData, test: Split, device: torch.device, accel: Accel,
            history: list[dict], diverged: bool, started: float) -> FinalResult:
    scores = evaluate(model, Batches(test, device, accel), data.num_classes)
    confusion = np.asarray(scores.confusion)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return FinalResult(
        # fp32 whatever the numerics: autocast never changes the weights' dtype.
        state_dict={k: v.cpu().contiguous() for k, v in model.state_dict().items()},
        test_accuracy=scores.accuracy, test_loss=scores.loss,
        per_class_accuracy={name: float(a) for name, a in zip(data.classes, per_class)},
        confusion=scores.confusion, history=history, numerics=accel.name,
        mean=tuple(data.mean), std=tuple(data.std), train_seconds=time.perf_counter() - started, diverged=diverged,
    )
