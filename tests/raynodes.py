"""A real multi-node Ray cluster on this machine: `ray start --block` processes, one per node,
each with its own temp dir and ports, stopped by PID (never `ray stop`, which would end every
Ray process on the machine). Used by the cluster test; also a recipe for trying `--address`.

Ray 2.60 turns on token authentication for `ray start` clusters. The token is handed to every
process through RAY_AUTH_TOKEN, so the test neither reads nor overwrites ~/.ray/auth_token.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos import free_port, wait_for

RAY = str(Path(sys.executable).with_name("ray"))


class LocalCluster:
    def __init__(self, folder: Path, nodes: int = 2, cpus_per_node: int = 1):
        self.folder, self.nodes, self.cpus = folder, nodes, cpus_per_node
        self.port = free_port()
        # Ray's socket paths must stay under 108 bytes: pytest's tmp_path is too deep for them.
        self.ray_root = Path(tempfile.mkdtemp(prefix="hpray-"))
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.procs: list[subprocess.Popen] = []
        self.address = ""  # HOST:PORT the head announces (the machine's address, not 127.0.0.1)

    def _start(self, index: int, *args: str) -> subprocess.Popen:
        log = open(self.folder / f"node{index}.log", "w")
        proc = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", "--num-cpus", str(self.cpus),
             # A custom resource per node only makes each node recognisable in `ray status`.
             "--resources", json.dumps({f"hpsearch_node_{index}": 1}),
             "--object-store-memory", str(300 * 2**20), "--temp-dir", str(self.ray_root / str(index)),
             "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
             "--dashboard-agent-listen-port", str(free_port()),
             "--dashboard-agent-grpc-port", str(free_port()), "--metrics-export-port", str(free_port()),
             "--runtime-env-agent-port", str(free_port()), *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def log(self, index: int) -> str:
        return (self.folder / f"node{index}.log").read_text()

    def start(self) -> "LocalCluster":
        self.folder.mkdir(parents=True, exist_ok=True)
        self._start(0, "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                    "--include-dashboard", "false")
        found: list[str] = []

        def announced() -> bool:
            if self.procs[0].poll() is not None:
                raise AssertionError(f"the head exited:\n{self.log(0)}")
            found[:] = re.findall(r"ray start --address='([^']+)'", self.log(0))
            return bool(found)
        wait_for(announced, 90, "the head node")
        self.address = found[0]
        for index in range(1, self.nodes):
            self._start(index, "--address", f"127.0.0.1:{self.port}")
        wait_for(lambda: len(self.alive_nodes()) == self.nodes, 90, f"{self.nodes} nodes to register")
        return self

    def alive_nodes(self) -> list[str]:
        """Node ids of the live nodes, asked of the cluster in a separate driver process."""
        code = ("import ray, json; ray.init(address=%r, include_dashboard=False, logging_level='ERROR'); "
                "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))" % f"127.0.0.1:{self.port}")
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60)
        lines = out.stdout.strip().splitlines()
        return json.loads(lines[-1]) if out.returncode == 0 and lines else []

    def stop(self) -> None:
        """SIGTERM each `ray start --block` (it stops its own node's processes), then SIGKILL
        whatever of that node's process group is left."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the node's session: `ray start` was its leader
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
        self.procs.clear()
        shutil.rmtree(self.ray_root, ignore_errors=True)
