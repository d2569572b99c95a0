"""Every registered study, tested automatically by the check a user's study gets too
(spaces/check.py): each configuration it can propose builds, trains a step (with its
augmentation) and stays within the study's cost cap."""

from __future__ import annotations

import optuna
import pytest

from spaces.check import (
    NUMERICS,
    check_numerics,
    check_samples,
    check_start_points,
    check_uncapped,
    sampled_configs,
)
from spaces.registry import get_study, list_studies


@pytest.mark.parametrize("name", list_studies())
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_every_sample_builds_trains_and_fits_the_cpu_cap(name, sampler):
    assert check_samples(get_study(name), sampler) > 0


@pytest.mark.parametrize("name", list_studies())
@pytest.mark.parametrize("accel", NUMERICS, ids=lambda a: a.name)
def test_every_layer_type_trains_and_evaluates_under_each_numerics(name, accel):
    """Every activation, pooling type, batch norm, dropout, the MLP and transfer families and
    augmentation, as the spaces propose them, under channels-last fp32 and bf16 autocast."""
    assert check_numerics(get_study(name), accel) > 0


@pytest.mark.parametrize("name", list_studies())
def test_start_points_are_valid_configurations_inside_the_cap(name):
    assert check_start_points(get_study(name)) == len(get_study(name).start_points)


@pytest.mark.parametrize("name", list_studies())
def test_uncapped_space_builds_its_largest_networks(name):
    assert check_uncapped(get_study(name)) > 0


def test_conditional_parameters_exist_only_for_existing_layers():
    study = get_study("fashion_space")
    for params in sampled_configs(study, None, optuna.samplers.RandomSampler(seed=3), n=40):
        assert {k for k in params if k.startswith("filters_")} == {f"filters_{i}" for i in range(params["conv_layers"])}
        assert {k for k in params if k.startswith("dense_nodes_")} == \
            {f"dense_nodes_{i}" for i in range(params["dense_layers"])}


def test_space_covers_the_promised_ranges():
    seen: dict[str, set] = {}
    for params in sampled_configs(get_study("fashion_space"), None, optuna.samplers.RandomSampler(seed=4), n=300):
        for k, v in params.items():
            seen.setdefault(k, set()).add(v)
    assert seen["conv_layers"] == {1, 2, 3, 4}
    assert seen["kernel_size"] == {3, 5, 7}
    assert seen["pool_type"] == {"max", "avg"} and seen["pool_size"] == {2, 3}
    assert seen["activation"] == {"relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid"}
    assert seen["optimizer"] == {"sgd", "adam", "adamw"}
    assert min(seen["filters_0"]) >= 8 and max(seen["filters_0"]) <= 128
    assert min(seen["batch_size"]) == 32 and max(seen["batch_size"]) == 512
    assert max(seen["dropout"]) <= 0.5


def test_grid_is_the_original_96_points():
    grid = get_study("fashion_grid").grid_points()
    assert len(grid) == 96
    assert len({tuple(sorted(p.items())) for p in grid}) == 96
    assert {p["activation"] for p in grid} == {"relu", "sigmoid", "tanh"}
    assert {p["kernel_size"] for p in grid} == {3, 5}
    assert {p["dense_nodes_0"] for p in grid} == {128, 256}
    assert {p["dropout"] for p in grid} == {0.1, 0.3}
    assert {p["filters_0"] for p in grid} == {16, 32}
    assert {p["conv_layers"] for p in grid} == {2, 3}
    assert {p["pool_size"] for p in grid} == {2}


def test_mnist_space_holds_the_reference_networks_and_both_families():
    study = get_study("mnist_space")
    shapes = {
        (p["family"], p.get("dense_nodes_0"), p.get("dense_nodes_1"), p.get("filters_0")) for p in study.start_points
    }
    assert ("mlp", 512, 512, None) in shapes and ("mlp", 128, 64, None) in shapes and ("cnn", 50, None, 10) in shapes
    seen = {p["family"] for p in sampled_configs(study, None, optuna.samplers.RandomSampler(seed=5), n=30)}
    assert seen == {"mlp", "cnn"}


def test_cifar_space_searches_both_families_and_every_augmentation():
    configs = list(sampled_configs(get_study("cifar10_space"), None, optuna.samplers.RandomSampler(seed=6), n=40))
    assert {p["convs_per_block"] for p in configs} == {1, 2}
    for key in ("aug_rotate_p", "aug_crop_p", "aug_translate_p", "aug_flip_p", "aug_cutmix_p"):
        assert all(key in p for p in configs)
    three_block = [p for p in configs if p["convs_per_block"] == 1]
    assert all(24 <= p["filters_0"] <= 64 and 96 <= p["filters_2"] <= 256 for p in three_block)
    assert {p["kernel_size_0"] for p in three_block} == {3, 5, 7}
