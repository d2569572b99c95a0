"""A study of your own, outside hpsearch's package: a small CNN space on Fashion-MNIST.

    hpsearch check ./examples/my_study.py        # checked as hpsearch's own studies are (about a minute)
    hpsearch run ./examples/my_study.py --smoke  # then searched like any other

Loaded by spaces.loading.load_study_source and checked by spaces.check.check_study
(tests/test_loading.py does both; tests/test_main.py runs the check command on it)."""

from typing import Any

from spaces.blocks import suggest_capped_widths
from spaces.registry import register_study
from spaces.study import SpaceContext, Study, StudySettings


def small_cnn(trial: Any, ctx: SpaceContext) -> dict[str, Any]:
    """1-2 conv blocks of 8-64 filters (capped to the cost limit), dropout, learning rate, batch size."""
    # Not searched: returned as constants, added to every configuration.
    fixed = {"kernel_size": 3, "pool_type": "max", "pool_size": 2, "activation": "relu", "batch_norm": True,
             "dense_layers": 1, "dense_nodes_0": 64, "optimizer": "adam", "weight_decay": 1e-5, "lr_schedule": "cosine"}
    p = {**fixed, "conv_layers": trial.suggest_int("conv_layers", 1, 2),
         "dropout": trial.suggest_float("dropout", 0.0, 0.4), "lr": trial.suggest_float("lr", 3e-4, 3e-2, log=True),
         "batch_size": trial.suggest_categorical("batch_size", [64, 128])}
    suggest_capped_widths(trial, p, ctx, [("filters", [(8, 64)] * p["conv_layers"])])  # the rest must be in p
    return fixed


register_study(Study(
    name="my_small_cnn",
    description="Fashion-MNIST: my own small CNN (1-2 conv blocks, dropout, lr, batch size)",
    settings=StudySettings(dataset="fashion_mnist", num_samples=8, max_epochs=4, max_mmacs_cpu=3.0),
    define=small_cnn,
))
