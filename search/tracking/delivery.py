"""Getting every trial's results into MLflow although the store may be down: live calls wait in
a queue that a background thread drains and retries (so training never blocks on MLflow), and at
the end of a search `reconcile` fills in from Tune's own results whatever never arrived, so an
outage, or a driver killed with calls still queued, loses nothing and duplicates nothing.

A queue that falls behind catches up by merging: the batches (metrics, params, tags, the end) of
one run that wait together go out as one MLflow call. On a tracking server each call costs tens
of milliseconds, and a trial otherwise needs six (`python -m search.bench scale`)."""

from __future__ import annotations

import collections
import dataclasses
import enum
import itertools
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from search.results.records import TrialRecord, finite
from search.tracking.tracker import TRIAL_TAG, ChildRun, Tracker, epoch_metrics


class Failure(enum.Enum):
    """What a failed tracking call says about the store, which decides whether it is sent again."""

    TRANSIENT = "transient"  # unreachable, reset, timed out or overloaded (429, 5xx): wait until it is back
    REFUSED = "refused"  # the store answered no to this call (another 4xx): the same call gets the same answer
    UNKNOWN = "unknown"  # anything else: a few more tries, then counted as undelivered


# MLflow retries these HTTP statuses itself (mlflow.utils.request_utils); 501 means "never".
TRANSIENT_STATUS = (408, 429)


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what it was raised from or while handling: MLflow wraps a dropped connection
    in an MlflowException of its own, which says HTTP 500 whatever happened."""
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _loaded(module: str, *names: str) -> tuple[type, ...]:
    """Exception types of `module` where it is imported: a library never imported raised nothing,
    and importing MLflow in the delivery thread would stall it for seconds."""
    found = sys.modules.get(module)
    return tuple(getattr(found, name) for name in names) if found is not None else ()


def classify(error: BaseException) -> Failure:
    """By exception type and HTTP status, never by the message's words: first whether the network
    failed (requests', urllib3's and Python's connection and timeout errors, and requests'
    RetryError: the retried statuses, 429 and 5xx, ran out), then the status MLflow reports."""
    network = (ConnectionError, TimeoutError,
               *_loaded("requests.exceptions", "ConnectionError", "Timeout", "RetryError", "ChunkedEncodingError"),
               *_loaded("urllib3.exceptions", "ProtocolError", "TimeoutError", "MaxRetryError"))
    chain = _causes(error)
    if any(isinstance(e, network) for e in chain):
        return Failure.TRANSIENT
    for e in chain:
        if isinstance(e, _loaded("mlflow.exceptions", "MlflowException")):
            status = e.get_http_status_code()
            if status in TRANSIENT_STATUS or (status >= 500 and status != 501):
                return Failure.TRANSIENT
            return Failure.REFUSED if 400 <= status < 500 else Failure.UNKNOWN
    return Failure.UNKNOWN


# MLflow's log_batch takes at most 1,000 metrics, 100 params and 100 tags; a merge stays well inside.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 900, 100, 90
MERGE_SCAN = 2000  # queued calls looked through for a run's later batches


@dataclass
class RunCall:
    """A call that concerns only `child`'s run (creating it): batches of other runs may pass it."""

    child: ChildRun
    call: Callable[[], None]

    def __call__(self) -> None:
        self.call()


@dataclass
class Batch:
    """Metrics ((key, value, step)), params and tags of one run, and optionally its end
    ("FINISHED" or "FAILED") after them."""

    child: ChildRun
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    end: str | None = None

    def merged(self, later: "Batch") -> "Batch | None":
        """This batch followed by `later` as one, or None when that would not fit one call."""
        if self.end is not None or len(self.metrics) + len(later.metrics) > MAX_METRICS or \
                len(self.params) + len(later.params) > MAX_PARAMS or len(self.tags) + len(later.tags) > MAX_TAGS:
            return None
        return dataclasses.replace(self, metrics=self.metrics + later.metrics, params={**self.params, **later.params},
                                   tags={**self.tags, **later.tags}, end=later.end)

    def send(self, tracker: Tracker) -> None:
        if not self.child.run_id:
            raise RuntimeError(f"{self.child.name} has no MLflow run")  # its creation was refused
        if self.metrics or self.params or self.tags:
            tracker.log_batch(self.child.run_id, self.metrics, self.params, self.tags)
        if self.end is not None:
            tracker.end_run(self.child.run_id, failed=self.end == "FAILED")


