"""The saved model is self-contained: model.pt loads into a fresh network that predicts from raw
input (uint8 pixel values, or tabular features as read) with no normalisation statistics given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from search.study.final import FinalSpec, retrain, save_model
from trainables.datasets import Dataset, DatasetInfo, Split
from trainables.model import NetConfig, build_model

CNN = {"conv_layers": 1, "filters_0": 8, "kernel_size": 3, "pool_type": "max", "pool_size": 2, "activation": "relu",
       "batch_norm": False, "dropout": 0.0, "dense_layers": 0, "optimizer": "adam", "lr": 1e-2,
       "weight_decay": 0.0, "batch_size": 32}
MLP = {"family": "mlp", "dense_layers": 1, "dense_nodes_0": 16, "activation": "relu", "dropout": 0.0,
       "optimizer": "adam", "lr": 1e-2, "weight_decay": 0.0, "batch_size": 32}


def brightness_images(n: int, seed: int) -> Split:
    """The class is the brightness level: only a network that sees pixels on its training scale
    tells the classes apart (raw values fed to a network trained on normalised ones all look
    brighter than any class)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    levels = np.array([30, 90, 150, 210])[y]
    x = levels[:, None, None, None] + rng.integers(-25, 26, (n, 1, 12, 12))
    return Split(np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64))


def offset_features(n: int, seed: int) -> Split:
    """Tabular rows (N, F, 1, 1) far from zero mean and unit scale: the class shifts feature 0."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.normal(500.0, 5.0, (n, 3, 1, 1)).astype(np.float32)
    x[:, 0, 0, 0] += 40.0 * y
    return Split(x, y.astype(np.int64))


@pytest.mark.parametrize("params,make", [(CNN, brightness_images), (MLP, offset_features)],
                         ids=["cnn-pixels", "mlp-tabular"])
def test_model_pt_predicts_from_raw_input_without_mean_or_std(tmp_path, params, make):
    info = DatasetInfo("toy", "", ("a", "b", "c", "d"), counts=(400, 200))
    dataset = Dataset(info, make(400, 0), make(200, 1), "toy")
    spec = FinalSpec(NetConfig.from_flat(params), epochs=10, seed=0, threads=1, precision="fp32")
    final = retrain(spec, dataset, on_ray=False)
    assert final.test_accuracy > 0.9  # chance is 0.25

    blob = torch.load(save_model(final, spec, dataset, "toy_space", tmp_path), weights_only=True)
    for key in ("mean", "std"):  # not needed: the weights carry the normalisation
        blob.pop(key)
    net = build_model(NetConfig.from_flat(blob["config"]), tuple(blob["input_shape"]), len(blob["classes"]))
    net.load_state_dict(blob["state_dict"])
    net.eval()
    with torch.no_grad():
        predicted = net(torch.from_numpy(dataset.test.x).float()).argmax(1).numpy()
    assert (predicted == dataset.test.y).mean() == pytest.approx(final.test_accuracy, abs=0.01)


def test_a_model_pt_from_before_normalisation_moved_in_still_serves_as_a_backbone(tmp_path):
    from trainables.transfer import build_transfer, load_backbone

    source = build_model(NetConfig.from_flat(CNN), (1, 12, 12), 4)
    # The old layout: no Normalize layer (mean and std beside the weights), layers from index 0.
    old = {f"{int(k.split('.', 1)[0]) - 1}.{k.split('.', 1)[1]}": v for k, v in source.state_dict().items()
           if not k.startswith("0.")}
    torch.save({"state_dict": old, "config": CNN, "input_shape": (1, 12, 12), "classes": list("abcd"),
                "mean": (0.4,), "std": (0.2,), "dataset": "fashion_mnist"}, tmp_path / "model.pt")
    backbone = load_backbone(tmp_path / "model.pt")
    net = build_transfer(NetConfig.from_flat({"family": "transfer", "frozen_layers": 1, "head_nodes": 0,
                                              "dropout": 0.0, "lr_body": 0.0, "optimizer": "adam", "lr": 1e-2,
                                              "weight_decay": 0.0, "batch_size": 32}), backbone, 3)
    torch.testing.assert_close(net.body[0].weight, source[1].weight)
    assert net(torch.zeros(2, 1, 12, 12)).shape == (2, 3)
