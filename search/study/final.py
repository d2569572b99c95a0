"""The final model: retrain a configuration on all training images, test it once, save it
with its config (so it can be reloaded without hpsearch's search code) and log it to MLflow.
Shared by `search.run` (after the search) and `search.train` (from best.yaml).

Both the saved model.pt and the MLflow model take raw input: images of any size and channel
count (or files), or table rows with their original columns. The network normalises its input
itself (its first layer, trainables.model.Normalize, whose statistics are in the weights), and
model.pt describes how raw input becomes that input (trainables.predictor: an image format,
pixel columns, or the tabular encoder fitted on the training rows)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from search.results.files import CONFUSION_FILE, MODEL_FILE
from search.tracking.tracker import Tracker
from search.util.atomic import atomic_write, atomic_write_text, save_torch
from trainables.datasets import Dataset, TrainingData
from trainables.model import NetConfig
from trainables.predictor import describe_input
from trainables.train import (
    CHECKPOINT_FILE,
    Deadline,
    FinalResult,
    TrialSettings,
    evaluate_checkpoint,
    retrain_and_test,
)
from trainables.transfer import Backbone

# stretch: the best configuration retrained for the time the budget leaves, its schedule stretched
# to it; continue: the best trial's own weights trained on, on all training images, for that time
# (the search's epochs of the winner are not thrown away); retrain: for the best trial's own epochs
# of its schedule; checkpoint: its own weights.
# (Their names: search.results.study_fields.FINAL_MODES, where --help needs no torch.)


@dataclass(frozen=True)
class FinalSpec:
    config: NetConfig
    epochs: int
    seed: int
    threads: int
    use_gpu: bool = False
    # The schedule's horizon: the best trial's max epochs, so a retrain that stops at its best
    # epoch decays the learning rate exactly as the trial did (None: the schedule ends at epochs).
    schedule_epochs: int | None = None
    precision: str = "auto"
    # "retrain", "stretch", "continue" (all on all training images) or "checkpoint" (the best
    # trial's own weights at its best epoch); see above.
    mode: str = "retrain"
    # continue: the epoch of the best trial's checkpoint the training goes on from (`epochs`
    # counts those too).
    start_epoch: int = 0
    # stretch: train until this wall-clock time (time.time()), the schedule stretched to it
    # (trainables.train.Deadline); `epochs` is then the first plan.
    deadline: float | None = None
    # Why the final model is not what --final asked for (e.g. no time left to retrain), or "".
    note: str = ""
    asked: str = ""  # the mode --final asked for, where `note` says why it differs

    def describe(self, numerics: str) -> dict[str, Any]:
        """best.yaml's `final` entry."""
        return {"mode": self.mode, "epochs": self.epochs, "schedule_epochs": self.schedule_epochs or self.epochs,
                "numerics": numerics, "precision": self.precision,
                **({"continued_from_epoch": self.start_epoch} if self.mode == "continue" else {}),
                **({"asked": self.asked, "note": self.note} if self.note else {})}


def retrain(spec: FinalSpec, dataset: Dataset, on_ray: bool, backbone: Backbone | None = None,
            checkpoint_dir: Path | None = None) -> FinalResult:
    """On Ray the retrain is a task with the trial's kind of resources (a GPU where there is one)
    and every CPU of a node (nothing else runs then); without Ray it runs in this process.
    `checkpoint_dir` (mode continue): the trial checkpoint the training goes on from; it is read
    here, by the driver that wrote it, and travels to the task as tensors."""
    state = None
    if spec.mode == "continue":
        if checkpoint_dir is None:
            raise ValueError("a continued final model needs the best trial's checkpoint")
        state = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    args = (spec.config, dataset.for_final(), dataset.test,
            TrialSettings(max_epochs=spec.epochs, seed=spec.seed, threads=spec.threads, backbone=backbone,
                          precision=spec.precision),
            spec.use_gpu, spec.schedule_epochs, Deadline(spec.deadline) if spec.deadline is not None else None,
            state)
    if not on_ray:
        return retrain_and_test(*args)
    import ray

    task = ray.remote(retrain_and_test).options(num_cpus=spec.threads, num_gpus=1 if spec.use_gpu else 0)
    return ray.get(task.remote(*args))


