"""The shared model builder: a typed network configuration and the network it describes.

Three families share one configuration type: ``cnn`` (conv blocks of one or more convolutions,
optional batch norm, pooling and 2-D dropout, then a dense head; VGG-style nets are blocks of
two 3x3 convs), ``mlp`` (flatten, then dense layers) and ``transfer`` (a trained network's body
with a new head; see trainables/transfer.py). A trial's hyperparameters travel as a flat dict
(Ray, Optuna, MLflow params, YAML and the trials table all use the same flat keys such as
``filters_1``); ``NetConfig.from_flat`` turns that dict into a validated dataclass on the first
line of the trainable, and ``to_flat`` goes back. The geometry helpers here are also what the
search spaces use, so a space can only propose networks this builder can construct.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import nn

from trainables import augment
from trainables.augment import AugmentConfig
from trainables.errors import UserError

if TYPE_CHECKING:
    from trainables.transfer import Backbone

FAMILIES = ("cnn", "mlp", "transfer")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid")
POOL_TYPES = ("max", "avg")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
KERNEL_SIZES = (3, 5, 7)
MAX_CONV_LAYERS = 4
MAX_DENSE_LAYERS = 4

# Flat keys each family must have, and those it may have (with the dataclass default otherwise).
# Per-layer keys (filters_i, dense_nodes_i, kernel_size_i) are handled separately.
TRAINING_KEYS = ({"optimizer", "lr", "weight_decay", "batch_size"}, {"momentum", "lr_schedule", "shuffle"})
FAMILY_KEYS = {
    "cnn": ({"conv_layers", "kernel_size", "pool_type", "pool_size", "activation", "batch_norm", "dropout",
             "dense_layers"}, {"convs_per_block", "norm_after_activation", "conv_dropout"}),
    "mlp": ({"dense_layers", "activation", "dropout"}, set()),
    "transfer": ({"frozen_layers", "head_nodes", "dropout", "lr_body"}, {"activation"}),
}
_CASTS: dict[str, Any] = {"int": int, "float": float, "str": str}


@dataclass(frozen=True)
class NetConfig:
    """Hyperparameters of one trial. Ranges are checked here so a bad YAML names the bad value."""

    optimizer: str
    lr: float
    weight_decay: float
    batch_size: int
    family: str = "cnn"
    momentum: float = 0.9
    # "cosine" decays the rate to zero over the run's epochs; "constant" is the classic protocol.
    lr_schedule: str = "constant"
    shuffle: bool = True  # reshuffle the training images every epoch (off: one fixed order)
    activation: str = "relu"
    dropout: float = 0.0  # between dense layers
    conv_layers: int = 0  # conv blocks
    filters: tuple[int, ...] = ()
    kernel_size: int = 3
    block_kernels: tuple[int, ...] = ()  # per-block kernel sizes (kernel_size_i); empty: all kernel_size
    convs_per_block: int = 1
    pool_type: str = "max"
    pool_size: int = 2
    batch_norm: bool = False
    norm_after_activation: bool = False  # batch norm after the activation instead of before it
    conv_dropout: float = 0.0  # Dropout2d at the end of each conv block
    dense_layers: int = 0
    dense_nodes: tuple[int, ...] = ()
    frozen_layers: int = 0  # transfer: leading conv/linear layers of the body kept fixed
    head_nodes: int = 0  # transfer: hidden units of the new head (0: a linear head)
    lr_body: float = 0.0  # transfer: learning rate of the unfrozen body layers
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise UserError(f"invalid hyperparameter: {what}")

        need(self.family in FAMILIES, f"family={self.family!r} (one of {FAMILIES})")
        if self.family == "cnn":
            need(1 <= self.conv_layers <= MAX_CONV_LAYERS, f"conv_layers={self.conv_layers} (1-{MAX_CONV_LAYERS})")
            need(len(self.filters) == self.conv_layers,
                 f"need filters_0..filters_{self.conv_layers - 1}, got {len(self.filters)}")
            for i, f in enumerate(self.filters):
                need(1 <= f <= 1024, f"filters_{i}={f} (1-1024)")
            need(self.kernel_size in KERNEL_SIZES, f"kernel_size={self.kernel_size} (one of {KERNEL_SIZES})")
            need(not self.block_kernels or len(self.block_kernels) == self.conv_layers,
                 f"need kernel_size_0..kernel_size_{self.conv_layers - 1} or none, got {len(self.block_kernels)}")
            for i, k in enumerate(self.block_kernels):
                need(k in KERNEL_SIZES, f"kernel_size_{i}={k} (one of {KERNEL_SIZES})")
            need(1 <= self.convs_per_block <= 3, f"convs_per_block={self.convs_per_block} (1-3)")
            need(self.pool_type in POOL_TYPES, f"pool_type={self.pool_type!r} (one of {POOL_TYPES})")
            need(self.pool_size in (2, 3), f"pool_size={self.pool_size} (2 or 3)")
            need(0.0 <= self.conv_dropout < 1.0, f"conv_dropout={self.conv_dropout} (0 <= conv_dropout < 1)")
        if self.family in ("cnn", "mlp"):
            low = 1 if self.family == "mlp" else 0
            need(low <= self.dense_layers <= MAX_DENSE_LAYERS,
                 f"dense_layers={self.dense_layers} ({low}-{MAX_DENSE_LAYERS})")
            need(len(self.dense_nodes) == self.dense_layers,
                 f"need dense_nodes_0..dense_nodes_{self.dense_layers - 1}")
            for i, n in enumerate(self.dense_nodes):
                need(1 <= n <= 8192, f"dense_nodes_{i}={n} (1-8192)")
        if self.family == "transfer":
            need(self.frozen_layers >= 0, f"frozen_layers={self.frozen_layers} (0 or more)")
            need(0 <= self.head_nodes <= 8192, f"head_nodes={self.head_nodes} (0-8192)")
            need(0.0 <= self.lr_body <= 10.0, f"lr_body={self.lr_body} (0 <= lr_body <= 10)")
        need(self.activation in ACTIVATIONS, f"activation={self.activation!r} (one of {ACTIVATIONS})")
        need(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} (0 <= dropout < 1)")
        need(self.optimizer in OPTIMIZERS, f"optimizer={self.optimizer!r} (one of {OPTIMIZERS})")
        need(0.0 < self.lr <= 10.0, f"lr={self.lr} (0 < lr <= 10)")
        need(0.0 <= self.weight_decay < 1.0, f"weight_decay={self.weight_decay} (0 <= wd < 1)")
        # A batch of one trains nothing: batch norm cannot use it, and the loop skips it.
        need(2 <= self.batch_size <= 65536, f"batch_size={self.batch_size} (2-65536)")
        need(0.0 <= self.momentum < 1.0, f"momentum={self.momentum} (0 <= momentum < 1)")
        need(self.lr_schedule in LR_SCHEDULES, f"lr_schedule={self.lr_schedule!r} (one of {LR_SCHEDULES})")

    def kernel(self, block: int) -> int:
        return self.block_kernels[block] if self.block_kernels else self.kernel_size

    @classmethod
    def from_flat(cls, params: Mapping[str, Any]) -> "NetConfig":
        """Build from flat keys; unknown, missing or misplaced keys are user errors naming the key."""
        p = dict(params)
        family = str(p.pop("family", "cnn"))
        if family not in FAMILY_KEYS:
            raise UserError(f"invalid hyperparameter: family={family!r} (one of {FAMILIES})")
        required, optional = FAMILY_KEYS[family]
        required, optional = required | TRAINING_KEYS[0], optional | TRAINING_KEYS[1]
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {"family": family, "augment": augment.from_flat(p)}
        try:
            for key in sorted(required | optional):
                if key in required or key in p:
                    raw = p.pop(key)
                    values[key] = _as_bool(raw) if types[key] == "bool" else _CASTS[types[key]](raw)
            for name, prefix, count in (("filters", "filters", "conv_layers"),
                                        ("dense_nodes", "dense_nodes", "dense_layers")):
                if count in values:
                    values[name] = tuple(int(p.pop(f"{prefix}_{i}")) for i in range(int(values[count])))
            if family == "cnn" and "kernel_size_0" in p:
                values["block_kernels"] = tuple(int(p.pop(f"kernel_size_{i}")) for i in range(values["conv_layers"]))
        except KeyError as e:
            raise UserError(f"missing hyperparameter {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise UserError(f"bad hyperparameter value: {e}") from None
        if p:
            raise UserError(f"unknown hyperparameter(s) for a {family} network: {', '.join(sorted(p))}")
        return cls(**values)

    def to_flat(self) -> dict[str, Any]:
        """The flat keys of this configuration's family (what ``from_flat`` reads back)."""
        required, optional = FAMILY_KEYS[self.family]
        out: dict[str, Any] = {"family": self.family}
        for key in sorted(required | optional | TRAINING_KEYS[0] | TRAINING_KEYS[1]):
            out[key] = getattr(self, key)
        if self.family in ("cnn", "mlp"):
            out.update({f"dense_nodes_{i}": v for i, v in enumerate(self.dense_nodes)})
        if self.family == "cnn":
            out.update({f"filters_{i}": v for i, v in enumerate(self.filters)})
            out.update({f"kernel_size_{i}": v for i, v in enumerate(self.block_kernels)})
        out.update(augment.to_flat(self.augment))
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


