"""cluster.yaml is checked the way `ray up` checks it: defaults filled in, then Ray's own schema."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.conftest import REPO


def ray_up_validate(config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_yaml_passes_rays_validation():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    ray_up_validate(config)
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["max_workers"] >= 1 and config["head_node_type"] == "head"


def test_the_validation_can_fail():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["max_wokers"] = 4  # a typo Ray must refuse
    with pytest.raises(Exception, match="max_wokers"):
        ray_up_validate(config)
