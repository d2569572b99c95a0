"""`ray up cluster-onprem.yaml` for real, on three hosts made on this machine (tests/hosts.py), driven
from a fourth standing in for the user's laptop (tests/onprem.py), the way docs/cluster.md tells it:

1. the file with only the addresses, user and key filled in brings up a head and two workers from
   a clean state with its own setup commands (the hosts come with the virtualenv, tests/host_venv.py);
2. a stranger is refused at every door: a driver without the token, the dashboard and job API from
   another host's address or without the token, MLflow without the password;
3. a study submitted through the token-protected job API (`ray dashboard`'s tunnel) runs its trials
   on all three hosts (by their node ids), logs to the head's MLflow behind its login, and leaves
   best.yaml and the model on the shared folder;
4. a worker host lost mid-study (every process of it killed while its trial runs): the study ends
   with exactly the requested trials, each once in MLflow, the lost trial resumed elsewhere from its
   last checkpoint;
5. the head lost mid-study and replaced (`ray up` again), and the study `--resume`d from the shared
   folder: nothing lost or repeated;
6. `ray down` leaves nothing running on any host.

About 30 minutes on a 2-core machine, so it runs only when asked for: `pytest -m cluster`
(docs/cluster.md has the command and the last result).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tests import host_venv
from tests.chaos import wait_for
from tests.hosts import SUBNET, USER, Host, Lab, missing
from tests.onprem import CONFIG, DASHBOARD, KEY, Laptop, filled_in
from trainables.readers import DEBIAN_FASHION_DIR

reason = missing()
pytestmark = [pytest.mark.cluster, pytest.mark.skipif(reason is not None, reason=reason or "")]

HEAD, W1, W2, LAPTOP = (f"{SUBNET}.{n}" for n in (10, 11, 12, 2))
NAMES = {HEAD: "hps-head", W1: "hps-w1", W2: "hps-w2"}
SAMPLES = 6
STUDY = f"python -m search.run fashion_space --address auto --smoke --samples {SAMPLES}"
MLFLOW = f"http://{HEAD}:5000"


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


@pytest.fixture
def lab(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hpsearch-test", "-f", str(tmp_path / "key")],
                   check=True)
    lab = Lab(tmp_path / "lab", (tmp_path / "key.pub").read_text(), host_venv.wheels()).open()
    try:
        yield lab
    finally:
        lab.close()


# --- the machines -----------------------------------------------------------------------------

def machine(lab: Lab, address: str, venv: Path, data_root: Path | None, replacing: bool = False) -> Host:
    """A cluster machine as its owner hands it over (`replacing`: a new one in place of a lost one,
    same address, fresh disk): Python with venv, the hpsearch virtualenv (the image's), and
    Fashion-MNIST where the cluster file looks for it (Debian's package, seen from the machine; else
    the user cache that the checked download fills)."""
    host = lab.replace_host(NAMES[address]) if replacing else lab.add_host(NAMES[address], address)
    host_venv.provide(host, venv)
    if not DEBIAN_FASHION_DIR.is_dir():
        cache = host.home / ".cache" / "hpsearch" / "FashionMNIST" / "raw"
        shutil.copytree(data_root / "FashionMNIST" / "raw", cache)
        subprocess.run(["chown", "-R", "23023:23023", str(host.home / ".cache")], check=True)
    outside = {cmd for _, cmd in host.processes()}
    inside = host.run("ps -eo args=", check=True).stdout.splitlines()
    # What `ray stop` here will see: this host's processes only (tests/test_hosts.py shows it stops no more).
    assert all(cmd in outside or cmd.startswith(("ps ", "/bin/bash -c")) for cmd in inside), (inside, outside)
    return host


def only_the_machine_left(host: Host) -> list[str]:
    """Processes of `host` other than its PID 1 and its sshd listener."""
    return [cmd for _, cmd in host.processes() if "host_init.py" not in cmd and "[listener]" not in cmd]


# --- what the cluster did ---------------------------------------------------------------------

def nodes(laptop: Laptop) -> dict[str, str]:
    """Live node id -> address, from the state API through the job API's tunnel."""
    out = laptop.ray(f"list nodes --address {DASHBOARD} --format json --limit 100", check=False)
    if out.returncode != 0:
        return {}
    return {n["node_id"]: n["node_ip"] for n in json.loads(out.stdout[out.stdout.index("["):]) if n["state"] == "ALIVE"}


def trial_rows(study: Path) -> dict[int, list[dict]]:
    """Trial number -> its result rows, from Tune's result.json files on the shared folder."""
    from search.results.records import trial_number_from_path

    rows = {}
    for result in (study / "tune").glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            rows[trial_number_from_path(str(result.parent), lines[0]["trial_id"])] = lines
    return rows


def check_study(lab: Lab, laptop: Laptop, password: str, name: str) -> tuple[Path, dict[str, list[float]]]:
    """The study's record: exactly SAMPLES trials in its table and in MLflow (each once, no epoch
    twice), best.yaml and the model on the shared folder."""
    study = lab.shared / "results" / name
    table = pd.read_parquet(study / "trials.parquet")
    assert sorted(table["trial"]) == [f"trial_{i:03d}" for i in range(1, SAMPLES + 1)], table["trial"].tolist()
    assert (study / "best.yaml").is_file() and (study / "model.pt").is_file()
    state = json.loads((study / "study.json").read_text())
    assert state["tracking_uri"] == MLFLOW
    children = laptop.mlflow_children(MLFLOW, password, state["parent_run_id"])
    assert sorted(children) == sorted(table["trial"]), children
    assert all(len(steps) == len(set(steps)) for steps in children.values()), children
    return study, children


def submit_and_wait(laptop: Laptop, job: str, entrypoint: str, timeout: float = 1800) -> None:
    run = laptop.submit(job, entrypoint, wait=True, timeout=timeout)
    assert run.returncode == 0 and f"Job '{job}' succeeded" in run.stdout, run.stdout[-5000:] + run.stderr[-3000:]


def wait_job(laptop: Laptop, job: str, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while (status := laptop.job_status(job)) in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, f"job {job} still {status}"
        time.sleep(15)
    assert status == "SUCCEEDED", (status, laptop.job_logs(job)[-5000:])


# --- the test ---------------------------------------------------------------------------------

def test_onprem_cluster_launch_study_lost_hosts_and_teardown(lab, tmp_path, request):
    started = time.monotonic()
    data_root = request.getfixturevalue("data_root") if not DEBIAN_FASHION_DIR.is_dir() else None
    venv = host_venv.seeded_venv(lab, tmp_path / "seed.log")
    log(f"virtualenv ready ({time.monotonic() - started:.0f} s)")
    hosts = {address: machine(lab, address, venv, data_root) for address in (HEAD, W1, W2)}
    laptop = Laptop(lab.add_host("laptop", LAPTOP, sshd=False, shared=False), (tmp_path / "key").read_text(),
                    filled_in(HEAD, [W1, W2], USER, KEY))

    # 1. ray up: the head with the launcher, the workers by the head's autoscaler.
    (tmp_path / "ray-up.log").write_text(laptop.up().stdout)
    log(f"ray up done ({time.monotonic() - started:.0f} s)")
    stranger = laptop.run(f"python -c 'import ray; ray.init(address=\"{HEAD}:6379\"); print(\"joined\")'",
                          timeout=180, env={"RAY_AUTH_MODE": "disabled"})
    assert stranger.returncode != 0 and "joined" not in stranger.stdout, stranger.stdout
    assert "token" in stranger.stderr.lower(), stranger.stderr[-3000:]
    laptop.fetch_token()
    copied = laptop.host.dir / "home" / "me" / ".ray" / "hpsearch-onprem.token"
    for token in (hosts[HEAD].home / ".ray" / "auth_token", copied):
        assert token.stat().st_mode & 0o777 == 0o600, token  # the cluster's key: its owner's only
    laptop.open_dashboard()
    wait_for(lambda: set(nodes(laptop).values()) == {HEAD, W1, W2}, 900, "the head and both workers")
    log(f"three nodes up ({time.monotonic() - started:.0f} s)")

    # 2. A stranger is refused at every door.
    assert laptop.http(f"http://{HEAD}:8265/api/version") == "refused"  # the dashboard is on the head's loopback
    assert hosts[W1].run(f"curl -s -o /dev/null -w %{{http_code}} -m 10 http://{HEAD}:8265/api/version").stdout == "000"
    assert laptop.http(f"{DASHBOARD}/api/jobs/") == "401"  # through the tunnel, without the token
    assert laptop.http(f"{DASHBOARD}/api/jobs/", headers={"Authorization": "Bearer " + "0" * 64}) in ("401", "403")
    no_token = laptop.ray(f"job list --address {DASHBOARD}", check=False, env={"RAY_AUTH_MODE": ""})
    assert no_token.returncode != 0 and "token" in (no_token.stdout + no_token.stderr).lower()
    shown = laptop.head_exec("echo PASSWORD=$(cat /mnt/hpsearch/mlflow/secrets/admin_password)").stdout
    password = re.search(r"(?m)^PASSWORD=(\S+)\s*$", shown).group(1)
    assert password == (lab.shared / "mlflow" / "secrets" / "admin_password").read_text().strip()
    api = f"{MLFLOW}/api/2.0/mlflow/experiments/search?max_results=1"
    assert laptop.http(api) == "401" and laptop.http(api, auth="admin:wrong") == "401"
    assert laptop.http(api, auth=f"admin:{password}") == "200"
    assert hosts[W1].run(f"curl -s -o /dev/null -w %{{http_code}} -m 10 {api}").stdout == "401"

    # 3. A study through the job API: trials on all three hosts, MLflow behind its login, results shared.
    submit_and_wait(laptop, "spread", f"{STUDY} --name spread")
    study, _ = check_study(lab, laptop, password, "spread")
    by_node = nodes(laptop)
    ran_on = {by_node.get(row["node_id"], row["node_id"]) for rows in trial_rows(study).values() for row in rows}
    assert ran_on == {HEAD, W1, W2}, ran_on
    log(f"study spread over the three hosts ({time.monotonic() - started:.0f} s)")

    # 4. A worker host lost while its trial runs. The head's cores are held by another job (a
    # colleague's, say), so every trial runs on a worker; the one lost is the first that has a
    # checkpoint and is training on.
    hold = json.dumps(json.dumps({f"node:{HEAD}": 0.01}))
    laptop.ray(f"job submit --address {DASHBOARD} --submission-id hold-head --no-wait --entrypoint-num-cpus 2 "
               f"--entrypoint-resources {hold} -- sleep 3600")
    wait_for(lambda: laptop.job_status("hold-head") == "RUNNING", 300, "the job holding the head's cores")
    laptop.submit("lost-worker", f"{STUDY} --max-epochs 4 --name lost-worker", wait=False)
    folder = lab.shared / "results" / "lost-worker"
    victim: list = []

    def training_on_a_worker() -> bool:
        for number, rows in trial_rows(folder).items():
            last = rows[-1]
            if last["node_ip"] in (W1, W2) and 2 <= last["epoch"] < 4 and last["checkpoint_dir_name"]:
                victim[:] = [number, last["node_ip"], last["epoch"]]
                return True
        return False
    wait_for(training_on_a_worker, 1200, "a trial with a checkpoint training on a worker")
    number, lost, epoch = victim
    hosts[lost].kill()
    log(f"killed {NAMES[lost]} while trial {number} trained past epoch {epoch} ({time.monotonic() - started:.0f} s)")
    wait_job(laptop, "lost-worker")
    laptop.ray(f"job stop --address {DASHBOARD} hold-head", check=False)
    _, children = check_study(lab, laptop, password, "lost-worker")
    rows = trial_rows(folder)[number]
    before = [r for r in rows if r["node_ip"] == lost]
    after = rows[len(before):]
    assert before == rows[:len(before)] and after and all(r["node_ip"] not in (lost, "") for r in after), rows
    assert after[0]["epoch"] == before[-1]["epoch"] + 1, [(r["node_ip"], r["epoch"]) for r in rows]  # not from scratch
    assert children[f"trial_{number:03d}"] == list(range(1, rows[-1]["epoch"] + 1)), children
    hosts[lost] = machine(lab, lost, venv, data_root, replacing=True)  # repaired: it rejoins with the new head
    log(f"study finished without {NAMES[lost]} ({time.monotonic() - started:.0f} s)")

    # 5. The head lost mid-study, replaced by a new machine at its address, and the study resumed.
    laptop.submit("lost-head", f"{STUDY} --max-epochs 4 --name lost-head", wait=False)
    folder = lab.shared / "results" / "lost-head"
    wait_for(lambda: sum(len(r) for r in trial_rows(folder).values()) >= 4, 900, "the study's first epochs")
    laptop.close_dashboard()
    hosts[HEAD].kill()
    log(f"killed the head ({time.monotonic() - started:.0f} s)")
    assert not (folder / "best.yaml").exists()
    hosts[HEAD] = machine(lab, HEAD, venv, data_root, replacing=True)
    # `ray down` first: the launcher's record on this machine still holds the lost head's state, and
    # `ray up` alone would skip the new machine's setup.
    laptop.ray(f"down -y {CONFIG}", timeout=600)
    (tmp_path / "ray-up-again.log").write_text(laptop.up().stdout)
    laptop.fetch_token()  # the new head made a new token
    laptop.open_dashboard()
    wait_for(lambda: set(nodes(laptop).values()) == {HEAD, W1, W2}, 900, "the workers to join the new head")
    log(f"new head up with both workers ({time.monotonic() - started:.0f} s)")
    submit_and_wait(laptop, "lost-head-resumed", f"{STUDY} --max-epochs 4 --name lost-head --resume")
    check_study(lab, laptop, password, "lost-head")
    log(f"study resumed and finished ({time.monotonic() - started:.0f} s)")

    # 6. ray down leaves nothing running on any host.
    laptop.close_dashboard()
    down = laptop.ray(f"down -y {CONFIG}", timeout=600)
    assert down.returncode == 0
    left: dict = {}

    def nothing_running() -> bool:
        left.clear()
        left.update({NAMES[a]: only_the_machine_left(h) for a, h in hosts.items() if only_the_machine_left(h)})
        return not left
    try:
        wait_for(nothing_running, 180, "every process of the cluster to end")
    except Exception:
        raise AssertionError(f"still running after `ray down`: {left}") from None
    log(f"ray down left nothing running ({time.monotonic() - started:.0f} s)")
