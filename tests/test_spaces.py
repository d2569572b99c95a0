"""Every registered study, tested automatically: each configuration it can propose builds,
trains a step and stays within the study's cost cap."""

from __future__ import annotations

import optuna
import pytest
import torch
from torch.nn import functional as F

from spaces import SpaceContext, get_study, list_studies
from trainables.model import CNNConfig, build_model, make_optimizer, model_macs

INPUT, CLASSES = (1, 28, 28), 10
SAMPLES = 60


def sampled_configs(study, max_macs, sampler, n=SAMPLES):
    ctx = SpaceContext(INPUT, CLASSES, max_macs)
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


def train_step(cfg: CNNConfig) -> None:
    model = build_model(cfg, INPUT, CLASSES)
    x, y = torch.randn(3, *INPUT), torch.tensor([0, 1, 2])
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    make_optimizer(cfg, model).step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", list_studies())
@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_every_sample_builds_trains_and_fits_the_cpu_cap(name, sampler):
    study = get_study(name)
    cap = None if study.settings.max_mmacs_cpu is None else int(study.settings.max_mmacs_cpu * 1e6)
    optuna_sampler = (optuna.samplers.RandomSampler(seed=1) if sampler == "random" else
                      optuna.samplers.TPESampler(seed=1, n_startup_trials=10, multivariate=True, group=True))
    configs = configs_of(name, cap, optuna_sampler)
    assert configs
    for params in configs:
        cfg = CNNConfig.from_flat(params)
        if cap is not None:
            assert model_macs(cfg, INPUT, CLASSES) <= cap, params
        train_step(cfg)


@pytest.mark.parametrize("name", list_studies())
def test_uncapped_space_builds_its_largest_networks(name):
    for params in configs_of(name, None, optuna.samplers.RandomSampler(seed=2))[:30]:
        build_model(CNNConfig.from_flat(params), INPUT, CLASSES)(torch.zeros(2, *INPUT))


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


def test_start_points_are_inside_the_space():
    study = get_study("fashion_space")
    ctx_cap = int(study.settings.max_mmacs_cpu * 1e6)
    for point in study.start_points:
        assert model_macs(CNNConfig.from_flat(point), INPUT, CLASSES) <= ctx_cap
