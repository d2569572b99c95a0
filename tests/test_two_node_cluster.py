"""A real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`, with
token authentication), a small search joined through `--address`, and trials on both nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_module
from tests.raynodes import LocalCluster

pytestmark = pytest.mark.slow
SAMPLES = 4


def epoch_nodes(study: Path) -> dict[str, set[str]]:
    """Trial folder -> the node ids its epochs ran on, from Tune's own per-trial result.json."""
    nodes = {}
    for result in (study / "tune").glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        nodes[result.parent.name] = {row["node_id"] for row in rows if "node_id" in row}
    return nodes


def test_search_through_address_spreads_trials_over_both_nodes(tmp_path, data_root):
    cluster = LocalCluster(tmp_path / "cluster", nodes=2, cpus_per_node=1)
    try:
        cluster.start()
        node_ids = set(cluster.alive_nodes())
        assert len(node_ids) == 2
        assert not cluster.address.startswith("127.")  # the head announces the machine's address
        proc = run_module("search.run", "fashion_space", "--address", cluster.address, "--smoke",
                          "--samples", str(SAMPLES), "--max-epochs", "1", "--name", "two-nodes",
                          "--results-dir", str(tmp_path / "results"), "--data-dir", str(data_root),
                          env=cluster.env, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # Each node has one CPU, so two trials run at a time, one per node.
        assert "2 at a time" in proc.stdout
    finally:
        cluster.stop()
    study = tmp_path / "results" / "two-nodes"
    ran_on = epoch_nodes(study)
    assert len(ran_on) == SAMPLES and all(len(n) == 1 for n in ran_on.values()), ran_on
    used = set().union(*ran_on.values())
    assert used == node_ids, f"trials ran on {used}, the cluster had {node_ids}"
    assert len(pd.read_parquet(study / "trials.parquet")) == SAMPLES
    assert (study / "best.yaml").is_file()
