"""The shared model builder: a typed CNN configuration and the network it describes.

A trial's hyperparameters travel as a flat dict (Ray, Optuna, MLflow params, YAML and the
trials table all use the same flat keys such as ``filters_1``); ``CNNConfig.from_flat`` turns
that dict into a validated dataclass on the first line of the trainable, and ``to_flat`` goes
back. The geometry helpers here are also what the search spaces use, so a space can only
propose networks this builder can construct.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from search.errors import UserError

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid")
POOL_TYPES = ("max", "avg")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
KERNEL_SIZES = (3, 5, 7)
MAX_CONV_LAYERS = 4
MAX_DENSE_LAYERS = 2


@dataclass(frozen=True)
class CNNConfig:
    """Hyperparameters of one trial. Ranges are checked here so a bad YAML names the bad value."""

    conv_layers: int
    filters: tuple[int, ...]
    kernel_size: int
    pool_type: str
    pool_size: int
    activation: str
    batch_norm: bool
    dropout: float
    dense_layers: int
    dense_nodes: tuple[int, ...]
    optimizer: str
    lr: float
    weight_decay: float
    batch_size: int
    momentum: float = 0.9
    # "cosine" decays the rate to zero over the run's epochs; "constant" is the classic protocol.
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise UserError(f"invalid hyperparameter: {what}")

        need(1 <= self.conv_layers <= MAX_CONV_LAYERS, f"conv_layers={self.conv_layers} (1-{MAX_CONV_LAYERS})")
        need(len(self.filters) == self.conv_layers, f"need filters_0..filters_{self.conv_layers - 1}, got {len(self.filters)}")
        for i, f in enumerate(self.filters):
            need(1 <= f <= 1024, f"filters_{i}={f} (1-1024)")
        need(self.kernel_size in KERNEL_SIZES, f"kernel_size={self.kernel_size} (one of {KERNEL_SIZES})")
        need(self.pool_type in POOL_TYPES, f"pool_type={self.pool_type!r} (one of {POOL_TYPES})")
        need(self.pool_size in (2, 3), f"pool_size={self.pool_size} (2 or 3)")
        need(self.activation in ACTIVATIONS, f"activation={self.activation!r} (one of {ACTIVATIONS})")
        need(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} (0 <= dropout < 1)")
        need(1 <= self.dense_layers <= MAX_DENSE_LAYERS, f"dense_layers={self.dense_layers} (1-{MAX_DENSE_LAYERS})")
        need(len(self.dense_nodes) == self.dense_layers, f"need dense_nodes_0..dense_nodes_{self.dense_layers - 1}")
        for i, n in enumerate(self.dense_nodes):
            need(1 <= n <= 8192, f"dense_nodes_{i}={n} (1-8192)")
        need(self.optimizer in OPTIMIZERS, f"optimizer={self.optimizer!r} (one of {OPTIMIZERS})")
        need(0.0 < self.lr <= 10.0, f"lr={self.lr} (0 < lr <= 10)")
        need(0.0 <= self.weight_decay < 1.0, f"weight_decay={self.weight_decay} (0 <= wd < 1)")
        need(1 <= self.batch_size <= 65536, f"batch_size={self.batch_size} (1-65536)")
        need(0.0 <= self.momentum < 1.0, f"momentum={self.momentum} (0 <= momentum < 1)")
        need(self.lr_schedule in LR_SCHEDULES, f"lr_schedule={self.lr_schedule!r} (one of {LR_SCHEDULES})")

    @classmethod
    def from_flat(cls, params: Mapping[str, Any]) -> "CNNConfig":
        """Build from flat keys; unknown or missing keys are user errors naming the key."""
        p = dict(params)
        try:
            conv_layers = int(p.pop("conv_layers"))
            dense_layers = int(p.pop("dense_layers"))
            filters = tuple(int(p.pop(f"filters_{i}")) for i in range(conv_layers))
            dense_nodes = tuple(int(p.pop(f"dense_nodes_{i}")) for i in range(dense_layers))
            scalars = {f.name: p.pop(f.name) for f in dataclasses.fields(cls)
                       if f.name not in ("conv_layers", "dense_layers", "filters", "dense_nodes")
                       and (f.name in p or f.default is dataclasses.MISSING)}
        except KeyError as e:
            raise UserError(f"missing hyperparameter {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise UserError(f"bad hyperparameter value: {e}") from None
        if p:
            raise UserError(f"unknown hyperparameter(s): {', '.join(sorted(p))}")
        try:
            return cls(
                conv_layers=conv_layers, filters=filters, dense_layers=dense_layers, dense_nodes=dense_nodes,
                kernel_size=int(scalars["kernel_size"]), pool_type=str(scalars["pool_type"]),
                pool_size=int(scalars["pool_size"]), activation=str(scalars["activation"]),
                batch_norm=_as_bool(scalars["batch_norm"]), dropout=float(scalars["dropout"]),
                optimizer=str(scalars["optimizer"]), lr=float(scalars["lr"]),
                weight_decay=float(scalars["weight_decay"]), batch_size=int(scalars["batch_size"]),
                **({"momentum": float(scalars["momentum"])} if "momentum" in scalars else {}),
                **({"lr_schedule": str(scalars["lr_schedule"])} if "lr_schedule" in scalars else {}),
            )
        except (TypeError, ValueError) as e:
            raise UserError(f"bad hyperparameter value: {e}") from None

    def to_flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("filters", "dense_nodes"):
                out.update({f"{f.name}_{i}": v for i, v in enumerate(value)})
            else:
                out[f.name] = value
        return out


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value in (0, 1):
        return bool(value)
    raise ValueError(f"expected true/false, got {value!r}")


def pooled_sizes(size: int, conv_layers: int, pool_size: int) -> list[bool]:
    """Which conv blocks are followed by pooling: every block while the feature map can
    still be pooled. The space and the builder share this, so no configuration can pool
    a map below 1x1."""
    pools = []
    for _ in range(conv_layers):
        can = size // pool_size >= 1
        pools.append(can)
        if can:
            size //= pool_size
    return pools


def feature_shape(cfg: CNNConfig, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(channels, height, width) after the conv stack ('same' padding, floor pooling)."""
    _, h, w = input_shape
    for pooled in pooled_sizes(min(h, w), cfg.conv_layers, cfg.pool_size):
        if pooled:
            h, w = h // cfg.pool_size, w // cfg.pool_size
    return cfg.filters[-1], h, w


