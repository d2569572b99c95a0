"""The check every study passes before it is searched, hpsearch's own (tests/test_spaces.py runs
it on each) and a user's (`check_study`): every configuration it proposes, with the random and
the TPE sampler, builds, trains a step with its augmentation, and stays within its CPU cost cap;
its start points too; a random sample also trains and evaluates under fp32 channels-last and
bf16 autocast; and without the cap, its largest networks still build. A problem is a UserError
naming the study, the configuration and what failed."""

from __future__ import annotations

import functools
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
import torch
from torch.nn import functional as F

from spaces.study import SpaceContext, Study
from trainables.augment import augment
from trainables.errors import UserError
from trainables.model import NetConfig, build_model, make_optimizer, model_macs
from trainables.numerics import Accel
from trainables.transfer import Backbone

SAMPLES = 25  # configurations drawn per sampler
SAMPLERS = ("random", "tpe")
NUMERICS = (Accel(None, True), Accel(torch.bfloat16, True))  # fp32 and bf16 autocast, channels-last both


@functools.cache
def example_backbone() -> Backbone:
    """A small trained-network stand-in for transfer studies: an hpsearch CNN saved as model.pt."""
    from spaces.mnist_space import REFERENCE_POINTS
    from trainables.transfer import load_backbone

    params = REFERENCE_POINTS[2]
    model = build_model(NetConfig.from_flat(params), (1, 28, 28), 7)
    path = Path(tempfile.mkdtemp(prefix="hpsearch-backbone-")) / "model.pt"
    torch.save({"state_dict": model.state_dict(), "config": params, "input_shape": (1, 28, 28),
                "classes": [str(d) for d in range(7)], "mean": (0.13,), "std": (0.31,), "space": "mnist_space"}, path)
    return load_backbone(path)


def context(study: Study, max_macs: int | None) -> tuple[SpaceContext, Backbone | None]:
    """The study's example data shape (a transfer study's: the example backbone's) and `max_macs`."""
    s = study.settings
    backbone = example_backbone() if s.needs_backbone else None
    shape = backbone.input_shape if backbone else s.example_input
    return SpaceContext(shape, s.example_classes, max_macs, backbone.body_layers if backbone else 0), backbone


def cpu_cap(study: Study) -> int | None:
    """The study's CPU cost cap in multiply-adds per image, or None."""
    cap = study.settings.max_mmacs_cpu
    return None if cap is None else int(cap * 1e6)


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "tpe":
        with warnings.catch_warnings():  # `group` is experimental in Optuna; the search uses it too
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True, group=True)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {kind!r}")


def sampled_configs(study: Study, max_macs: int | None, sampler: optuna.samplers.BaseSampler,
                    n: int = SAMPLES) -> Iterator[dict[str, Any]]:
    """`n` configurations of a define-by-run space, as a search proposes them."""
    ctx, _ = context(study, max_macs)
    opt_study = optuna.create_study(direction="maximize", sampler=sampler)
    for i in range(n):
        trial = opt_study.ask()
        try:
            constants = study.define(trial, ctx) or {}
        except Exception as e:  # noqa: BLE001 - the study's own code: reported with what it was given
            raise UserError(f"study {study.name}: its space fails when sampled (sample {i + 1}, "
                            f"{type(sampler).__name__}): {type(e).__name__}: {e}; fix its define function") from e
        opt_study.tell(trial, float(i % 7))  # any score: lets TPE leave its random start-up
        yield {**trial.params, **constants}


def configs_of(study: Study, max_macs: int | None, sampler: optuna.samplers.BaseSampler) -> list[dict[str, Any]]:
    """A grid's points, or SAMPLES configurations of a define-by-run space."""
    if study.grid is not None:
        return study.grid_points()
    return list(sampled_configs(study, max_macs, sampler))


