"""Idle cores at the end of a search: once no trial is left to start, the trials still running on
a node share all of its CPUs (as torch threads) instead of leaving the freed ones idle.

Ray grants each trial a fixed number of CPUs for its whole life, so the sharing is advisory: a
small actor (`CoreLedger`, no CPUs of its own) counts the trials running on each node, the
driver tells it when the searcher has started its last trial, and each trial asks it, at the
start of every epoch, how many threads it may use. Before the tail, the answer is the grant.
"""

from __future__ import annotations

import ray
from ray import tune


class Ledger:
    def __init__(self, node_cpus: dict[str, float]):
        self.node_cpus = dict(node_cpus)
        self.running: dict[str, tuple[str, int]] = {}  # trial id -> (node id, granted CPUs)
        self.tail = False

    def start(self, trial_id: str, node_id: str, granted: int) -> None:
        self.running[trial_id] = (node_id, granted)

    def finish(self, trial_id: str) -> None:
        self.running.pop(trial_id, None)

    def last_trial_started(self) -> None:
        self.tail = True

    def threads(self, trial_id: str) -> int:
        node_id, granted = self.running.get(trial_id, ("", 1))
        if not self.tail or node_id not in self.node_cpus:
            return granted
        sharing = [g for n, g in self.running.values() if n == node_id]
        return max(granted, int(self.node_cpus[node_id] // max(len(sharing), 1)))


CoreLedger = ray.remote(num_cpus=0)(Ledger)
# A named actor lives while its creator holds a handle; the driver holds them here until it ends.
_LEDGERS: dict[str, ray.actor.ActorHandle] = {}


def start_ledger(name: str) -> ray.actor.ActorHandle:
    """The study's ledger, named so trials can find it; the CPUs of every node Ray knows."""
    nodes = {n["NodeID"]: float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")}
    old = _LEDGERS.pop(name, None)
    if old is not None:  # an earlier search of this name in this driver: start afresh
        ray.kill(old)
    _LEDGERS[name] = CoreLedger.options(name=name).remote(nodes)
    return _LEDGERS[name]


class CoreSharing(tune.Callback):
    """Driver side: says when the searcher has started its last trial, and drops trials that
    ended (also those whose worker died before saying so itself)."""

    def __init__(self, ledger_name: str, total: int):
        self.ledger_name, self.total = ledger_name, total

    def __getstate__(self) -> dict:
        return {"ledger_name": self.ledger_name, "total": self.total}

    def _ledger(self):
        try:
            return ray.get_actor(self.ledger_name)
        except ValueError:
            return None  # a resumed search whose ledger was not started: sharing is off

    def on_trial_start(self, iteration, trials, trial, **info):
        ledger = self._ledger()
        if ledger is not None and len(trials) >= self.total:
            ledger.last_trial_started.remote()

    def on_trial_complete(self, iteration, trials, trial, **info):
        ledger = self._ledger()
        if ledger is not None:
            ledger.finish.remote(trial.trial_id)

    on_trial_error = on_trial_complete


class TrialCores:
    """Trial side: register on start, then the thread count to use before each epoch."""

    def __init__(self, ledger_name: str | None, trial_id: str, granted: int):
        self.trial_id, self.granted = trial_id, granted
        self.ledger = None
        if ledger_name:
            try:
                self.ledger = ray.get_actor(ledger_name)
                self.ledger.start.remote(trial_id, ray.get_runtime_context().get_node_id(), granted)
            except ValueError:
                self.ledger = None

    def threads(self) -> int:
        if self.ledger is None:
            return self.granted
        try:
            return int(ray.get(self.ledger.threads.remote(self.trial_id), timeout=5))
        except Exception:  # noqa: BLE001 - advisory only: a slow or gone ledger leaves the grant
            return self.granted
