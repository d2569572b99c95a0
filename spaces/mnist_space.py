"""MNIST digits: fully connected networks and CNNs in one space, SGD with momentum vs Adam.
The networks of the earlier reports are its start points, so the search starts where they
ended: 97.1% (MLP, 10 epochs), 98.7% and 99.2% (CNNs)."""

from __future__ import annotations

from typing import Any

from spaces.blocks import suggest_mlp, suggest_small_cnn, suggest_training
from spaces.registry import register_study
from spaces.study import SpaceContext, Study, StudySettings

# Weight decay at the space's floor: the reports used none, and a log-scale range cannot hold 0.
_TRAINING = {"weight_decay": 1e-6, "lr_schedule": "cosine"}
REFERENCE_POINTS = (
    # Keras' mnist_mlp: 784-512-512-10 with dropout 0.2.
    {"family": "mlp", "dense_layers": 2, "dense_nodes_0": 512, "dense_nodes_1": 512, "activation": "relu",
     "dropout": 0.2, "optimizer": "adam", "lr": 1e-3, "batch_size": 128, **_TRAINING},
    # The classic tutorial MLP 784-128-64-10, SGD with momentum.
    {"family": "mlp", "dense_layers": 2, "dense_nodes_0": 128, "dense_nodes_1": 64, "activation": "relu",
     "dropout": 0.0, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 64, **_TRAINING},
    # PyTorch's MNIST example: conv(10, 5x5) -> conv(20, 5x5) + Dropout2d -> fc 50 -> 10.
    {"family": "cnn", "conv_layers": 2, "filters_0": 10, "filters_1": 20, "kernel_size": 5, "pool_type": "max",
     "pool_size": 2, "activation": "relu", "batch_norm": False, "conv_dropout": 0.5, "dropout": 0.5,
     "dense_layers": 1, "dense_nodes_0": 50, "optimizer": "sgd", "lr": 0.01, "momentum": 0.5, "batch_size": 64,
     **_TRAINING},
    # Two-conv nets with 3x3 and 5x5 filters, dropout 0.2 after the convs and 0.5 in the head.
    *({"family": "cnn", "conv_layers": 2, "filters_0": 32, "filters_1": 64, "kernel_size": k, "pool_type": "max",
       "pool_size": 2, "activation": "relu", "batch_norm": False, "conv_dropout": 0.2, "dropout": 0.5,
       "dense_layers": 1, "dense_nodes_0": 128, "optimizer": "adam", "lr": 1e-3, "batch_size": 128, **_TRAINING}
      for k in (3, 5)),
)


def define_mnist_space(trial: Any, ctx: SpaceContext) -> dict[str, Any]:
    family = trial.suggest_categorical("family", ["mlp", "cnn"])
    p = suggest_training(trial, ["sgd", "adam"], (1e-4, 1e-1), [32, 64, 128, 256], (1e-6, 1e-3))
    if family == "mlp":
        suggest_mlp(trial, p, ctx, layers=(1, 3), nodes=(64, 512), activations=["relu", "tanh"], dropout=(0.0, 0.5))
    else:
        suggest_small_cnn(trial, p, ctx, conv_dropout=(0.0, 0.5), dropout=(0.2, 0.5), dense=(32, 256))
    # Returned whole: the searched values again, plus the fixed rest of the architecture and cosine decay.
    return {**p, "lr_schedule": "cosine"}


mnist_space = register_study(Study(
    name="mnist_space",
    description="MNIST digits: MLPs (1-3 hidden layers) and CNNs (1-3 convs, 3x3/5x5, dropout), "
                "SGD+momentum vs Adam, lr, batch size (TPE + ASHA; the earlier reports' nets as start points)",
    settings=StudySettings(dataset="mnist", num_samples=12, max_epochs=8, reduction_factor=3,
                           max_mmacs_cpu=12.0, n_startup_trials=4),
    define=define_mnist_space,
    start_points=REFERENCE_POINTS,
))
