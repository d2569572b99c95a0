from __future__ import annotations

import pytest

from search.errors import UserError
from search.tuner import make_plan, make_scheduler, make_searcher
from spaces import get_study
from tests.test_train import toy_data


def plan(name="fashion_space", **kw):
    args = dict(cluster_cpus=2, cluster_gpus=0, gpus=0, samples=None, max_epochs=None, time_budget_min=None, seed=0)
    return make_plan(get_study(name), **{**args, **kw})


def test_cpu_plan_runs_one_trial_per_core_within_the_cap():
    p = plan()
    assert (p.concurrency, p.cpus_per_trial, p.gpus_per_trial) == (2, 1, 0.0)
    assert p.max_macs == 6_000_000 and (p.num_samples, p.max_epochs) == (20, 10)


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


def test_time_budget_in_seconds_and_asha_over_epochs():
    p = plan(time_budget_min=1.5, max_epochs=4)
    assert p.time_budget_s == 90.0
    scheduler = make_scheduler(get_study("fashion_space"), p)
    assert scheduler._max_t == 4 and scheduler._time_attr == "training_iteration"


def test_searcher_is_seeded_tpe_limited_to_the_concurrency():
    p = plan()
    searcher = make_searcher(get_study("fashion_space"), p, toy_data())
    assert searcher.max_concurrent == 2
    sampler = searcher.searcher._sampler
    assert type(sampler).__name__ == "TPESampler" and sampler._n_startup_trials == 6


def test_more_cpus_per_trial_than_the_cluster_has():
    import dataclasses

    study = get_study("fashion_space")
    greedy = dataclasses.replace(study, settings=dataclasses.replace(study.settings, cpus_per_trial=8))
    with pytest.raises(UserError, match="needs 8 CPUs per trial"):
        make_plan(greedy, cluster_cpus=2, cluster_gpus=0, gpus=0, samples=None, max_epochs=None,
                  time_budget_min=None, seed=0)


def test_grid_searcher_runs_each_point_once_and_survives_a_restore(tmp_path):
    from ray.tune.search import Searcher

    from search.tuner import GridSearcher

    points = get_study("fashion_grid").grid_points()[:3]
    searcher = GridSearcher(points, "val_accuracy", "max")
    assert searcher.suggest("a") == points[0]
    searcher.save(str(tmp_path / "state.json"))
    again = GridSearcher([], "val_accuracy", "max")
    again.restore(str(tmp_path / "state.json"))
    assert [again.suggest(t) for t in "bcd"] == [points[1], points[2], Searcher.FINISHED]
