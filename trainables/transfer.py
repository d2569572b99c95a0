"""Fine-tuning from a trained network: the backbone a transfer study starts from, the network
made of its body and a new head, and the images converted to what the backbone expects.

A backbone is either a model hpsearch exported (`model.pt`: weights plus the configuration
that built them) or a torchvision architecture with weights the user has locally (a state dict
file plus `--arch`). Nothing is ever downloaded. The body is the whole source network with its
last linear layer (its classifier) removed; `frozen_layers` counts its conv/linear layers from
the input side.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trainables.datasets import Dataset, Split
from trainables.errors import UserError
from trainables.model import NetConfig, Normalize, activation, build_model, count_macs, upgrade_state_dict

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TORCHVISION_INPUT = 224


@dataclass(frozen=True)
class Backbone:
    """What a transfer network is built from. `state_dict` holds the source network's weights;
    it is None for a backbone described only to rebuild a saved transfer model."""

    kind: str  # "hpsearch" or "torchvision"
    arch: str  # the torchvision architecture, or the hpsearch space the model came from
    config: dict[str, Any] | None  # hpsearch: the flat configuration that built the source network
    input_shape: tuple[int, int, int]
    source_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    features: int  # width of the body's output
    body_layers: int  # conv/linear layers in the body (the most `frozen_layers` can be)
    body_macs: int
    path: str = ""
    state_dict: dict[str, torch.Tensor] | None = None

    def describe(self) -> dict[str, Any]:
        """Everything but the weights: saved with a transfer model so it can be rebuilt."""
        return {k: v for k, v in self.__dict__.items() if k != "state_dict"}

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> "Backbone":
        return cls(**{**d, "input_shape": tuple(d["input_shape"]), "mean": tuple(d["mean"]), "std": tuple(d["std"])})


def _source_network(kind: str, arch: str, config: dict | None, input_shape, classes: int) -> nn.Module:
    if kind == "hpsearch":
        return build_model(NetConfig.from_flat(config or {}), input_shape, classes)
    import torchvision

    try:
        return torchvision.models.get_model(arch, weights=None, num_classes=classes)
    except ValueError:
        raise UserError(f"unknown torchvision architecture {arch!r}", option="arch",
                        fix="with a name from torchvision.models.list_models(), e.g. mobilenet_v3_small "
                            "or resnet18") from None


def _strip_classifier(net: nn.Module) -> tuple[nn.Module, int]:
    """Replace the network's last linear layer with the identity; returns (body, its width)."""
    name, last = None, None
    for n, m in net.named_modules():
        if isinstance(m, nn.Linear):
            name, last = n, m
    if last is None:
        raise UserError("the backbone has no linear classifier layer to replace")
    parent = net
    *path, leaf = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, nn.Identity())
    return net, last.in_features


def _param_layers(body: nn.Module) -> list[nn.Module]:
    return [m for m in body.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def load_backbone(path: str | Path, arch: str | None = None) -> Backbone:
    """Read a weights file and check it fits its architecture (one clear error if not)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"weights file {path} not found", option="weights",
                        fix="with an hpsearch model.pt or a torchvision state dict")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file means the same to the user
        raise UserError(f"{path} is not a PyTorch weights file ({type(e).__name__})", option="weights",
                        fix="with an hpsearch model.pt or a torchvision state dict") from None
    if isinstance(blob, dict) and {"state_dict", "config", "input_shape", "classes"} <= set(blob):
        config = dict(blob["config"])
        if config.get("family") == "transfer":
            raise UserError(f"{path} is itself a transfer model; start from the network it was made from")
        kind, name = "hpsearch", str(blob.get("space", "hpsearch"))
        input_shape, classes = tuple(int(v) for v in blob["input_shape"]), len(blob["classes"])
        mean, std = tuple(blob["mean"]), tuple(blob["std"])
        # A model.pt from before networks normalised their own input still loads.
        state = upgrade_state_dict(blob["state_dict"], str(config.get("family", "cnn")), mean, std,
                                   1.0 if blob.get("dataset") == "tabular_csv" else 255.0)
    elif isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        if not arch:
            raise UserError(f"{path} is a plain state dict", option="arch",
                            fix="with its torchvision architecture (e.g. mobilenet_v3_small)")
        kind, name, config = "torchvision", arch, None
        input_shape, mean, std, state = (3, TORCHVISION_INPUT, TORCHVISION_INPUT), IMAGENET_MEAN, IMAGENET_STD, blob
        classifier = [k for k, v in blob.items() if k.endswith("weight") and v.ndim == 2]
        classes = int(blob[classifier[-1]].shape[0]) if classifier else 1000
    else:
        raise UserError(f"{path} holds neither an hpsearch model nor a state dict", option="weights",
                        fix="with one")
    net = _source_network(kind, name, config, input_shape, classes)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).split("\n\t")[1].strip() if "\n\t" in str(e) else str(e).splitlines()[0]
        raise UserError(f"weights file {path} does not fit the {name} architecture ({first[:160]})",
                        option="arch", fix="the weights were saved from") from None
    body, features = _strip_classifier(_without_normalize(net))
    return Backbone(kind, name, config, input_shape, classes, mean, std, features,
                    len(_param_layers(body)), count_macs(body, input_shape), str(path), state)


def _without_normalize(net: nn.Module) -> nn.Module:
    """An hpsearch network without its `Normalize` first layer (the transfer network normalises
    once, in front of the body); the other layers keep their indices' order."""
    if isinstance(net, nn.Sequential) and isinstance(net[0], Normalize):
        return nn.Sequential(*list(net)[1:])
    return net


class TransferNet(nn.Module):
    """Raw input -> `norm` (the backbone's statistics) -> body -> new head."""

    def __init__(self, norm: Normalize, body: nn.Module, head: nn.Module, frozen: list[nn.Module]):
        super().__init__()
        self.norm, self.body, self.head = norm, body, head
        self._frozen = frozen  # plain list: these modules are registered once, under body

    def train(self, mode: bool = True) -> "TransferNet":
        super().train(mode)
        # Frozen layers keep their batch-norm statistics too, or they would drift under new data.
        for m in self._frozen:
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.norm(x)))


