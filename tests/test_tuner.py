from __future__ import annotations

import optuna
import pytest

from search.results.optuna_store import Store
from search.tune.tuner import make_plan, make_scheduler, make_searcher
from spaces.registry import get_study
from tests.test_train import toy_data
from trainables.errors import UserError


def plan(name="fashion_space", **kw):
    args = dict(cluster_cpus=2, cluster_gpus=0, gpus=0, samples=None, max_epochs=None, time_budget_min=None, seed=0)
    return make_plan(get_study(name), **{**args, **kw})


def test_cpu_plan_gives_each_trial_two_threads_within_the_cap():
    from search.tune.tuner import CPU_THREADS_PER_TRIAL

    p = plan()
    assert (p.concurrency, p.cpus_per_trial, p.gpus_per_trial) == (1, CPU_THREADS_PER_TRIAL, 0.0) == (1, 2, 0.0)
    assert p.max_macs == 6_000_000 and (p.num_samples, p.max_epochs) == (20, 10)
    assert (plan(cluster_cpus=16).concurrency, plan(cluster_cpus=16).cpus_per_trial) == (8, 2)
    assert (plan(cluster_cpus=1).concurrency, plan(cluster_cpus=1).cpus_per_trial) == (1, 1)  # --cpus 1


def test_gpu_plan_packs_fractional_trials_and_lifts_the_cap():
    p = plan(cluster_cpus=32, cluster_gpus=4, gpus=4)
    assert (p.concurrency, p.gpus_per_trial, p.cpus_per_trial) == (16, 0.25, 2)
    assert p.max_macs is None


def test_concurrency_never_exceeds_the_trials():
    assert plan(samples=1).concurrency == 1


def test_grid_runs_every_point_by_default_and_no_early_stopping():
    p = plan("fashion_grid")
    assert p.num_samples == 96
    from ray.tune.schedulers import FIFOScheduler

    assert isinstance(make_scheduler(get_study("fashion_grid"), p), FIFOScheduler)


def test_searcher_is_seeded_tpe_limited_to_the_concurrency(tmp_path):
    searcher = make_searcher(get_study("fashion_space"), plan(cluster_cpus=4), toy_data(),
                             Store.in_study_folder(tmp_path, "s"))
    assert searcher.max_concurrent == 2
    assert type(searcher).__name__ == "PacedSearch"  # pause-and-promote: paused trials are not running
    sampler = searcher.searcher._sampler
    # TPE that sees a reported trial at the fidelity it reached (search/tune/sampler.py)
    assert isinstance(sampler, optuna.samplers.TPESampler) and type(sampler).__name__ == "FidelityAwareTPE"
    assert sampler._n_startup_trials == 6


def test_more_cpus_per_trial_than_the_cluster_has():
    import dataclasses

    study = get_study("fashion_space")
    greedy = dataclasses.replace(study, settings=dataclasses.replace(study.settings, cpus_per_trial=8))
    with pytest.raises(UserError, match="needs 8 CPUs per trial"):
        make_plan(greedy, cluster_cpus=2, cluster_gpus=0, gpus=0, samples=None, max_epochs=None,
                  time_budget_min=None, seed=0)


def test_cpu_trials_fit_on_one_node():
    import dataclasses

    common = dict(cluster_gpus=0, gpus=0, samples=None, max_epochs=None, time_budget_min=None, seed=0)
    plan = make_plan(get_study("fashion_space"), cluster_cpus=2, node_cpus=1, **common)  # two 1-CPU nodes
    assert (plan.cpus_per_trial, plan.concurrency) == (1, 2)
    study = get_study("fashion_space")
    pinned = dataclasses.replace(study, settings=dataclasses.replace(study.settings, cpus_per_trial=2))
    with pytest.raises(UserError, match="largest node has 1"):
        make_plan(pinned, cluster_cpus=4, node_cpus=1, **common)


