"""A real `mlflow server` on 127.0.0.1 (SQLite backend, local artifacts) that can be stopped and
started again on its port: what the scale benchmark delivers to, and what the recovery, auth and
server tests run searches against (tests/chaos.py re-exports it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self, folder: Path, admin_password: str | None = None, workers: int = 1, jobs: bool = False):
        """`admin_password`: run MLflow's basic-auth app (as the cluster files do), user `admin`.
        `workers`: the server's worker processes (MLflow's --workers). `jobs`: MLflow 3's job
        runner (eight consumer processes, ~240 MB each, for GenAI jobs hpsearch never starts): off
        unless asked for, so a test's server starts in seconds and leaves the CPU to the search."""
        self.folder, self.port, self.proc, self.admin_password = folder, free_port(), None, admin_password
        self.workers, self.jobs = workers, jobs
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        auth, env = [], dict(os.environ)
        if not self.jobs:
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        if self.admin_password is not None:
            ini = self.folder / "basic_auth.ini"
            ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{self.folder / 'auth.db'}\n"
                           "admin_username = admin\n"
                           "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_AUTH_ADMIN_PASSWORD=self.admin_password,
                       MLFLOW_FLASK_SERVER_SECRET_KEY="test-only-form-key")
            auth = ["--app-name", "basic-auth"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", *auth, "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--workers", str(self.workers)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import requests

        def healthy() -> bool:
            try:
                return requests.get(f"{self.uri}/health", timeout=1).ok
            except requests.RequestException:
                return False
        wait_for(healthy, 90, "the MLflow server")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # MLflow 3's server can take longer than that to wind down its background job
                # workers on a loaded machine; what matters here is that it is gone.
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
            self.proc = None
