"""Optuna search distributions of a study's hyperparameters: a recorded value checked and coerced
against one, two widened into one, and a define-by-run space's distributions found by sampling
it. What the report (search.reporting.replay) and warm starts (search.tune.warm) share."""

from __future__ import annotations

from typing import Any


def contains(dist, value) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(coerce(dist, value))))
    except (ValueError, TypeError):
        return False


def coerce(dist, value):
    """`value` in the distribution's type: parquet gives 32.0 for an int column with gaps, numpy
    scalars for others, and a CSV (a scikit-learn grid's) gives "32", "0.01" or "True"."""
    import optuna

    if isinstance(dist, optuna.distributions.IntDistribution):
        number = float(value)
        return int(number) if number.is_integer() else number
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return float(value)
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return next((c for c in dist.choices if c == value),
                    next((c for c in dist.choices if str(c) == str(value)), value))
    return value


def widen(a, b):
    """One distribution covering two: a width's upper bound depends on the widths before it
    (spaces.blocks caps them to the cost cap), so trials of one study record different ones."""
    import optuna

    if type(a) is not type(b) or a == b:
        return a
    if isinstance(a, optuna.distributions.CategoricalDistribution):
        return optuna.distributions.CategoricalDistribution([*a.choices, *(c for c in b.choices if c not in a.choices)])
    if isinstance(a, optuna.distributions.IntDistribution):
        return optuna.distributions.IntDistribution(min(a.low, b.low), max(a.high, b.high), log=a.log,
                                                    step=a.step if a.step == b.step else 1)
    return optuna.distributions.FloatDistribution(min(a.low, b.low), max(a.high, b.high), log=a.log,
                                                  step=a.step if a.step == b.step else None)


SPACE_PROBES = 64  # random samples of a space: enough to meet every conditional parameter of ours


def space_distributions(define, ctx) -> dict[str, Any]:
    """Each parameter a define-by-run space asks for, with a distribution covering every value it
    can propose under `ctx` (its bounds vary with the cost cap and the choices before it)."""
    import optuna

    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    found: dict[str, Any] = {}
    for _ in range(SPACE_PROBES):
        trial = probe.ask()
        define(trial, ctx)
        for name, dist in trial.distributions.items():
            found[name] = widen(found[name], dist) if name in found else dist
    return found
