"""Data augmentation as batched tensor operations on the device that trains.

Each transform is applied to a random subset of the batch with its own searched probability,
all in one pass: rotation, zoom (random resized crop) and translation are folded into one
affine matrix per image and applied with a single `grid_sample`; flips are a masked `flip`;
CutMix pastes a box from another image of the batch and mixes the labels by the pasted area.
Nothing here runs per sample in Python, so its cost scales with the batch, not the image count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch.nn import functional as F

from trainables.errors import UserError


@dataclass(frozen=True)
class AugmentConfig:
    """Flat keys ``aug_<field>``. A probability of 0 turns a transform off."""

    rotate: float = 0.0  # max degrees either way
    rotate_p: float = 0.0
    crop_scale: float = 1.0  # smallest kept area fraction of a random resized crop (zoom)
    crop_p: float = 0.0
    translate: float = 0.0  # max shift as a fraction of the side
    translate_p: float = 0.0
    flip_p: float = 0.0  # horizontal flip
    cutmix_p: float = 0.0  # fraction of batches mixed with CutMix (area ~ U(0, 1), i.e. Beta(1, 1))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_p") and not 0.0 <= value <= 1.0:
                raise UserError(f"invalid hyperparameter: aug_{f.name}={value} (a probability, 0-1)")
        if not 0.0 <= self.rotate <= 180.0:
            raise UserError(f"invalid hyperparameter: aug_rotate={self.rotate} (0-180 degrees)")
        if not 0.05 <= self.crop_scale <= 1.0:
            raise UserError(f"invalid hyperparameter: aug_crop_scale={self.crop_scale} (0.05-1)")
        if not 0.0 <= self.translate <= 0.5:
            raise UserError(f"invalid hyperparameter: aug_translate={self.translate} (0-0.5)")

    @property
    def geometric(self) -> bool:
        return (self.rotate_p > 0 and self.rotate > 0) or (self.crop_p > 0 and self.crop_scale < 1) or \
            (self.translate_p > 0 and self.translate > 0)

    @property
    def active(self) -> bool:
        return self.geometric or self.flip_p > 0 or self.cutmix_p > 0


def _chosen(n: int, p: float, generator: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) < p).to(device)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def affine_matrices(cfg: AugmentConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to input coordinates in [-1, 1]; images not chosen
    for a transform get the identity for it."""
    angle = torch.zeros(n)
    if cfg.rotate_p > 0:
        on = torch.rand(n, generator=generator) < cfg.rotate_p
        angle = torch.where(on, _uniform(n, -cfg.rotate, cfg.rotate, generator), angle) * (math.pi / 180)
    sx, sy = torch.ones(n), torch.ones(n)
    cx, cy = torch.zeros(n), torch.zeros(n)
    if cfg.crop_p > 0:
        on = torch.rand(n, generator=generator) < cfg.crop_p
        area = _uniform(n, cfg.crop_scale, 1.0, generator)
        # Aspect ratio in [3/4, 4/3] as torchvision's RandomResizedCrop; sides capped at the image.
        ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), generator))
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        sx, sy = torch.where(on, w, sx), torch.where(on, h, sy)
        # The crop's centre may be anywhere that keeps it inside the image.
        cx = torch.where(on, (1 - sx) * _uniform(n, -1, 1, generator), cx)
        cy = torch.where(on, (1 - sy) * _uniform(n, -1, 1, generator), cy)
    if cfg.translate_p > 0:
        on = torch.rand(n, generator=generator) < cfg.translate_p
        t = 2 * cfg.translate  # a shift of `translate` sides is 2*translate in [-1, 1] units
        cx = cx + torch.where(on, _uniform(n, -t, t, generator), torch.zeros(n))
        cy = cy + torch.where(on, _uniform(n, -t, t, generator), torch.zeros(n))
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([
        torch.stack([cos * sx, -sin * sy, cx], dim=1),
        torch.stack([sin * sx, cos * sy, cy], dim=1),
    ], dim=1)


def augment(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator,
            fill: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    """Augment a float batch (N, C, H, W) of raw values (the network normalises after this).
    Pixels a geometric transform shifts in take the per-channel `fill` (1, C, 1, 1), the dataset
    mean in input units, i.e. what a normalised zero is; None: zeros (for a normalised batch).
    Returns (images, labels, mixed-in labels or None, weight of the original labels); the loss is
    ``lam * CE(out, y) + (1 - lam) * CE(out, y_mix)``. Randomness comes from `generator`
    (on the CPU, so a run is reproducible on any device)."""
    n = len(x)
    if cfg.geometric:
        theta = affine_matrices(cfg, n, generator).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Bilinear sampling is linear: sampling x - fill with zeros padding, then adding fill back,
        # pads with `fill` and leaves every other pixel as sampling x would.
        shift = fill.to(x.device, x.dtype) if fill is not None else None
        x = F.grid_sample(x - shift if shift is not None else x, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        if shift is not None:
            x = x + shift
    if cfg.flip_p > 0:
        x = torch.where(_chosen(n, cfg.flip_p, generator, x.device).view(-1, 1, 1, 1), x.flip(3), x)
    if cfg.cutmix_p > 0 and n > 1 and torch.rand((), generator=generator).item() < cfg.cutmix_p:
        return cutmix(x, y, generator)
    return x, y, None, 1.0


def cutmix(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Paste one random box from a shuffled copy of the batch into every image; the label weight
    is the exact fraction of pixels kept (after the box is clipped to the image)."""
    n, _, h, w = x.shape
    perm = torch.randperm(n, generator=generator).to(x.device)
    cut = math.sqrt(1.0 - torch.rand((), generator=generator).item())  # box side fraction
    bh, bw = int(round(h * cut)), int(round(w * cut))
    top = int(torch.randint(0, h - bh + 1, (), generator=generator))
    left = int(torch.randint(0, w - bw + 1, (), generator=generator))
    x = x.clone()
    x[:, :, top:top + bh, left:left + bw] = x[perm, :, top:top + bh, left:left + bw]
    lam = 1.0 - (bh * bw) / (h * w)
    return x, y, y[perm], lam


def from_flat(params: dict) -> AugmentConfig:
    """Pop the ``aug_*`` keys out of `params` (so the caller can report what is left as unknown)."""
    values = {}
    for f in fields(AugmentConfig):
        key = f"aug_{f.name}"
        if key in params:
            value = params.pop(key)
            try:
                values[f.name] = float(value)
            except (TypeError, ValueError):
                raise UserError(f"bad hyperparameter value: {key}={value!r} is not a number") from None
    return AugmentConfig(**values)


def to_flat(cfg: AugmentConfig) -> dict[str, float]:
    return {f"aug_{f.name}": getattr(cfg, f.name) for f in fields(cfg)} if cfg.active else {}