def from_checkpoint(spec: FinalSpec, checkpoint_dir: Path, search_data: TrainingData, dataset: Dataset,
                    backbone: Backbone | None = None) -> FinalResult:
    """The best trial's own weights at its best epoch, tested once: no retrain. The checkpoint
    holds tensors and plain types only and is loaded as such (weights_only)."""
    state = torch.load(checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    torch.set_num_threads(max(1, spec.threads))
    final = evaluate_checkpoint(state, search_data, dataset.test, backbone, spec.use_gpu, spec.precision)
    return dataclasses.replace(final, history=[])  # no final training: the trial's own curve is in its child run


def save_model(final: FinalResult, spec: FinalSpec, dataset: Dataset, space: str, out_dir: Path,
               backbone: Backbone | None = None) -> Path:
    data = dataset.for_final()
    blob = {
        # The weights include the normalisation (the first layer's buffers): the network takes raw input.
        "state_dict": final.state_dict, "config": spec.config.to_flat(), "space": space,
        "dataset": dataset.info.name, "classes": data.classes, "input_shape": data.input_shape,
        # How raw input becomes the network's (an image format; the pixel columns; the tabular
        # columns, fill values and vocabularies): trainables.predictor.Predictor applies it.
        "input": describe_input(dataset, data.input_shape),
        # For the record (and transfer studies): the network applies them itself.
        "mean": tuple(final.mean), "std": tuple(final.std), "epochs": spec.epochs, "seed": spec.seed,
        "final": spec.describe(final.numerics),
        "test_accuracy": final.test_accuracy, "label_map": dataset.label_map,
        # A transfer model is rebuilt from this description (its weights are all in state_dict).
        "backbone": backbone.describe() if backbone is not None else None,
    }
    atomic_write(out_dir / MODEL_FILE, lambda tmp: save_torch(blob, tmp))
    rows = [",".join(["true\\predicted", *data.classes])]
    rows += [",".join([name, *map(str, counts)]) for name, counts in zip(data.classes, final.confusion)]
    atomic_write_text(out_dir / CONFUSION_FILE, "\n".join(rows) + "\n")
    return out_dir / MODEL_FILE


def log_final(tracker: Tracker, run_id: str, final: FinalResult, spec: FinalSpec, dataset: Dataset,
              out_dir: Path, backbone: Backbone | None = None, register_as: str | None = None) -> str:
    """Log the final model's metrics and the model itself: an MLflow pyfunc model around the
    model.pt saved in `out_dir`, taking raw input (its example: two raw test inputs); with
    `register_as`, also register it. Returns "NAME/VERSION" of the registered model, or "" when
    none was asked for."""
    for epoch in final.history:
        tracker.log_metrics(run_id, {f"final_{k}": v for k, v in epoch.items() if k in ("train_loss", "epoch_seconds")},
                            step=int(epoch["epoch"]))
    tracker.log_metrics(run_id, {
        "test_accuracy": final.test_accuracy, "test_loss": final.test_loss,
        **{f"test_accuracy.{_metric_name(c)}": a for c, a in final.per_class_accuracy.items()},
    })
    tracker.log_artifact(run_id, out_dir / CONFUSION_FILE)
    tracker.set_tags(run_id, {"hpsearch.numerics": final.numerics, "hpsearch.final": spec.mode})
    from search.tracking import pyfunc_model

    example = pyfunc_model.input_example(dataset)
    with pyfunc_model.packaged() as code_paths:
        return tracker.log_model(run_id, str(pyfunc_model.MODEL_CODE), {pyfunc_model.ARTIFACT: out_dir / MODEL_FILE},
                                 example, pyfunc_model.requirements(), register_as, code_paths,
                                 pyfunc_model.signature(dataset, example))


def _metric_name(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-. " else "_" for ch in label)
