from __future__ import annotations

import pytest
import torch
from torch import nn

from spaces.fashion_space import GRID_WINNER, TEXTBOOK_CNN
from trainables.errors import UserError
from trainables.model import NetConfig, build_model, model_macs, pooled_sizes


def counted_macs(model: nn.Module, input_shape) -> int:
    """MACs counted from the layers actually run, to check the analytic count the spaces use."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]

    def linear_hook(module, inputs, output):
        nonlocal total
        total += module.in_features * module.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear_hook)
    model(torch.zeros(1, *input_shape))
    return total


@pytest.mark.parametrize("params", [GRID_WINNER, TEXTBOOK_CNN])
def test_flat_round_trip(params):
    cfg = NetConfig.from_flat(params)
    assert NetConfig.from_flat(cfg.to_flat()) == cfg
    assert cfg.to_flat() == {**params, "family": "cnn", "momentum": 0.9, "shuffle": True, "convs_per_block": 1,
                             "norm_after_activation": False, "conv_dropout": 0.0}


@pytest.mark.parametrize("depth,pool,expect", [(4, 2, [True] * 4), (4, 3, [True, True, True, False]),
                                               (1, 3, [True])])
def test_pooling_stops_before_the_map_vanishes(depth, pool, expect):
    assert pooled_sizes(28, depth, pool) == expect


@pytest.mark.parametrize("depth,kernel,pool", [(1, 3, 2), (2, 5, 3), (3, 7, 2), (4, 3, 3), (4, 7, 2)])
def test_model_macs_matches_layers_run(depth, kernel, pool):
    params = {**TEXTBOOK_CNN, "conv_layers": depth, "kernel_size": kernel, "pool_size": pool,
              "dense_layers": 2, "dense_nodes_1": 48}
    for i in range(4):
        params.pop(f"filters_{i}", None)
    params.update({f"filters_{i}": 8 * (i + 1) for i in range(depth)})
    cfg = NetConfig.from_flat(params)
    model = build_model(cfg, (1, 28, 28), 10).eval()
    assert model_macs(cfg, (1, 28, 28), 10) == counted_macs(model, (1, 28, 28))


@pytest.mark.parametrize("change,message", [
    ({"activation": "swish"}, "activation='swish'"),
    ({"dropout": 1.5}, "dropout=1.5"),
    ({"kernel_size": 4}, "kernel_size=4"),
    ({"conv_layers": 5}, "filters_2"),
    ({"batch_size": "many"}, "bad hyperparameter value"),
    ({"batch_norm": "maybe"}, "true/false"),
    ({"colour": "red"}, "unknown hyperparameter.*colour"),
])
def test_bad_hyperparameters_name_the_value(change, message):
    with pytest.raises(UserError, match=message):
        NetConfig.from_flat({**GRID_WINNER, **change})


def test_missing_hyperparameter_is_named():
    params = dict(GRID_WINNER)
    del params["lr"]
    with pytest.raises(UserError, match="missing hyperparameter 'lr'"):
        NetConfig.from_flat(params)


def test_cosine_schedule_decays_to_zero_and_constant_stays():
    from trainables.model import lr_factor

    cosine = NetConfig.from_flat({**GRID_WINNER, "lr": 0.1, "lr_schedule": "cosine"})
    assert lr_factor(cosine, 0, 100) == pytest.approx(1.0)
    assert lr_factor(cosine, 50, 100) == pytest.approx(0.5)
    assert lr_factor(cosine, 100, 100) == pytest.approx(0.0)
    constant = NetConfig.from_flat({**GRID_WINNER, "lr": 0.1, "lr_schedule": "constant"})
    assert {lr_factor(constant, s, 100) for s in (0, 50, 100)} == {1.0}