def feature_shape(cfg: NetConfig, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(channels, height, width) after the conv stack ('same' padding, floor pooling)."""
    c, h, w = input_shape
    if cfg.family != "cnn":
        return c, h, w
    for pooled in pooled_sizes(min(h, w), cfg.conv_layers, cfg.pool_size):
        if pooled:
            h, w = h // cfg.pool_size, w // cfg.pool_size
    return cfg.filters[-1], h, w


def conv_macs(c_in: int, c_out: int, kernel: int, h: int, w: int) -> int:
    return c_in * c_out * kernel * kernel * h * w


def model_macs(cfg: NetConfig, input_shape: tuple[int, int, int], num_classes: int,
               backbone: "Backbone | None" = None) -> int:
    """Multiply-adds of one forward pass for one image (convs and linear layers)."""
    if cfg.family == "transfer":
        if backbone is None:
            raise UserError("a transfer network needs its backbone", option="weights")
        width = backbone.features
        head = width * cfg.head_nodes + cfg.head_nodes * num_classes if cfg.head_nodes else width * num_classes
        return backbone.body_macs + head
    c, h, w = input_shape
    total = 0
    if cfg.family == "cnn":
        for block, (filters, pooled) in enumerate(zip(cfg.filters, pooled_sizes(min(h, w), cfg.conv_layers,
                                                                                  cfg.pool_size))):
            for _ in range(cfg.convs_per_block):
                total += conv_macs(c, filters, cfg.kernel(block), h, w)
                c = filters
            if pooled:
                h, w = h // cfg.pool_size, w // cfg.pool_size
    width = c * h * w
    for nodes in cfg.dense_nodes:
        total += width * nodes
        width = nodes
    return total + width * num_classes


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs counted from the conv and linear layers a forward pass actually runs (for networks
    whose cost has no formula here, such as torchvision backbones)."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        total += output.numel() * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]

    def linear_hook(module, inputs, output):
        nonlocal total
        total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


def activation(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1), "elu": nn.ELU,
        "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    }[name]()


class Normalize(nn.Module):
    """Every network's first layer: ``(x / full_scale - mean) / std`` per channel, so a network
    (and the model.pt saved from it) takes raw input: uint8 pixel values 0-255 as floats (full
    scale 255; mean and std on the [0, 1] scale), or tabular features as they are (full scale 1).

    The statistics are buffers, so they travel in the state dict and loading a model.pt restores
    them. The arithmetic is elementwise in the input's float32 (autocast lowers only the layers
    after it) and keeps a channels-last input channels-last."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], full_scale: float = 1.0):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels, std {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("full_scale", torch.tensor(float(full_scale)))

    @classmethod
    def placeholder(cls, channels: int) -> "Normalize":
        """The identity, for a network whose saved weights (and statistics) are loaded next."""
        return cls((0.0,) * channels, (1.0,) * channels)

    def raw_mean(self) -> torch.Tensor:
        """The per-channel mean in input units (what a normalised zero is): (1, C, 1, 1)."""
        return self.mean * self.full_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.std.dtype)
        return x * (1.0 / (self.full_scale * self.std)) - self.mean / self.std

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[1]}, full_scale={self.full_scale.item():g}"


