"""The delivery queue against a real `mlflow server` behind a real HTTP gateway on 127.0.0.1 that
misbehaves on request: nothing listening (connection refused), connections reset, 503 answers,
and refusals (400, 403, 404, and the MLflow server's own 400). The queue waits out the first
three and delivers once the store is back; a refusal is given up at once, never sent again."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import io
import socket
import struct
import threading

import pytest

from search.tracking.delivery import Batch, DeliveryQueue, Failure, classify
from search.tracking.tracker import ChildRun, Tracker
from tests.chaos import MlflowServer, free_port, wait_for

pytestmark = pytest.mark.slow  # a real MLflow server starts once for the module (tens of seconds)

LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Gateway:
    """An HTTP gateway in front of `upstream`, as a reverse proxy or ingress would stand there.
    `mode`: "pass" forwards; "reset" accepts and resets the connection (RST) without a word;
    a number answers with that HTTP status, for the next `times` requests (then "pass");
    down() closes the listening socket (so nothing listens: connection refused), up() opens it
    again on the same port. `seen`: (path, what was done) of every request that arrived."""

    def __init__(self, upstream_port: int):
        self.upstream_port, self.port = upstream_port, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.mode: str | int = "pass"
        self.times = 0
        self.seen: list[tuple[str, str | int]] = []
        self.lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None

    def set(self, mode: str | int, times: int = 0) -> None:
        with self.lock:
            self.mode, self.times = mode, times

    def _take(self, path: str) -> str | int:
        with self.lock:
            mode = self.mode
            if self.times:
                self.times -= 1
                if not self.times:
                    self.mode = "pass"
            self.seen.append((path, mode))
            return mode

    def calls(self, path: str = LOG_BATCH) -> list[str | int]:
        with self.lock:
            return [mode for seen, mode in self.seen if seen.startswith(path)]

    def up(self) -> None:
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def handle_one_request(self) -> None:
                self.raw_requestline = self.rfile.readline(65537)
                if not self.raw_requestline or not self.parse_request():
                    self.close_connection = True
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mode = gateway._take(self.path)
                if mode == "reset":
                    # SO_LINGER 0: close() sends RST, as a crashed proxy or a dropped NAT entry does.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if isinstance(mode, int):
                    self._answer(mode, {"Content-Type": "text/html"}, f"<h1>{mode}</h1>".encode())
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", gateway.upstream_port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    self._answer(answer.status, {k: v for k, v in answer.getheaders()
                                                 if k.lower() not in HOP_BY_HOP}, answer.read())
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: dict, body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="gateway", daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A Tracker that reaches a real MLflow server through the gateway, with MLflow's own retries
    off as hpsearch's commands set them (search.run): the queue is what retries. The checks read
    the server directly (a third item: its MlflowClient), whatever the gateway does."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    gateway = Gateway(server.port)
    gateway.up()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        env.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            from mlflow.tracking import MlflowClient

            yield gateway, Tracker(gateway.uri, "delivery"), MlflowClient(server.uri)
        finally:
            gateway.down()
            server.stop()


def child_run(tracker: Tracker, name: str) -> ChildRun:
    parent = tracker.start_run(f"{name}-study", {}, {})
    return ChildRun(tracker.start_run(name, {}, {}, parent_id=parent), name)


def steps(server, child: ChildRun) -> list[int]:
    return sorted(m.step for m in server.get_metric_history(child.run_id, "val_accuracy"))


@contextlib.contextmanager
def queue_on(tracker: Tracker):
    stream = io.StringIO()
    queue = DeliveryQueue(tracker, retry_seconds=0.2, stream=stream)
    try:
        yield queue, stream
    finally:
        queue.stop()


def outage(gateway: Gateway, kind: str) -> None:
    if kind == "refused":
        gateway.down()
    else:
        gateway.set(kind if kind == "reset" else 503)


def recovery(gateway: Gateway, kind: str) -> None:
    if kind == "refused":
        gateway.up()
    gateway.set("pass")


@pytest.mark.parametrize("kind", ["refused", "reset", "503"])
def test_the_queue_waits_out_an_outage_and_delivers_once_the_store_is_back(store, kind):
    gateway, tracker, server = store
    child = child_run(tracker, f"outage-{kind}")
    with queue_on(tracker) as (queue, stream):
        queue.put(Batch(child, metrics=[("val_accuracy", 0.5, 1)]))
        assert queue.flush(timeout=30) and steps(server, child) == [1]
        before = len(gateway.calls())
        outage(gateway, kind)
        queue.put(Batch(child, metrics=[("val_accuracy", 0.6, 2)]))
        queue.put(Batch(child, metrics=[("val_accuracy", 0.7, 3)]))
        if kind == "refused":  # nothing listens, so nothing arrives to count: the queue just waits
            assert not queue.flush(timeout=2)
        else:
            wait_for(lambda: len(gateway.calls()) - before >= 3, 30, "the queue to try again")
        assert queue.pending() == 2 and steps(server, child) == [1]
        recovery(gateway, kind)
        assert queue.flush(timeout=60)
        assert steps(server, child) == [1, 2, 3] and not queue.undelivered  # each epoch once
    assert "tracking store unavailable" in stream.getvalue() and "tracking store back" in stream.getvalue()


@pytest.mark.parametrize("status", [400, 403, 404])
def test_a_refusal_is_given_up_at_once_and_the_queue_goes_on(store, status):
    gateway, tracker, server = store
    child = child_run(tracker, f"refused-{status}")
    before = len(gateway.calls())
    with queue_on(tracker) as (queue, stream):
        gateway.set(status, times=1)
        queue.put(Batch(child, metrics=[("val_accuracy", 0.5, 1)]))
        assert queue.flush(timeout=30)
        queue.put(Batch(child, metrics=[("val_accuracy", 0.6, 2)]))  # queued together, the two would go as one call
        assert queue.flush(timeout=30)
    assert gateway.calls()[before:] == [status, "pass"]  # the refused call was sent once, never again
    assert len(queue.undelivered) == 1 and steps(server, child) == [2]
    assert "unavailable" not in stream.getvalue()


def test_the_mlflow_servers_own_refusal_is_not_sent_again(store):
    """A param logged again with another value: the server itself answers 400 (INVALID_PARAMETER_VALUE)."""
    gateway, tracker, server = store
    child = child_run(tracker, "param-changed")
    before = len(gateway.calls())
    with queue_on(tracker) as (queue, _):
        queue.put(Batch(child, params={"lr": 0.1}))
        assert queue.flush(timeout=30)
        queue.put(Batch(child, params={"lr": 0.2}))
        assert queue.flush(timeout=30)
    assert gateway.calls()[before:] == ["pass", "pass"]
    assert len(queue.undelivered) == 1 and "INVALID_PARAMETER_VALUE" in queue.undelivered[0]
    assert server.get_run(child.run_id).data.params == {"lr": "0.1"}


def test_failures_are_classified_by_type_and_status_not_by_their_words():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INVALID_PARAMETER_VALUE,
        REQUEST_LIMIT_EXCEEDED,
        RESOURCE_DOES_NOT_EXIST,
        TEMPORARILY_UNAVAILABLE,
    )

    assert classify(MlflowException("busy", error_code=REQUEST_LIMIT_EXCEEDED)) is Failure.TRANSIENT  # 429
    assert classify(MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE)) is Failure.TRANSIENT
    assert classify(MlflowException("connection refused", error_code=RESOURCE_DOES_NOT_EXIST)) is Failure.REFUSED
    assert classify(MlflowException("timed out", error_code=INVALID_PARAMETER_VALUE)) is Failure.REFUSED
    assert classify(ValueError("Connection reset by peer")) is Failure.UNKNOWN
    try:  # MLflow's own wrapping of a dropped connection: an MlflowException (HTTP 500, whatever the
        # cause; here a 400 to show the cause decides) raised while handling the network's error
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as e:
            raise MlflowException(f"API request failed with exception {e}", error_code=INVALID_PARAMETER_VALUE)  # noqa: B904
    except MlflowException as wrapped:
        assert classify(wrapped) is Failure.TRANSIENT
