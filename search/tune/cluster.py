"""Ray: start a local instance or join a cluster, and check what the user asks of it."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from search.util.credentials import withheld
from trainables.errors import UserError


@dataclass(frozen=True)
class Cluster:
    cpus: float
    gpus: float
    max_node_cpus: float
    started_here: bool


def check_local_resources(cpus: int | None, gpus: int | None) -> tuple[int, int]:
    """Without --address the search runs on this machine: it cannot use more than it has."""
    import torch

    have_cpus, have_gpus = os.cpu_count() or 1, torch.cuda.device_count()
    if cpus is not None and cpus > have_cpus:
        raise UserError(f"--cpus {cpus} but this machine has {have_cpus}; pass --cpus {have_cpus} or less")
    if gpus is not None and gpus > have_gpus:
        raise UserError(f"--gpus {gpus} but this machine has {have_gpus} GPU(s); "
                        f"pass --gpus {have_gpus} or join a cluster with --address")
    return have_cpus, have_gpus


def check_reachable(address: str) -> None:
    """ray.init keeps retrying an address nobody answers on; a plain TCP connect fails fast."""
    if address == "auto":
        return  # Ray finds the local cluster itself and says at once if there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        raise UserError(f"--address {address!r} is not HOST:PORT or 'auto'")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"no Ray cluster answers at {address} ({e.strerror or type(e).__name__}); "
                        "check the head's address, or drop --address to run locally") from None


def start_ray(address: str | None, cpus: int | None, gpus: int | None) -> Cluster:
    import ray

    from search.util.progress import Verbosity, verbosity

    verbose = verbosity() >= Verbosity.VERBOSE  # --verbose: Ray's own log lines and the workers' output too
    quiet = dict(include_dashboard=False, logging_level=logging.INFO if verbose else logging.ERROR,
                 log_to_driver=verbose)
    if address:
        check_reachable(address)
        try:
            with withheld():
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot join the Ray cluster at {address!r} ({str(e).splitlines()[0]}); "
                            "check the address, or drop --address to run locally") from None
    else:
        have_cpus, have_gpus = check_local_resources(cpus, gpus)
        with withheld():  # the processes Ray starts here (and the workers they spawn) get no MLflow password
            ray.init(num_cpus=cpus or have_cpus, num_gpus=have_gpus if gpus is None else gpus, **quiet)
    total = ray.cluster_resources()
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    cluster = Cluster(total.get("CPU", 0), total.get("GPU", 0), max(node_cpus or [0]), started_here=not address)
    if address:
        if gpus is not None and gpus > cluster.gpus:
            ray.shutdown()
            raise UserError(f"--gpus {gpus} but the cluster has {cluster.gpus:g} GPU(s)")
        if cpus is not None and cpus > cluster.cpus:
            ray.shutdown()
            raise UserError(f"--cpus {cpus} but the cluster has {cluster.cpus:g} CPU(s)")
    return cluster