def build_model(cfg: NetConfig, input_shape: tuple[int, int, int], num_classes: int,
                backbone: "Backbone | None" = None, norm: Normalize | None = None) -> nn.Module:
    """The network `cfg` describes, taking raw input: its first layer is `norm` (the training
    data's statistics), or an identity placeholder when saved weights are loaded next (they
    carry the statistics)."""
    if cfg.family == "transfer":
        from trainables.transfer import build_transfer  # the transfer module builds on this one

        if backbone is None:
            raise UserError("a transfer network needs its backbone", option="weights")
        return build_transfer(cfg, backbone, num_classes, norm)
    c, h, w = input_shape
    pool_cls = nn.MaxPool2d if cfg.pool_type == "max" else nn.AvgPool2d
    layers: list[nn.Module] = [norm if norm is not None else Normalize.placeholder(c)]
    if cfg.family == "cnn":
        for block, (filters, pooled) in enumerate(zip(cfg.filters, pooled_sizes(min(h, w), cfg.conv_layers,
                                                                                  cfg.pool_size))):
            for _ in range(cfg.convs_per_block):
                k = cfg.kernel(block)
                layers.append(nn.Conv2d(c, filters, k, padding=k // 2,
                                        bias=not (cfg.batch_norm and not cfg.norm_after_activation)))
                norm = [nn.BatchNorm2d(filters)] if cfg.batch_norm else []
                act = [activation(cfg.activation)]
                layers += act + norm if cfg.norm_after_activation else norm + act
                c = filters
            if pooled:
                layers.append(pool_cls(cfg.pool_size))
            if cfg.conv_dropout > 0:
                layers.append(nn.Dropout2d(cfg.conv_dropout))
    layers.append(nn.Flatten())
    fc, fh, fw = feature_shape(cfg, input_shape)
    width = fc * fh * fw
    for nodes in cfg.dense_nodes:
        layers += [nn.Linear(width, nodes), activation(cfg.activation), nn.Dropout(cfg.dropout)]
        width = nodes
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def lr_factor(cfg: NetConfig, step: int, total_steps: int) -> float:
    """The schedule's multiplier of each base rate at a global optimizer step. Stateless, so a
    resumed run needs no scheduler state."""
    if cfg.lr_schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def make_optimizer(cfg: NetConfig, model: nn.Module) -> torch.optim.Optimizer:
    """One parameter group per base rate (``base_lr``; the loop scales it by ``lr_factor``):
    a transfer network's body learns at ``lr_body``, everything else at ``lr``."""
    if cfg.family == "transfer":
        body = [p for p in model.body.parameters() if p.requires_grad]
        groups = [{"params": list(model.head.parameters()), "base_lr": cfg.lr}]
        if body and cfg.lr_body > 0:
            groups.append({"params": body, "base_lr": cfg.lr_body})
    else:
        groups = [{"params": list(model.parameters()), "base_lr": cfg.lr}]
    for group in groups:
        group["lr"] = group["base_lr"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def upgrade_state_dict(state: Mapping[str, torch.Tensor], family: str, mean: Sequence[float],
                       std: Sequence[float], full_scale: float) -> dict[str, torch.Tensor]:
    """A state dict saved before networks normalised their own input (model.pt kept mean and std
    beside the weights) as today's network of `family` expects it: the statistics become the
    `Normalize` layer's buffers, and a cnn/mlp's layers move one place on. Today's state dicts
    are returned as they are."""
    if any(key.endswith("full_scale") for key in state):
        return dict(state)
    norm = Normalize(mean, std, full_scale).state_dict()
    if family == "transfer":
        return {**{f"norm.{k}": v for k, v in norm.items()}, **state}
    shifted = {}
    for key, value in state.items():
        index, rest = key.split(".", 1)
        shifted[f"{int(index) + 1}.{rest}"] = value
    return {**{f"0.{k}": v for k, v in norm.items()}, **shifted}
