from __future__ import annotations

import pytest
import torch

from trainables.augment import AugmentConfig, augment, cutmix, from_flat, to_flat
from trainables.errors import UserError


def batch(n=8, c=1, size=16) -> torch.Tensor:
    return torch.arange(n * c * size * size, dtype=torch.float32).view(n, c, size, size) / (size * size)


def test_nothing_on_means_the_batch_is_untouched():
    x, y = batch(), torch.arange(8)
    out, labels, mixed, lam = augment(x, y, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out is x and labels is y and mixed is None and lam == 1.0


def test_flip_with_probability_one_mirrors_every_image():
    x = batch()
    out, *_ = augment(x, torch.arange(8), AugmentConfig(flip_p=1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.flip(3))


def test_affine_parameters_stay_within_the_searched_ranges():
    import math

    from trainables.augment import affine_matrices

    g = torch.Generator().manual_seed(0)
    rot = affine_matrices(AugmentConfig(rotate=30.0, rotate_p=1.0), 500, g)
    angles = torch.atan2(rot[:, 1, 0], rot[:, 0, 0]) * 180 / math.pi
    assert angles.abs().max() <= 30.0 + 1e-4 and angles.abs().max() > 25
    torch.testing.assert_close(torch.linalg.det(rot[:, :, :2]), torch.ones(500))  # no zoom
    crop = affine_matrices(AugmentConfig(crop_scale=0.5, crop_p=1.0), 500, g)
    area = torch.linalg.det(crop[:, :, :2])
    assert area.min() >= 0.5 - 1e-5 and area.max() <= 1.0 + 1e-5
    # Each crop stays inside the image: |centre| + half-side <= 1 in [-1, 1] coordinates.
    assert ((crop[:, 0, 2].abs() + crop[:, 0, 0]) <= 1 + 1e-5).all()
    some = affine_matrices(AugmentConfig(translate=0.1, translate_p=0.5), 1000, g)
    moved = (some[:, :, 2].abs() > 0).any(dim=1).float().mean().item()
    assert 0.4 < moved < 0.6 and some[:, :, 2].abs().max() <= 0.2 + 1e-6


def test_geometric_transforms_are_per_image_and_reproducible():
    x = batch()
    cfg = AugmentConfig(rotate=20, rotate_p=0.5, crop_scale=0.5, crop_p=0.5, translate=0.2, translate_p=0.5)
    a, *_ = augment(x, torch.arange(8), cfg, torch.Generator().manual_seed(3))
    b, *_ = augment(x, torch.arange(8), cfg, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    changed = [(not torch.allclose(a[i], x[i], atol=1e-5)) for i in range(8)]
    assert any(changed) and a.shape == x.shape


def test_cutmix_weights_labels_by_the_pasted_area():
    x = torch.stack([torch.full((1, 10, 10), float(i)) for i in range(6)])
    y = torch.arange(6)
    out, labels, mixed, lam = cutmix(x, y, torch.Generator().manual_seed(1))
    for i in range(6):
        own = (out[i] == float(i)).float().mean().item()
        donor = mixed[i].item()
        if donor != i:
            assert own == pytest.approx(lam)
            assert (out[i] == float(donor)).float().mean().item() == pytest.approx(1 - lam)
    assert torch.equal(labels, y)


@pytest.mark.parametrize("flat,message", [
    ({"aug_flip_p": 1.5}, "aug_flip_p=1.5"),
    ({"aug_rotate": 500}, "aug_rotate=500"),
    ({"aug_crop_scale": 0.0}, "aug_crop_scale=0.0"),
    ({"aug_translate_p": "often"}, "aug_translate_p='often'"),
])
def test_bad_augmentation_values_are_named(flat, message):
    with pytest.raises(UserError, match=message):
        from_flat(dict(flat))


def test_flat_round_trip_and_off_by_default():
    cfg = AugmentConfig(rotate=10, rotate_p=0.3, cutmix_p=0.2)
    assert from_flat(to_flat(cfg)) == cfg
    assert to_flat(AugmentConfig()) == {}
