"""The end of a search leaves no core idle: trials still running share a node's freed CPUs."""

from __future__ import annotations

from search.tune.cores import Ledger
from search.tune.tuner import ledger_name, make_plan
from spaces.registry import get_study


def test_trials_keep_their_grant_until_the_last_trial_has_started():
    ledger = Ledger({"node-a": 8.0, "node-b": 4.0})
    for trial, node in (("t1", "node-a"), ("t2", "node-a"), ("t3", "node-a"), ("t4", "node-b")):
        ledger.start(trial, node, 2)
    assert ledger.threads("t1") == 2  # more trials may still come
    ledger.last_trial_started()
    ledger.finish("t2")
    ledger.finish("t3")
    assert ledger.threads("t1") == 8  # alone on its 8-CPU node
    assert ledger.threads("t4") == 4
    ledger.start("t5", "node-b", 2)
    assert ledger.threads("t4") == ledger.threads("t5") == 2  # two share node-b's four
    assert ledger.threads("unknown") == 1


def test_only_cpu_searches_with_trials_side_by_side_get_a_ledger(tmp_path):
    study = get_study("fashion_space")
    common = dict(cluster_gpus=0, samples=None, max_epochs=None, time_budget_min=None, seed=0)
    assert ledger_name(make_plan(study, cluster_cpus=2, gpus=0, **common), tmp_path) is None  # 1 trial x 2 threads
    assert ledger_name(make_plan(study, cluster_cpus=8, gpus=0, **common), tmp_path / "s1") == "hpsearch-cores-s1"
    assert ledger_name(make_plan(study, cluster_cpus=8, gpus=2, **{**common, "cluster_gpus": 2}), tmp_path) is None


def test_the_last_trial_takes_the_cores_the_others_freed(tmp_path):
    """A real search of 3 one-thread trials on 2 CPUs: the third starts when a slot frees, and
    once the other trial ends it trains on both cores. The first two end about together, so the
    tail must outlast the driver's delay in telling the ledger a trial ended (seconds on a loaded
    CI machine, where all four epochs of a third trial like the others once ran on one thread):
    the third is wider with smaller batches, and every trial has eight epochs."""
    import dataclasses

    import pytest

    from search.bench.common import local_ray, run_service, tracking_uri
    from spaces.fashion_space import GRID_WINNER
    from tests.test_train import toy_data

    pytest.importorskip("ray")
    base = get_study("fashion_space")
    settings = dataclasses.replace(base.settings, scheduler="fifo", cpus_per_trial=1)
    slow = {**GRID_WINNER, "filters_0": 64, "filters_1": 64, "batch_size": 32}
    study = dataclasses.replace(base, name="cores_test", settings=settings,
                                start_points=(GRID_WINNER, GRID_WINNER, slow))
    with local_ray(2):
        run = run_service(study, toy_data(n=800), tmp_path / "search", tracking_uri(tmp_path), cluster_cpus=2,
                          samples=3, max_epochs=8, seed=0)
    threads = {r.path: list(r.metrics_dataframe["threads"]) for r in run.results}
    assert sorted(len(t) for t in threads.values()) == [8, 8, 8]
    # two at a time, one core each; the third may start alone if the others are done by its first epoch
    assert sorted(t[0] for t in threads.values())[:2] == [1, 1]
    # the tail: the survivor takes the freed core
    assert max(max(t) for t in threads.values()) == 2, sorted(threads.values())
