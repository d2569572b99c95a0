"""Tabular CSV with a target column (e.g. a heart-disease table: 11 features, a binary target):
MLPs with 1-4 hidden layers of 8-64 units. Features are standardised with statistics of the
training split only; text columns are one-hot encoded; binary and multi-class targets.

    python -m search.run tabular_csv_space --data-file heart.csv --target HeartDisease
"""

from __future__ import annotations

from typing import Any

from spaces.blocks import suggest_mlp, suggest_training
from spaces.registry import register_study
from spaces.study import SpaceContext, Study, StudySettings


def define_tabular_space(trial: Any, ctx: SpaceContext) -> dict[str, Any]:
    p = suggest_training(trial, ["sgd", "adam"], (1e-4, 1e-1), [16, 32, 64, 128], (1e-6, 1e-2))
    suggest_mlp(trial, p, ctx, layers=(1, 4), nodes=(8, 64), activations=["relu", "tanh", "elu", "leaky_relu"],
                dropout=(0.0, 0.5))
    return {**p, "lr_schedule": "cosine"}


tabular_csv_space = register_study(Study(
    name="tabular_csv_space",
    description="tabular CSV (--data-file, --target): MLPs with 1-4 hidden layers of 8-64 units, activation, "
                "dropout, lr, batch size (TPE + ASHA)",
    settings=StudySettings(dataset="tabular_csv", num_samples=30, max_epochs=40, reduction_factor=3, grace_period=4,
                           max_mmacs_cpu=None, n_startup_trials=8, val_fraction=0.2,
                           example_input=(11, 1, 1), example_classes=2),
    define=define_tabular_space,
))
