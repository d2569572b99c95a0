from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from spaces.mnist_space import REFERENCE_POINTS
from tests.conftest import user_error
from trainables.errors import UserError
from trainables.model import NetConfig, build_model, count_macs, make_optimizer, model_macs
from trainables.transfer import build_transfer, convert_images, load_backbone

SOURCE = REFERENCE_POINTS[2]  # conv 10 -> conv 20 -> fc 50: four conv/linear layers before the classifier


def saved_model(tmp_path, classes=7):
    model = build_model(NetConfig.from_flat(SOURCE), (1, 28, 28), classes)
    path = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict(), "config": SOURCE, "input_shape": (1, 28, 28),
                "classes": [str(c) for c in range(classes)], "mean": (0.13,), "std": (0.31,),
                "space": "mnist_space"}, path)
    return path, model


def head(**change) -> NetConfig:
    return NetConfig.from_flat({"family": "transfer", "frozen_layers": 2, "head_nodes": 32, "dropout": 0.1,
                                "lr_body": 1e-3, "optimizer": "adam", "lr": 1e-2, "weight_decay": 0.0,
                                "batch_size": 32, **change})


def test_hpsearch_backbone_keeps_its_weights_and_drops_its_classifier(tmp_path):
    path, source = saved_model(tmp_path)
    backbone = load_backbone(path)
    assert backbone.kind == "hpsearch" and backbone.body_layers == 3 and backbone.features == 50
    net = build_transfer(head(frozen_layers=0), backbone, num_classes=3)
    torch.testing.assert_close(net.body[0].weight, source[1].weight)  # source[0]: its Normalize layer
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    cfg = head()
    assert model_macs(cfg, (1, 28, 28), 3, backbone) == count_macs(build_transfer(cfg, backbone, 3), (1, 28, 28))


def test_frozen_layers_do_not_move_and_the_rest_does(tmp_path):
    backbone = load_backbone(saved_model(tmp_path)[0])
    cfg = head(frozen_layers=2)
    net = build_transfer(cfg, backbone, 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = make_optimizer(cfg, net)
    assert sorted(g["base_lr"] for g in optimizer.param_groups) == [1e-3, 1e-2]
    net.train()
    for _ in range(3):
        loss = F.cross_entropy(net(torch.randn(8, 1, 28, 28)), torch.arange(8) % 3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = net.state_dict()
    convs = [k for k in after if k.startswith("body.") and k.endswith("weight")]
    assert torch.equal(before[convs[0]], after[convs[0]]) and torch.equal(before[convs[1]], after[convs[1]])
    assert not torch.equal(before[convs[2]], after[convs[2]])


def test_freezing_more_layers_than_the_body_has_is_named(tmp_path):
    backbone = load_backbone(saved_model(tmp_path)[0])
    with pytest.raises(UserError, match="frozen_layers=9 .*has 3 layers"):
        build_transfer(head(frozen_layers=9), backbone, 3)


def test_torchvision_weights_for_another_architecture_are_refused(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(UserError, match="does not fit the mobilenet_v3_small architecture"):
        load_backbone(path, "mobilenet_v3_small")
    with user_error("pass --arch"):
        load_backbone(path)
    backbone = load_backbone(path, "resnet18")
    assert backbone.kind == "torchvision" and backbone.features == 512 and backbone.input_shape == (3, 224, 224)


def test_files_that_are_not_weights_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a PyTorch weights file"):
        load_backbone(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="not found"):
        load_backbone(tmp_path / "missing.pt")


def test_images_convert_to_the_backbones_input():
    colour = np.zeros((3, 3, 133, 133), dtype=np.uint8)
    colour[:, 0] = 200  # pure red
    grey = convert_images(colour, (1, 28, 28))
    assert grey.shape == (3, 1, 28, 28) and abs(int(grey[0, 0, 14, 14]) - round(0.299 * 200)) <= 1
    up = convert_images(np.full((2, 1, 32, 32), 77, dtype=np.uint8), (3, 224, 224))
    assert up.shape == (2, 3, 224, 224) and (up == 77).all()