def build_transfer(cfg: NetConfig, backbone: Backbone, num_classes: int, norm: Normalize | None = None) -> TransferNet:
    """`norm` is the training data's statistics, which are the backbone's (`adapt_dataset`);
    None: an identity placeholder, for a saved transfer model whose weights are loaded next."""
    if cfg.frozen_layers > backbone.body_layers:
        raise UserError(f"invalid hyperparameter: frozen_layers={cfg.frozen_layers} "
                        f"(the backbone has {backbone.body_layers} layers)")
    net = _source_network(backbone.kind, backbone.arch, backbone.config, backbone.input_shape, backbone.source_classes)
    if backbone.state_dict is not None:
        net.load_state_dict(backbone.state_dict)
    body, features = _strip_classifier(_without_normalize(net))
    frozen: list[nn.Module] = []
    seen = 0
    for m in body.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            seen += 1
        if seen > cfg.frozen_layers:
            break
        if next(m.children(), None) is None:  # leaves only: containers span frozen and free parts
            frozen.append(m)
            for p in m.parameters():
                p.requires_grad_(False)
    if cfg.head_nodes:
        head = nn.Sequential(nn.Linear(features, cfg.head_nodes), activation(cfg.activation),
                             nn.Dropout(cfg.dropout), nn.Linear(cfg.head_nodes, num_classes))
    else:
        head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(features, num_classes))
    norm = norm if norm is not None else Normalize.placeholder(backbone.input_shape[0])
    return TransferNet(norm, body, head, frozen)


# --- images to the backbone's input ----------------------------------------------------------

def convert_images(x: np.ndarray, shape: tuple[int, int, int], chunk: int = 2048) -> np.ndarray:
    """Resize (N, C, H, W) uint8 images to `shape` and convert grey <-> colour, once, in chunks."""
    c, h, w = shape
    if x.shape[1:] == shape:
        return x
    out = np.empty((len(x), c, h, w), dtype=np.uint8)
    lum = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    for start in range(0, len(x), chunk):
        t = torch.from_numpy(np.ascontiguousarray(x[start:start + chunk])).float()
        if t.shape[1] == 3 and c == 1:
            t = (t * lum).sum(1, keepdim=True)
        elif t.shape[1] == 1 and c == 3:
            t = t.expand(-1, 3, -1, -1)
        elif t.shape[1] != c:
            raise UserError(f"cannot convert {t.shape[1]}-channel images to the backbone's {c} channels")
        if t.shape[2:] != (h, w):
            t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False,
                              antialias=t.shape[2] > h or t.shape[3] > w)
        out[start:start + chunk] = t.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def adapt_dataset(dataset: Dataset, backbone: Backbone) -> Dataset:
    """The dataset as the backbone sees it: its input size and channels, and its normalisation
    (the body was trained on inputs scaled that way)."""
    shape = backbone.input_shape
    return replace(
        dataset,
        train=Split(convert_images(dataset.train.x, shape), dataset.train.y),
        test=Split(convert_images(dataset.test.x, shape), dataset.test.y),
        norm=(backbone.mean, backbone.std),
    )
