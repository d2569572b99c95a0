"""Fine-tuning a trained network on a new task: which of the backbone's layers stay frozen,
the new head's size, learning rates for head and body (the epochs come from ASHA and the best
epoch). The backbone is a model hpsearch exported (`--weights RESULTS/model.pt`) or a
torchvision architecture with local weights (`--weights FILE --arch NAME`); images are resized
and converted to its input once, when the data is loaded.

    python -m search.run transfer_space --weights mnist-study/model.pt --data-file letters.csv
    python -m search.run transfer_space --weights model.pt --dataset mnist --classes 7,8,9
"""

from __future__ import annotations

from typing import Any

from spaces.blocks import suggest_training
from spaces.registry import register_study
from spaces.study import SpaceContext, Study, StudySettings


def define_transfer_space(trial: Any, ctx: SpaceContext) -> dict[str, Any]:
    p = suggest_training(trial, ["sgd", "adam"], (1e-4, 1e-1), [32, 64, 128], (1e-6, 1e-3))
    p.update(family="transfer", activation="relu",
             frozen_layers=trial.suggest_int("frozen_layers", 0, ctx.backbone_layers),
             head_nodes=trial.suggest_categorical("head_nodes", [0, 64, 128, 256]),
             dropout=trial.suggest_float("dropout", 0.0, 0.5))
    # A fully frozen body has no rate of its own.
    p["lr_body"] = trial.suggest_float("lr_body", 1e-5, 1e-2, log=True) if p["frozen_layers"] < ctx.backbone_layers \
        else 0.0
    return {**p, "lr_schedule": "cosine"}


transfer_space = register_study(Study(
    name="transfer_space",
    description="fine-tune a trained network (--weights: an hpsearch model.pt, or torchvision weights with --arch): "
                "frozen layers, head size, head and body learning rates (TPE + ASHA)",
    settings=StudySettings(dataset="pixels_csv", num_samples=12, max_epochs=10, reduction_factor=3,
                           max_mmacs_cpu=None, n_startup_trials=4, needs_backbone=True, example_classes=3),
    define=define_transfer_space,
))
