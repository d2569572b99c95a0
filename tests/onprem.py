"""The user's side of an on-prem Ray cluster, as docs/cluster.md tells it: cluster-onprem.yaml with
the machines' addresses, user and key filled in, and the commands run from the user's own machine
(`Laptop`: a lab host without sshd and without the shared folder, on the same network as the
cluster): `ray up`, `ray rsync-down` of the token, `ray dashboard` (the job API through ssh),
`ray job submit`, `ray exec`, `ray down`; and what the user reads back (MLflow through its login).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import yaml

from tests.hosts import Host

REPO = Path(__file__).resolve().parents[1]
CLUSTER_FILE = REPO / "cluster-onprem.yaml"
VENV_BIN = Path(sys.executable).parent  # this checkout's virtualenv: the laptop's Ray and MLflow
HOME = "/home/me"
CONFIG = f"{HOME}/cluster-onprem.yaml"
KEY = f"{HOME}/.ssh/id_ed25519"
TOKEN = f"{HOME}/.ray/hpsearch-onprem.token"
DASHBOARD = "http://127.0.0.1:8265"  # where `ray dashboard` forwards the head's dashboard and job API


def filled_in(head: str, workers: list[str], user: str, key: str) -> str:
    """cluster-onprem.yaml as a user fills it in: the provider's addresses and the ssh user and key,
    nothing else (checked: the result differs from the file in those fields only)."""
    text = CLUSTER_FILE.read_text()
    edits = [(r"(?m)^  head_ip: .*$", f"  head_ip: {head}"),
             (r"(?m)^  worker_ips: .*$", f"  worker_ips: [{', '.join(workers)}]"),
             (r"(?m)^  ssh_user: .*$", f"  ssh_user: {user}"),
             (r"(?m)^  ssh_private_key: .*$", f"  ssh_private_key: {key}")]
    for pattern, line in edits:
        text, count = re.subn(pattern, line, text)
        assert count == 1, pattern
    original, filled = yaml.safe_load(CLUSTER_FILE.read_text()), yaml.safe_load(text)
    for config in (original, filled):
        config["provider"].pop("head_ip"), config["provider"].pop("worker_ips"), config.pop("auth")
    assert filled == original
    return text


class Laptop:
    """The user's machine: root there, with this checkout (the working directory of every command,
    as `ray up` wants) and its virtualenv's `ray` on PATH."""

    def __init__(self, host: Host, private_key: str, config_text: str):
        self.host = host
        home = host.dir / "home" / "me"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        key = home / ".ssh" / "id_ed25519"
        key.write_text(private_key)
        key.chmod(0o600)
        (home / "cluster-onprem.yaml").write_text(config_text)
        self.token_env: dict[str, str] = {}
        self.dashboard_log = host.dir / "ray-dashboard.log"

    def run(self, script: str, timeout: float = 300, env: dict | None = None, check: bool = False):
        variables = {"HOME": HOME, "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
                     **self.token_env, **(env or {})}
        return self.host.run(f"cd {REPO} && {script}", user=None, env=variables, timeout=timeout, check=check)

    def ray(self, args: str, timeout: float = 300, check: bool = True, env: dict | None = None):
        return self.run(f"ray {args}", timeout=timeout, check=check, env=env)

    def up(self, timeout: float = 1200):
        return self.ray(f"up -y --disable-usage-stats {CONFIG}", timeout=timeout)

    def fetch_token(self) -> None:
        """The cluster's Ray token, copied down as the docs say; later commands present it."""
        self.run("mkdir -p ~/.ray", check=True)  # rsync-down makes no folder
        self.ray(f"rsync-down {CONFIG} /home/hpsearch/.ray/auth_token {TOKEN}")
        self.token_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": TOKEN}

    def head_exec(self, command: str, timeout: float = 300, check: bool = True):
        return self.ray(f"exec {CONFIG} {shlex.quote(command)}", timeout=timeout, check=check)

    def http(self, url: str, auth: str = "", headers: dict | None = None) -> str:
        """HTTP status of a GET from the laptop ('refused' when nothing listens)."""
        code = ("import sys, requests\n"
                "try:\n"
                f"    r = requests.get({url!r}, timeout=120, auth={tuple(auth.split(':', 1)) if auth else None!r},"
                f" headers={headers or {}!r})\n"
                "    print(r.status_code)\n"
                "except requests.ConnectionError:\n"
                "    print('refused')\n")
        return self.run(f"python -c {shlex.quote(code)}", check=True, env={"RAY_AUTH_MODE": ""}).stdout.strip()

    # --- the job API through `ray dashboard` ------------------------------------------------

    def open_dashboard(self) -> None:
        self.close_dashboard()
        variables = {"HOME": HOME, "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", **self.token_env}
        self.host.popen(f"cd {REPO} && exec ray dashboard {CONFIG}", self.dashboard_log, user=None, env=variables)
        deadline = time.monotonic() + 120
        while self.http(f"{DASHBOARD}/api/version") == "refused":
            assert time.monotonic() < deadline, self.dashboard_log.read_text()[-3000:]
            time.sleep(2)

    def close_dashboard(self) -> None:
        for pid, cmdline in self.host.processes():
            if "ray dashboard" in cmdline or "-L 8265:" in cmdline:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def submit(self, submission_id: str, entrypoint: str, wait: bool = True, timeout: float = 1800):
        flags = "" if wait else "--no-wait "
        return self.ray(f"job submit --address {DASHBOARD} --submission-id {submission_id} {flags}-- {entrypoint}",
                        timeout=timeout, check=False)

    def job_status(self, submission_id: str) -> str:
        out = self.ray(f"job status --address {DASHBOARD} {submission_id}", check=False).stdout
        # "Status for job 'x': RUNNING" while it runs, "Job 'x' succeeded" once done
        found = re.search(r"(?i)\b(PENDING|RUNNING|SUCCEEDED|FAILED|STOPPED)\b", out)
        return found.group(1).upper() if found else out

    def job_logs(self, submission_id: str) -> str:
        return self.ray(f"job logs --address {DASHBOARD} {submission_id}", check=False).stdout

    # --- MLflow, as its users read it -------------------------------------------------------

    def mlflow_children(self, uri: str, password: str, parent_run_id: str) -> dict[str, list[float]]:
        """{trial run name: sorted val_accuracy steps} of a study's parent run, read through the
        server's login."""
        code = ("import json, sys\n"
                "from mlflow.tracking import MlflowClient\n"
                f"c = MlflowClient({uri!r})\n"
                f"parent = c.get_run({parent_run_id!r})\n"
                "runs = c.search_runs([parent.info.experiment_id], "
                f"\"tags.`mlflow.parentRunId` = '{parent_run_id}'\", max_results=1000)\n"
                "names = [r.info.run_name for r in runs]\n"
                "assert len(names) == len(set(names)), names\n"
                "print(json.dumps({r.info.run_name: sorted(m.step for m in "
                "c.get_metric_history(r.info.run_id, 'val_accuracy')) for r in runs}))\n")
        proc = self.run(f"python -c {shlex.quote(code)}", check=True, timeout=300,
                        env={"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password})
        return json.loads(proc.stdout.strip().splitlines()[-1])
