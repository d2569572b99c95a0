"""A study's trials as a finished Optuna study, and the importances Optuna computes from it: what
the report's parallel-coordinates and importance figures stand on. Read from the study's own
Optuna store (search.tune.searcher), where TPE recorded each trial with its search distributions; a
study without one (a grid, or one run before the store) is replayed from its trials table, each
distribution recovered by asking the study's own space again."""

from __future__ import annotations

import warnings
from typing import Any

from search.results.folder import StudyResults
from search.tune.distributions import coerce, contains, widen


def distributions(results: StudyResults, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Each hyperparameter's search distribution. A define-by-run space is replayed with each
    trial's values (optuna's FixedTrial records what was asked: ranges, log scales, choices);
    a grid, or a space that cannot be replayed, gets categorical distributions over the values
    that were tried, which is what a grid is."""
    import optuna

    found: dict[str, Any] = {}
    study = _study(results.space)
    if study is not None and study.define is not None:
        from spaces.study import SpaceContext

        # No cost cap: the capped upper bounds depend on the cluster; the uncapped space holds every value.
        # The frozen-layer range of a transfer space depends on its backbone: the most any trial froze.
        frozen = max((int(p.get("frozen_layers", 0)) for p in trials), default=0)
        ctx = SpaceContext(study.settings.example_input, study.settings.example_classes, None, frozen)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for params in trials:
                    fixed = optuna.trial.FixedTrial(params)
                    study.define(fixed, ctx)
                    for name, dist in fixed.distributions.items():
                        found.setdefault(name, dist)
            if all(contains(found[k], v) for params in trials for k, v in params.items() if k in found):
                return found
        except Exception:  # noqa: BLE001 - a space changed since the study ran: fall back below
            pass
        found = {}
    for name in sorted({k for params in trials for k in params}):
        values = {params[name] for params in trials if name in params}
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() for v in values):
            values = {int(v) for v in values}  # a width column with gaps reads back as 32.0
        values = sorted(values, key=lambda v: (str(type(v)), v))
        found[name] = optuna.distributions.CategoricalDistribution(values)
    return found


def _study(space: str):
    from spaces.registry import get_study
    from trainables.errors import UserError

    try:
        return get_study(space)
    except UserError:
        return None


def stored_trials(results: StudyResults) -> list | None:
    """This study's own scored trials from its Optuna store (trials a warm start brought in are
    the earlier studies'), or None when it has no store."""
    from optuna.trial import TrialState

    from search.results.optuna_store import Store

    try:
        store = Store.of_folder(results.folder)
        if not store.exists():
            return None
        trials = store.load().get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - a database server that is gone: the trials table still tells
        return None
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            and "best_score" in t.user_attrs and "warm_start_from" not in t.user_attrs]


def optuna_study(results: StudyResults):
    """The study's trials as a finished Optuna study (value: each trial's best score)."""
    import optuna

    stored = stored_trials(results)
    if stored:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize" if results.mode == "max" else "minimize",
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        dists: dict[str, Any] = {}
        for t in stored:
            for name, dist in t.distributions.items():
                dists[name] = widen(dists[name], dist) if name in dists else dist
            study.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                      value=float(t.user_attrs["best_score"])))
        return study, dists
    scored = results.scored()
    trials = [results.params(row) for _, row in scored.iterrows()]
    dists = distributions(results, trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if results.mode == "max" else "minimize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for params, value in zip(trials, scored[results.metric]):
        known = {k: coerce(dists[k], v) for k, v in params.items() if k in dists}
        study.add_trial(optuna.trial.create_trial(params=known, distributions={k: dists[k] for k in known},
                                                  value=float(value)))
    return study, dists


def searched(dists: dict[str, Any]) -> list[str]:
    return [name for name, dist in dists.items() if not dist.single()]


def importances(results: StudyResults) -> dict[str, float]:
    """Optuna's default evaluator, PED-ANOVA: needs no scikit-learn and, unlike fANOVA, also
    rates conditional parameters (a layer's width that exists only in deeper networks)."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    study, dists = optuna_study(results)
    params = searched(dists)
    if len(study.trials) < 2 or not params:
        return {}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer than 5 trials above the quantile": shown in the caption instead
        return get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), params=params)
