"""Fashion-MNIST studies: `fashion_space` (TPE + ASHA over a conditional CNN space) and
`fashion_grid` (the exact 96-point grid of the original GridSearchCV study)."""

from __future__ import annotations

import itertools
from typing import Any

from spaces.blocks import numbered, suggest_capped_widths
from spaces.registry import register_study
from spaces.study import SpaceContext, Study, StudySettings
from trainables.model import ACTIVATIONS

# The original study's winner, as the user tuned it by hand (with our cosine schedule); TPE starts from it.
GRID_WINNER = {
    "conv_layers": 2, "filters_0": 16, "filters_1": 16, "kernel_size": 3, "pool_type": "max",
    "pool_size": 2, "activation": "relu", "batch_norm": False, "dropout": 0.1, "dense_layers": 1,
    "dense_nodes_0": 128, "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-6, "batch_size": 64,
    "lr_schedule": "cosine",
}
# A common textbook CNN for this dataset: two conv blocks with batch norm.
TEXTBOOK_CNN = {
    "conv_layers": 2, "filters_0": 32, "filters_1": 64, "kernel_size": 3, "pool_type": "max",
    "pool_size": 2, "activation": "relu", "batch_norm": True, "dropout": 0.3, "dense_layers": 1,
    "dense_nodes_0": 128, "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-5, "batch_size": 128,
    "lr_schedule": "cosine",
}


def define_cnn_space(trial: Any, ctx: SpaceContext) -> dict[str, Any]:
    """Conditional CNN space: per-layer widths exist only for layers that exist, each capped so
    every sample builds and stays within the cost cap."""
    p: dict[str, Any] = {
        "conv_layers": trial.suggest_int("conv_layers", 1, 4),
        "kernel_size": trial.suggest_categorical("kernel_size", [3, 5, 7]),
        "pool_type": trial.suggest_categorical("pool_type", ["max", "avg"]),
        "pool_size": trial.suggest_categorical("pool_size", [2, 3]),
        "activation": trial.suggest_categorical("activation", list(ACTIVATIONS)),
        "batch_norm": trial.suggest_categorical("batch_norm", [True, False]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "dense_layers": trial.suggest_int("dense_layers", 1, 2),
        "optimizer": trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw"]),
        "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256, 512]),
    }
    suggest_capped_widths(trial, p, ctx, [("filters", [(8, 128)] * p["conv_layers"]),
                                          ("dense_nodes", [(32, 512)] * p["dense_layers"])])
    # Not searched: cosine decay beats a constant rate at every budget we tried, and 20 trials
    # are better spent on the architecture.
    return {"lr_schedule": "cosine"}


def original_grid() -> tuple[dict[str, Any], ...]:
    """The GridSearchCV study: 3 activations x 2 filter sizes x 2 dense widths x 2 dropouts x
    2 filter counts x 2 depths, pool size 2; the rest fixed as in the original notebook."""
    points = []
    for activation, kernel, dense, dropout, width, depth in itertools.product(
        ["relu", "sigmoid", "tanh"], [3, 5], [128, 256], [0.1, 0.3], [16, 32], [2, 3]
    ):
        points.append({
            "conv_layers": depth, **numbered("filters", [width] * depth), "kernel_size": kernel,
            "pool_type": "max", "pool_size": 2, "activation": activation, "batch_norm": False,
            "dropout": dropout, "dense_layers": 1, "dense_nodes_0": dense, "optimizer": "adam",
            "lr": 1e-3, "weight_decay": 0.0, "batch_size": 64,
        })
    return tuple(points)


fashion_space = register_study(Study(
    name="fashion_space",
    description="Fashion-MNIST CNNs: depth, widths, kernels, pooling, activation, BN, dropout, "
                "dense head, optimizer, lr, weight decay, batch size (TPE + ASHA)",
    # First rung after a quarter epoch (13,500 images): most proposals are dropped for a quarter
    # of an epoch's cost; see docs/benchmarks.md, benchmark 3 (search efficiency), for the rung choice.
    # On a CPU the study keeps to 12 minutes, final retrain included: on a 2-core machine that is a
    # full run of the textbook start point, a few minutes of TPE and the retrain (docs/benchmarks.md, *Speed*).
    settings=StudySettings(dataset="fashion_mnist", num_samples=20, max_epochs=10, reduction_factor=4,
                           grace_period=0.25, max_mmacs_cpu=6.0, time_budget_min_cpu=12.0),
    define=define_cnn_space,
    start_points=(TEXTBOOK_CNN, GRID_WINNER),
))

fashion_grid = register_study(Study(
    name="fashion_grid",
    description="Fashion-MNIST: the original 96-point GridSearchCV grid, every point to max epochs",
    settings=StudySettings(dataset="fashion_mnist", num_samples=96, max_epochs=10, scheduler="fifo",
                           max_mmacs_cpu=None),
    grid=original_grid(),
))
