"""The augmentation the data-path benchmark times: the CIFAR-10 study's transforms, run by the
service's own batched code (`trainables.augment.augment`), each applied with probability p."""

from __future__ import annotations

import dataclasses

import torch

from trainables.augment import AugmentConfig, augment

BENCH_CONFIG = AugmentConfig(rotate=15.0, rotate_p=1.0, crop_scale=0.8, crop_p=1.0, translate=0.1,
                             translate_p=1.0, flip_p=0.5)
BENCH_AUGMENT = dataclasses.asdict(BENCH_CONFIG)


def service_augment(x: torch.Tensor, spec: dict, generator: torch.Generator) -> torch.Tensor:
    return augment(x, torch.zeros(len(x), dtype=torch.long), AugmentConfig(**spec), generator)[0]


def resolve():
    """(function, where it came from)."""
    return service_augment, "trainables.augment.augment"