def train_step(cfg: NetConfig, ctx: SpaceContext, backbone: Backbone | None, accel: Accel = Accel()) -> None:
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
    if not torch.isfinite(loss):
        raise ValueError(f"the loss of one step is {loss.item()}")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("its weights are not float32 after a step")
    model.eval()
    with torch.no_grad(), accel.autocast(x.device):
        if not torch.isfinite(model(accel.layout(x)).float()).all():
            raise ValueError("its evaluation pass gives non-finite outputs")


def _each(study: Study, configs: list[dict[str, Any]], what: str, cap: int | None,
          run: Callable[[NetConfig, SpaceContext, Backbone | None], None]) -> int:
    """`run` on every configuration, each checked against `cap` first; the first failure becomes
    one UserError naming the study, the configuration and the problem."""
    ctx, backbone = context(study, cap)
    for params in configs:
        try:
            cfg = NetConfig.from_flat(params)
        except UserError as e:
            raise UserError(f"study {study.name}: {what} {params} is not a valid configuration: {e}") from None
        if cap is not None:
            macs = model_macs(cfg, ctx.input_shape, ctx.num_classes, backbone)
            if macs > cap:
                raise UserError(f"study {study.name}: {what} {params} needs {macs / 1e6:.2f} million multiply-adds "
                                f"per image, over its CPU cap of {cap / 1e6:g}; cap its widths "
                                "(spaces.blocks.suggest_capped_widths) or raise max_mmacs_cpu")
        try:
            run(cfg, ctx, backbone)
        except Exception as e:  # noqa: BLE001 - any failure of the study's network is the study's problem
            raise UserError(f"study {study.name}: {what} {params} fails: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return len(configs)


def check_samples(study: Study, sampler: str) -> int:
    """Every configuration `sampler` proposes (a grid: every point) builds, trains a step and fits
    the CPU cap. Returns how many were checked."""
    cap = cpu_cap(study)
    configs = configs_of(study, cap, make_sampler(sampler, seed=1))
    if not configs:
        raise UserError(f"study {study.name} proposes no configuration; give its grid points or a define function")
    return _each(study, configs, f"the {sampler} sampler's configuration", cap, train_step)


def check_numerics(study: Study, accel: Accel) -> int:
    """A random sample of the uncapped space (every layer type it has) trains and evaluates under `accel`."""
    configs = configs_of(study, None, make_sampler("random", seed=3))[:SAMPLES]
    return _each(study, configs, f"under {accel.name}, configuration", None,
                 lambda cfg, ctx, backbone: train_step(cfg, ctx, backbone, accel))


def check_start_points(study: Study) -> int:
    """The known-good configurations tried first are valid, within the cap, and train."""
    return _each(study, [dict(p) for p in study.start_points], "start point", cpu_cap(study), train_step)


def check_uncapped(study: Study) -> int:
    """Without the cost cap (on a GPU) the space's largest networks still build and run forward."""
    def forward(cfg: NetConfig, ctx: SpaceContext, backbone: Backbone | None) -> None:
        build_model(cfg, ctx.input_shape, ctx.num_classes, backbone)(torch.zeros(2, *ctx.input_shape))

    configs = configs_of(study, None, make_sampler("random", seed=2))[:20]
    return _each(study, configs, "uncapped configuration", None, forward)


def check_study(study: Study, say: Callable[[str], None] = lambda line: None) -> None:
    """Everything the test suite checks of hpsearch's own studies, on `study`; `say` gets a line
    per part passed. Raises UserError at the first problem."""
    if not isinstance(study, Study):
        raise UserError(f"not a study: {type(study).__name__}; pass a spaces.study.Study")
    for sampler in SAMPLERS:
        say(f"{check_samples(study, sampler)} configurations of the {sampler} sampler build, train a step "
            "and fit the CPU cost cap")
    for accel in NUMERICS:
        say(f"{check_numerics(study, accel)} configurations train and evaluate under {accel.name}")
    if study.start_points:
        say(f"{check_start_points(study)} start points are valid, fit the cap and train")
    say(f"{check_uncapped(study)} uncapped configurations build and run")
