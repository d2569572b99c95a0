"""A real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`, with
token authentication), a small search joined through `--address`, and trials on both nodes; a
driver without the token is refused."""

from __future__ import annotations

import json
import subprocess
import sys
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


def stranger(cluster: LocalCluster, home: Path, **env: str) -> subprocess.CompletedProcess:
    """A driver that can reach the cluster's port but does not hold its token: a home without
    ~/.ray/auth_token, and `env` (a token of its own, or no token mode at all)."""
    home.mkdir(exist_ok=True)
    base = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    code = ("import ray; ray.init(address=%r, include_dashboard=False, logging_level='ERROR'); "
            "print('joined', ray.get(ray.remote(lambda: 1).remote()))" % cluster.address)
    return subprocess.run([sys.executable, "-c", code], env={**base, "HOME": str(home), **env},
                          capture_output=True, text=True, timeout=120)


def test_search_through_address_spreads_trials_over_both_nodes(tmp_path, data_root):
    cluster = LocalCluster(tmp_path / "cluster", nodes=2, cpus_per_node=1)
    try:
        cluster.start()
        node_ids = set(cluster.alive_nodes())
        assert len(node_ids) == 2
        assert not cluster.address.startswith("127.")  # the head announces the machine's address
        # Refused by the cluster, not by the driver's own check: it asks for no authentication at all.
        # (A wrong token is refused the same way; each try costs 20 s of Ray's retries.)
        refused = stranger(cluster, tmp_path / "stranger", RAY_AUTH_MODE="disabled")
        assert refused.returncode != 0 and "joined" not in refused.stdout, refused.stdout
        assert "token-auth" in refused.stderr and "Failed to connect" in refused.stderr, refused.stderr[-3000:]
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
    # A trial paused at a rung may be promoted on the other node (from its checkpoint on the shared
    # results folder); every epoch ran on one of the cluster's nodes.
    assert len(ran_on) == SAMPLES and all(n and n <= node_ids for n in ran_on.values()), ran_on
    used = set().union(*ran_on.values())
    assert used == node_ids, f"trials ran on {used}, the cluster had {node_ids}"
    assert len(pd.read_parquet(study / "trials.parquet")) == SAMPLES
    assert (study / "best.yaml").is_file()
