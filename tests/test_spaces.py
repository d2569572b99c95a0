"""Every registered study, tested automatically: each configuration it can propose builds,
trains a step (with its augmentation) and stays within the study's cost cap."""

from __future__ import annotations

import functools

import optuna
import pytest
import torch
from torch.nn import functional as F

from spaces.registry import get_study, list_studies
from spaces.study import SpaceContext
from trainables.augment import augment
from trainables.model import NetConfig, build_model, make_optimizer, model_macs
from trainables.numerics import Accel

INPUT, CLASSES = (1, 28, 28), 10  # the Fashion-MNIST studies'
SAMPLES = 25


@functools.cache
def example_backbone():
    """A small trained-network stand-in for transfer studies: an hpsearch CNN saved as model.pt."""
    import tempfile
    from pathlib import Path

    from spaces.mnist_space import REFERENCE_POINTS
    from trainables.transfer import load_backbone

    params = REFERENCE_POINTS[2]
    model = build_model(NetConfig.from_flat(params), (1, 28, 28), 7)
    path = Path(tempfile.mkdtemp()) / "model.pt"
    torch.save({"state_dict": model.state_dict(), "config": params, "input_shape": (1, 28, 28),
                "classes": [str(d) for d in range(7)], "mean": (0.13,), "std": (0.31,), "space": "mnist_space"}, path)
    return load_backbone(path)


def context(study, max_macs) -> tuple[SpaceContext, object]:
    s = study.settings
    backbone = example_backbone() if s.needs_backbone else None
    shape = backbone.input_shape if backbone else s.example_input
    return SpaceContext(shape, s.example_classes, max_macs, backbone.body_layers if backbone else 0), backbone


def sampled_configs(study, max_macs, sampler, n=SAMPLES):
    ctx, _ = context(study, max_macs)
    opt_study = optuna.create_study(direction="maximize", sampler=sampler)
    for i in range(n):
        trial = opt_study.ask()
        constants = study.define(trial, ctx) or {}
        opt_study.tell(trial, float(i % 7))  # any score: lets TPE leave its random start-up
        yield {**trial.params, **constants}


def configs_of(name, max_macs, sampler):
    study = get_study(name)
    if study.grid is not None:
        return study.grid_points()
    return list(sampled_configs(study, max_macs, sampler))


def train_step(cfg: NetConfig, ctx: SpaceContext, backbone, accel: Accel = Accel()) -> None:
    """One step as the training loop takes it: augmentation, the layout and autocast of `accel`,
    then an evaluation pass under the same numerics."""
    model = build_model(cfg, ctx.input_shape, ctx.num_classes, backbone).to(memory_format=accel.memory_format)
    x, y = torch.randn(4, *ctx.input_shape), torch.arange(4) % ctx.num_classes
    x, y, y_mix, lam = augment(x, y, cfg.augment, torch.Generator().manual_seed(0))
    with accel.autocast(x.device):
        out = model(accel.layout(x))
        loss = (
            F.cross_entropy(out, y)
            if y_mix is None
            else lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y_mix)
        )
    loss.backward()
    make_optimizer(cfg, model).step()
    assert torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.eval()
    with torch.no_grad(), accel.autocast(x.device):
        assert torch.isfinite(model(accel.layout(x)).float()).all()


@pytest.mark.parametrize("name", list_studies())
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_every_sample_builds_trains_and_fits_the_cpu_cap(name, sampler):
    study = get_study(name)
    cap = None if study.settings.max_mmacs_cpu is None else int(study.settings.max_mmacs_cpu * 1e6)
    ctx, backbone = context(study, cap)
    optuna_sampler = (optuna.samplers.RandomSampler(seed=1) if sampler == "random" else
                      optuna.samplers.TPESampler(seed=1, n_startup_trials=10, multivariate=True, group=True))
    configs = configs_of(name, cap, optuna_sampler)
    assert configs
    for params in configs:
        cfg = NetConfig.from_flat(params)
        if cap is not None:
            assert model_macs(cfg, ctx.input_shape, ctx.num_classes, backbone) <= cap, params
        train_step(cfg, ctx, backbone)


@pytest.mark.parametrize("name", list_studies())
@pytest.mark.parametrize("accel", [Accel(None, True), Accel(torch.bfloat16, True)], ids=lambda a: a.name)
def test_every_layer_type_trains_and_evaluates_under_each_numerics(name, accel):
    """Every activation, pooling type, batch norm, dropout, the MLP and transfer families and
    augmentation, as the spaces propose them, under channels-last fp32 and bf16 autocast."""
    study = get_study(name)
    ctx, backbone = context(study, None)
    for params in configs_of(name, None, optuna.samplers.RandomSampler(seed=3))[:SAMPLES]:
        train_step(NetConfig.from_flat(params), ctx, backbone, accel)


@pytest.mark.parametrize("name", list_studies())
def test_start_points_are_valid_configurations_inside_the_cap(name):
    study = get_study(name)
    cap = None if study.settings.max_mmacs_cpu is None else int(study.settings.max_mmacs_cpu * 1e6)
    ctx, backbone = context(study, cap)
    for point in study.start_points:
        cfg = NetConfig.from_flat(point)
        assert cap is None or model_macs(cfg, ctx.input_shape, ctx.num_classes, backbone) <= cap
        train_step(cfg, ctx, backbone)


@pytest.mark.parametrize("name", list_studies())
def test_uncapped_space_builds_its_largest_networks(name):
    ctx, backbone = context(get_study(name), None)
    for params in configs_of(name, None, optuna.samplers.RandomSampler(seed=2))[:20]:
        build_model(NetConfig.from_flat(params), ctx.input_shape, ctx.num_classes, backbone)(
            torch.zeros(2, *ctx.input_shape))


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