class DeliveryQueue:
    """Tracking calls delivered in order by a background thread. While the store is
    unreachable or overloaded the calls wait and are retried, so training never blocks on MLflow;
    a call the store refuses (a 4xx) is counted as undelivered at once, and one that fails for
    another reason after a few tries (`classify`)."""

    def __init__(self, tracker: Tracker, retry_seconds: float = 2.0, stream=None):
        self.tracker = tracker
        self.retry_seconds = retry_seconds
        self.stream = stream or sys.stderr
        self.ops: collections.deque[Callable[[], None]] = collections.deque()
        self.cond = threading.Condition()
        self.undelivered: list[str] = []
        self.outage_since: float | None = None
        self.stopped = False
        self.thread = threading.Thread(target=self._drain, name="mlflow-delivery", daemon=True)
        self.thread.start()

    def put(self, op: Callable[[], None]) -> None:
        with self.cond:
            self.ops.append(op)
            self.cond.notify()

    def _take(self, merge: bool) -> tuple[list, Callable[[], None]]:
        """The call at the head of the queue, and what to send for it: a Batch merged with the
        later batches of its run that fit one call (calls of other runs may sit between; a call
        that could concern any run ends the search). Called with the lock held."""
        head = self.ops[0]
        if not isinstance(head, Batch):
            return [head], head
        group, merged = [head], head
        for op in itertools.islice(self.ops, 1, MERGE_SCAN if merge else 1):
            child = getattr(op, "child", None)
            if child is None or (child is head.child and not isinstance(op, Batch)):
                break
            if child is not head.child:
                continue
            together = merged.merged(op)
            if together is None:
                break
            group.append(op)
            merged = together
        return group, lambda: merged.send(self.tracker)

    def delivered(self, op) -> None:
        """Called once `op` has reached the store (the scale benchmark times deliveries by it)."""

    def _drain(self) -> None:
        failures = 0
        while True:
            with self.cond:
                while not self.ops and not self.stopped:
                    self.cond.wait()
                if self.stopped:
                    return
                # After a failure the head goes alone: a refused merge must not take others with it.
                group, send = self._take(merge=failures == 0)
            try:
                send()
            except Exception as e:  # noqa: BLE001 - any failure is retried or counted below
                failures += 1
                failure = classify(e)
                if failure is Failure.TRANSIENT or (failure is Failure.UNKNOWN and failures < 3):
                    if failure is Failure.TRANSIENT and self.outage_since is None:
                        self.outage_since = time.monotonic()
                        print(f"tracking store unavailable ({type(e).__name__}); training goes on and "
                              "results are kept until it is back", file=self.stream, flush=True)
                    time.sleep(self.retry_seconds)
                    continue
                self.undelivered.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            else:
                if self.outage_since is not None:
                    print(f"tracking store back after {time.monotonic() - self.outage_since:.0f} s; "
                          "delivering what was kept", file=self.stream, flush=True)
                    self.outage_since = None
                for op in group:
                    self.delivered(op)
            failures = 0
            with self.cond:
                # Only this thread removes calls, and put() only appends: the group is still queued.
                if len(group) == 1:
                    self.ops.popleft()
                else:
                    sent = {id(op) for op in group}
                    self.ops = collections.deque(op for op in self.ops if id(op) not in sent)
                self.cond.notify_all()

    def pending(self) -> int:
        with self.cond:
            return len(self.ops)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is delivered; False if `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.ops:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 1.0))
        return True

    def stop(self, timeout: float = 60.0) -> int:
        """Stop delivering and drop what is still queued: `reconcile` writes it from Tune's results
        next, and a call sent after that would write it twice. A call in flight is waited for
        (MLflow's HTTP timeout bounds it). Returns the number of calls dropped."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"a tracking call did not return within {timeout:g} s")
        with self.cond:
            dropped = len(self.ops)
            self.ops.clear()
        return dropped


def reconcile(tracker: Tracker, parent_id: str, records: list[TrialRecord]) -> int:
    """Make MLflow hold exactly one child run per trial with every epoch Tune recorded.
    Returns the number of metric points that had to be filled in."""
    children = tracker.child_runs(parent_id)
    filled = 0
    for record in records:
        child = children.get(record.trial_id)
        if child is None:
            run_id = tracker.start_run(record.name, record.config, {TRIAL_TAG: record.trial_id}, parent_id=parent_id)
            child = ChildRun(run_id, record.name)
        before = filled
        for row in record.history:
            step = int(row.get("epoch", 0))
            if step and step not in child.steps:
                metrics = finite(epoch_metrics(row))
                tracker.log_metrics(child.run_id, metrics, step=step)
                filled += 1
        if filled == before and child.ended and child.status == record.status:
            # Complete already: its end and its final tags travel in one call (Batch). Rewriting
            # them would cost a resumed 1,000-trial study 2,000 calls (python -m search.bench scale).
            continue
        tags = {"hpsearch.status": record.status, "hpsearch.epochs": str(record.epochs),
                "hpsearch.epochs_seen": f"{record.epochs_seen:g}"}
        if record.numerics:
            tags["hpsearch.numerics"] = record.numerics
        if record.error:
            tags["hpsearch.error"] = record.error[-4000:]
        tracker.set_tags(child.run_id, tags)
        tracker.end_run(child.run_id, failed=record.status == "failed")
    return filled
