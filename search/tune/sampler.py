"""The sampler that proposes a study's configurations: Optuna's TPE with every choice spelled out,
seeing a trial that has reported but not finished (one paused at a rung, waiting to be promoted,
or one still training) as what it is so far: a trial stopped at the fidelity it reached.

Why: under pause-and-promote scheduling (search.tune.rungs) most trials of a search sit paused at a
rung, RUNNING in Optuna's terms, until the search ends. TPE's constant liar counts a RUNNING trial
as the worst possible, and its start-up counts only finished ones, so a search of paused trials
would be proposed at random, learning nothing from the rung scores the scheduler ranks by. Shown
as PRUNED with its intermediate values, a reported trial is ranked the way Optuna ranks a stopped
one (by how far it got, then how well it did): what the stop-type scheduler gives TPE when it
stops the same trial at the same rung. The store keeps the true state; only the sampler's view
changes. A trial that has reported nothing yet stays RUNNING (the constant liar keeps proposals
away from it).
"""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.tune.tpe_fast import use_vectorised_log_ndtr


class _ReportedAsStopped:
    """A study as the sampler sees it: RUNNING trials with intermediate values read as PRUNED."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        out = []
        for trial in self._study._get_trials(deepcopy=False, states=None, use_cache=False):
            if trial.state == TrialState.RUNNING and trial.intermediate_values:
                trial = copy.copy(trial)
                trial.state = TrialState.PRUNED
            if states is None or trial.state in states:
                out.append(copy.deepcopy(trial) if deepcopy else trial)
        return out

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)


class FidelityAwareTPE(optuna.samplers.TPESampler):
    """TPE over the study's reported trials at the fidelity each reached (see the module's
    docstring); otherwise Optuna's own TPESampler."""

    def infer_relative_search_space(self, study, trial):
        return super().infer_relative_search_space(_ReportedAsStopped(study), trial)

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(_ReportedAsStopped(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(_ReportedAsStopped(study), trial, param_name, param_distribution)


def make_sampler(name: str, seed: int, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    """"tpe" (the service's) or "random" (what benchmarks compare it with)."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name != "tpe":
        raise ValueError(f"unknown sampler {name!r}")
    # Optuna 5 changed TPESampler's defaults; every choice is spelled out. group=True lets the
    # multivariate model handle the conditional (define-by-run) parameters.
    use_vectorised_log_ndtr()  # proposals that stay cheap as trials accumulate (search.tune.tpe_fast)
    return FidelityAwareTPE(seed=seed, n_startup_trials=n_startup_trials, multivariate=True, group=True,
                            constant_liar=True)
