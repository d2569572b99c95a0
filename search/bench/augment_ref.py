"""Where the data-path benchmark gets its batched augmentation.

The service's batched augmentation (issue 3) is expected at
``trainables.augment.augment_batch(x, spec, generator) -> Tensor`` taking a float (N, C, H, W)
batch, a dict of augmentation probabilities/ranges like ``BENCH_AUGMENT`` and a torch.Generator.
Until it exists, `resolve` falls back to ``minimal_augment`` below, a BENCH-ONLY stand-in that
is clearly not the service's code (the JSON records which one ran)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

# The CIFAR-10 augmentation study's transforms, each applied with probability p.
BENCH_AUGMENT = {"rotate_p": 1.0, "rotate_deg": 15.0, "crop_p": 1.0, "crop_scale": 0.8,
                 "translate_p": 1.0, "translate": 0.1, "flip_p": 0.5}


def minimal_augment(x: torch.Tensor, spec: dict, generator: torch.Generator) -> torch.Tensor:
    """Rotation, random resized crop (zoom) and translation as one batched affine warp per batch,
    then horizontal flips by mask; every image gets its own random parameters."""
    n = x.shape[0]

    def draw(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    def gate(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) < p).float()

    angle = draw(-1, 1) * math.radians(spec["rotate_deg"]) * gate(spec["rotate_p"])
    zoom = 1 - (1 - torch.sqrt(draw(spec["crop_scale"], 1.0))) * gate(spec["crop_p"])
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * spec["translate"] * 2 * gate(spec["translate_p"])[:, None]
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    flip = gate(spec["flip_p"]).bool()
    out[flip] = out[flip].flip(-1)
    return out


def resolve():
    """(function, where it came from)."""
    try:
        from trainables.augment import augment_batch  # type: ignore[import-not-found]
    except ImportError:
        return minimal_augment, "search.bench.augment_ref.minimal_augment (bench-only stand-in)"
    return augment_batch, "trainables.augment.augment_batch"