def conv_macs(c_in: int, c_out: int, kernel: int, h: int, w: int) -> int:
    return c_in * c_out * kernel * kernel * h * w


def model_macs(cfg: CNNConfig, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """Multiply-adds of one forward pass for one image (convs and linear layers)."""
    c, h, w = input_shape
    total = 0
    for filters, pooled in zip(cfg.filters, pooled_sizes(min(h, w), cfg.conv_layers, cfg.pool_size)):
        total += conv_macs(c, filters, cfg.kernel_size, h, w)
        c = filters
        if pooled:
            h, w = h // cfg.pool_size, w // cfg.pool_size
    width = c * h * w
    for nodes in cfg.dense_nodes:
        total += width * nodes
        width = nodes
    return total + width * num_classes


def _activation(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1), "elu": nn.ELU,
        "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    }[name]()


def build_model(cfg: CNNConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    pool_cls = nn.MaxPool2d if cfg.pool_type == "max" else nn.AvgPool2d
    layers: list[nn.Module] = []
    for filters, pooled in zip(cfg.filters, pooled_sizes(min(h, w), cfg.conv_layers, cfg.pool_size)):
        layers.append(nn.Conv2d(c, filters, cfg.kernel_size, padding=cfg.kernel_size // 2, bias=not cfg.batch_norm))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm2d(filters))
        layers.append(_activation(cfg.activation))
        if pooled:
            layers.append(pool_cls(cfg.pool_size))
        c = filters
    layers.append(nn.Flatten())
    _, fh, fw = feature_shape(cfg, input_shape)
    width = c * fh * fw
    for nodes in cfg.dense_nodes:
        layers += [nn.Linear(width, nodes), _activation(cfg.activation), nn.Dropout(cfg.dropout)]
        width = nodes
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def learning_rate(cfg: CNNConfig, step: int, total_steps: int) -> float:
    """The rate at a global optimizer step. Stateless, so a resumed run needs no scheduler state."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def make_optimizer(cfg: CNNConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=True)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
