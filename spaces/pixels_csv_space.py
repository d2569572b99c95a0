"""Images stored as CSV (a label column and one column per pixel, e.g. the 24-class
sign-language letters: 27,455 training and 7,172 test rows of 28x28): MLPs and CNNs with
rotation, zoom, shift and flip searched as hyperparameters. The earlier report (96.3%) used the
three-block CNN below, the study's start point.

    python -m search.run pixels_csv_space --data-file train.csv --test-file test.csv --image-shape 1,28,28
"""

from __future__ import annotations

from typing import Any

from spaces.blocks import suggest_augmentation, suggest_mlp, suggest_small_cnn, suggest_training
from spaces.registry import register_study
from spaces.study import SpaceContext, Study, StudySettings

# Conv 75 -> 50 (+ dropout 0.2) -> 25, each with batch norm after the activation and max pooling,
# dense 512 with dropout 0.3; rotation 10 degrees, zoom and shift 10%, no flips.
THREE_BLOCK_REPORTED = {
    "family": "cnn", "conv_layers": 3, "filters_0": 75, "filters_1": 50, "filters_2": 25, "kernel_size": 3,
    "pool_type": "max", "pool_size": 2, "activation": "relu", "batch_norm": True, "norm_after_activation": True,
    "conv_dropout": 0.2, "dense_layers": 1, "dense_nodes_0": 512, "dropout": 0.3, "optimizer": "adam", "lr": 1e-3,
    "weight_decay": 1e-6, "batch_size": 128, "aug_rotate": 10.0, "aug_rotate_p": 1.0, "aug_crop_scale": 0.8,
    "aug_crop_p": 1.0, "aug_translate": 0.1, "aug_translate_p": 1.0, "aug_flip_p": 0.0, "lr_schedule": "cosine",
}


def define_pixels_space(trial: Any, ctx: SpaceContext) -> dict[str, Any]:
    family = trial.suggest_categorical("family", ["mlp", "cnn"])
    p = suggest_training(trial, ["sgd", "adam"], (1e-4, 1e-1), [32, 64, 128, 256], (1e-6, 1e-3))
    if family == "mlp":
        suggest_mlp(trial, p, ctx, layers=(1, 3), nodes=(64, 1024), activations=["relu", "tanh"], dropout=(0.0, 0.5))
    else:
        suggest_small_cnn(trial, p, ctx, conv_dropout=(0.0, 0.4), dropout=(0.0, 0.5), dense=(64, 512),
                          norm_after_activation=True)
    p.update(suggest_augmentation(trial, rotate=15.0, crop_scale=0.7, translate=0.15, flip=True))
    return {**p, "lr_schedule": "cosine"}


pixels_csv_space = register_study(Study(
    name="pixels_csv_space",
    description="images as CSV (label + one column per pixel; --data-file, --test-file, --image-shape): MLPs "
                "and CNNs with rotation, zoom, shift and flip searched (TPE + ASHA)",
    settings=StudySettings(dataset="pixels_csv", num_samples=12, max_epochs=10, reduction_factor=3,
                           max_mmacs_cpu=10.0, n_startup_trials=4, example_classes=24),
    define=define_pixels_space,
    start_points=(THREE_BLOCK_REPORTED,),
))
