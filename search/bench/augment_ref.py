"""The augmentation the data-path benchmark times: the CIFAR-10 study's transforms, run by the
service's own batched code (`trainables.augment.augment`), each applied with probability p."""

from __future__ import annotations

import dataclasses

from trainables.augment import AugmentConfig

BENCH_CONFIG = AugmentConfig(rotate=15.0, rotate_p=1.0, crop_scale=0.8, crop_p=1.0, translate=0.1,
                             translate_p=1.0, flip_p=0.5)
BENCH_AUGMENT = dataclasses.asdict(BENCH_CONFIG)