def test_grid_searcher_runs_each_point_once_and_survives_a_restore(tmp_path):
    from ray.tune.search import Searcher

    from search.tune.tuner import GridSearcher

    points = get_study("fashion_grid").grid_points()[:3]
    searcher = GridSearcher(points, "val_accuracy", "max")
    assert searcher.suggest("a") == points[0]
    searcher.save(str(tmp_path / "state.json"))
    again = GridSearcher([], "val_accuracy", "max")
    again.restore(str(tmp_path / "state.json"))
    assert [again.suggest(t) for t in "bcd"] == [points[1], points[2], Searcher.FINISHED]


def test_asha_compares_epochs_seen_with_a_quarter_epoch_first_rung():
    import dataclasses

    from search.tune.tuner import TIME_ATTR, asha_rungs

    promoting = get_study("fashion_space")
    stopping = dataclasses.replace(promoting, settings=dataclasses.replace(promoting.settings, scheduler="stopping"))
    p = plan(time_budget_min=1.5, max_epochs=10)
    assert p.time_budget_s == 90.0
    scheduler = make_scheduler(stopping, p)
    assert scheduler._max_t == 10 and scheduler._time_attr == TIME_ATTR == "epochs_seen"
    rungs = asha_rungs(stopping, p)
    assert rungs[0] == stopping.settings.grace_period < 1  # a poor trial is judged inside its first epoch
    ray_rungs = sorted({m for bracket in scheduler._brackets for m, _ in bracket._rungs})
    assert rungs == [m for m in ray_rungs if m < 10]
    promoter = make_scheduler(promoting, p)  # the same rungs, paused at rather than stopped at
    assert promoter.max_t == 10 and promoter.time_attr == TIME_ATTR
    assert asha_rungs(promoting, p) == rungs == [r.milestone for r in promoter.rule.rungs[0]]


def test_trials_report_only_at_rungs_inside_an_epoch():
    import dataclasses

    from search.tune.tuner import asha_rungs, trial_settings

    study = get_study("fashion_space")
    odd = dataclasses.replace(study, settings=dataclasses.replace(study.settings, grace_period=0.5,
                                                                  reduction_factor=3, brackets=2))
    p = plan(max_epochs=9)
    assert asha_rungs(odd, p) == [0.5, 1.5, 4.5]
    assert trial_settings(p, None, (0.25, 1.0, 4.0)).report_points == (0.25,)
    assert trial_settings(p, None, tuple(asha_rungs(odd, p))).report_points == (0.5, 1.5, 4.5)
    assert asha_rungs(get_study("fashion_grid"), plan("fashion_grid")) == []  # FIFO: no rungs


def test_precision_travels_in_the_plan_not_the_hyperparameters(tmp_path):
    p = plan(precision="fp32")
    assert p.precision == "fp32"
    searcher = make_searcher(get_study("fashion_space"), p, toy_data(), Store.in_study_folder(tmp_path, "s"))
    assert "precision" not in str(searcher.searcher._space)


def test_the_studys_cpu_time_budget_applies_only_to_its_own_budget():
    import dataclasses

    study = get_study("fashion_space")
    timed = dataclasses.replace(study, settings=dataclasses.replace(study.settings, time_budget_min_cpu=6.5))
    common = dict(cluster_cpus=2, cluster_gpus=0, gpus=0, seed=0)
    assert make_plan(timed, samples=None, max_epochs=None, time_budget_min=None, **common).time_budget_s == 390.0
    assert make_plan(timed, samples=None, max_epochs=None, time_budget_min=2, **common).time_budget_s == 120.0
    assert make_plan(timed, samples=50, max_epochs=None, time_budget_min=None, **common).time_budget_s is None
    assert make_plan(timed, samples=None, max_epochs=3, time_budget_min=None, **common).time_budget_s is None
    gpu = dict(common, cluster_gpus=1, gpus=1)
    assert make_plan(timed, samples=None, max_epochs=None, time_budget_min=None, **gpu).time_budget_s is None
