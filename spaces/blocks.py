"""Pieces the study modules build their define-by-run spaces from, so that every space caps
network cost, names its parameters and searches augmentation the same way."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from spaces.study import SpaceContext
from trainables.model import NetConfig, model_macs


def largest(low: int, high: int, fits: Callable[[int], bool]) -> int:
    """Largest value in [low, high] with fits(value) (fits is monotone), or low if none fits."""
    if not fits(low):
        return low
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def numbered(prefix: str, values: Sequence[int]) -> dict[str, int]:
    return {f"{prefix}_{i}": v for i, v in enumerate(values)}


def suggest_capped_widths(trial: Any, p: dict[str, Any], ctx: SpaceContext,
                          layers: Sequence[tuple[str, Sequence[tuple[int, int]]]]) -> None:
    """Suggest per-layer widths into `p`, in order: `layers` is [(prefix, [(low, high) per layer])].
    Each width's upper bound leaves room in the cost cap for the smallest possible rest of the
    network, so every sample builds and stays within the cap."""
    def fits(candidate: dict[str, Any]) -> bool:
        full = dict(candidate)
        for prefix, ranges in layers:
            for i, (low, _) in enumerate(ranges):
                full.setdefault(f"{prefix}_{i}", low)
        return model_macs(NetConfig.from_flat(full), ctx.input_shape, ctx.num_classes) <= ctx.max_macs

    for prefix, ranges in layers:
        for i, (low, high) in enumerate(ranges):
            key = f"{prefix}_{i}"
            if ctx.max_macs is not None:
                high = largest(low, high, lambda v, key=key: fits({**p, key: v}))
            p[key] = trial.suggest_int(key, low, high, log=True)


def suggest_training(trial: Any, optimizers: Sequence[str], lr: tuple[float, float],
                     batch_sizes: Sequence[int], weight_decay: tuple[float, float] = (1e-6, 1e-3)) -> dict[str, Any]:
    p: dict[str, Any] = {
        "optimizer": trial.suggest_categorical("optimizer", list(optimizers)),
        "lr": trial.suggest_float("lr", *lr, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *weight_decay, log=True),
        "batch_size": trial.suggest_categorical("batch_size", list(batch_sizes)),
    }
    if p["optimizer"] == "sgd":
        p["momentum"] = trial.suggest_float("momentum", 0.5, 0.99)
    return p


def suggest_mlp(trial: Any, p: dict[str, Any], ctx: SpaceContext, layers: tuple[int, int],
                nodes: tuple[int, int], activations: Sequence[str], dropout: tuple[float, float]) -> None:
    p["family"] = "mlp"
    p["dense_layers"] = trial.suggest_int("dense_layers", *layers)
    p["activation"] = trial.suggest_categorical("activation", list(activations))
    p["dropout"] = trial.suggest_float("dropout", *dropout)
    suggest_capped_widths(trial, p, ctx, [("dense_nodes", [nodes] * p["dense_layers"])])


def suggest_small_cnn(
    trial: Any,
    p: dict[str, Any],
    ctx: SpaceContext,
    conv_dropout: tuple[float, float],
    dropout: tuple[float, float],
    dense: tuple[int, int],
    norm_after_activation: bool = False,
) -> None:
    """1-3 conv blocks of 8-128 filters (3x3 or 5x5, max pooling, ReLU, batch norm on/off, 2-D
    dropout) and one dense layer: the CNN family of the small-image studies."""
    p.update({
        "family": "cnn",
        "conv_layers": trial.suggest_int("conv_layers", 1, 3),
        "kernel_size": trial.suggest_categorical("kernel_size", [3, 5]),
        "pool_type": "max", "pool_size": 2, "activation": "relu",
        "batch_norm": trial.suggest_categorical("batch_norm", [True, False]),
        "norm_after_activation": norm_after_activation,
        "conv_dropout": trial.suggest_float("conv_dropout", *conv_dropout),
        "dropout": trial.suggest_float("dropout", *dropout),
        "dense_layers": 1,
    })
    suggest_capped_widths(trial, p, ctx, [("filters", [(8, 128)] * p["conv_layers"]), ("dense_nodes", [dense])])


def suggest_augmentation(trial: Any, rotate: float = 0.0, crop_scale: float = 1.0, translate: float = 0.0,
                         flip: bool = False, cutmix: bool = False) -> dict[str, float]:
    """Each transform the study allows gets a searched strength and a searched probability."""
    p: dict[str, float] = {}
    if rotate:
        p["aug_rotate"] = trial.suggest_float("aug_rotate", 1.0, rotate)
        p["aug_rotate_p"] = trial.suggest_float("aug_rotate_p", 0.0, 1.0)
    if crop_scale < 1.0:
        p["aug_crop_scale"] = trial.suggest_float("aug_crop_scale", crop_scale, 1.0)
        p["aug_crop_p"] = trial.suggest_float("aug_crop_p", 0.0, 1.0)
    if translate:
        p["aug_translate"] = trial.suggest_float("aug_translate", 0.01, translate)
        p["aug_translate_p"] = trial.suggest_float("aug_translate_p", 0.0, 1.0)
    if flip:
        p["aug_flip_p"] = trial.suggest_float("aug_flip_p", 0.0, 0.5)
    if cutmix:
        p["aug_cutmix_p"] = trial.suggest_float("aug_cutmix_p", 0.0, 0.5)
    return p
