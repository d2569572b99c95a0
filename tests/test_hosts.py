"""The test hosts the cluster test runs Ray on (tests/hosts.py) are machines of their own: their own
address, hostname, home and processes; ssh between them; nothing off their bridge reachable; the
machine's files read-only to them; a lost host takes all its processes with it; and `ray stop` in
one of them ends that host's Ray processes only, not another host's nor the machine's. A few
seconds; skipped, with the reason, where the machine lacks root, namespaces or sshd."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hosts import SUBNET, Lab, missing

reason = missing()
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")
# What `ray stop` kills by command line (Ray's RAY_PROCESSES has "monitor.py"): a stand-in that
# sleeps, so the test needs no cluster.
RAYLIKE = "import time; time.sleep(600)"


@pytest.fixture
def lab(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    (tmp_path / "wheels").mkdir()
    lab = Lab(tmp_path / "lab", (tmp_path / "key.pub").read_text(), tmp_path / "wheels").open()
    yield lab
    lab.close()


def test_hosts_are_separate_machines_on_a_closed_network(lab, tmp_path):
    a = lab.add_host("hps-a", f"{SUBNET}.10")
    b = lab.add_host("hps-b", f"{SUBNET}.11")
    (b.home / "mine").write_text("b's own file")
    seen = a.run("hostname; id -un; ip -4 -o addr show eth0; ls ~; ps -e -o comm=", check=True).stdout.split("\n")
    assert seen[:2] == ["hps-a", "hpsearch"] and f"{SUBNET}.10/24" in seen[2] and "mine" not in seen[3:]
    assert sorted(seen[3:]) == ["", "ps", "python3", "sshd"], seen  # nothing but its own (bash exec'd ps)
    # ssh from one host to the other with the lab's key, as the cluster launcher does.
    key = b.home / "id"
    key.write_text((tmp_path / "key").read_text())
    os.chown(key, 23023, 23023)
    key.chmod(0o600)
    hop = b.run(f"ssh -i ~/id -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null {a.address} hostname",
                check=True, timeout=60)
    assert hop.stdout.strip() == "hps-a"
    # No address off the bridge is reachable (no default route: it fails at once), and the machine's
    # files are read-only.
    probe = a.run("timeout 10 bash -c 'echo > /dev/tcp/8.8.8.8/53' 2>&1; touch /usr/hpsearch-probe 2>&1")
    assert "Network is unreachable" in probe.stdout and "Read-only file system" in probe.stdout, probe.stdout
    assert os.access("/usr", os.W_OK)
    assert b.run("cat /mnt/hpsearch/shared 2>&1; echo shared > /mnt/hpsearch/shared").returncode == 0
    assert a.run("cat /mnt/hpsearch/shared", check=True).stdout == "shared\n"


def test_a_lost_host_takes_every_process_with_it(lab):
    a = lab.add_host("hps-a", f"{SUBNET}.10")
    a.popen("setsid nohup sleep 600 >/dev/null 2>&1 & sleep 600", lab.root / "sleep.log")
    deadline = time.monotonic() + 30
    while sum("sleep 600" in cmd for _, cmd in a.processes()) < 2:
        assert time.monotonic() < deadline, a.processes()
        time.sleep(0.2)
    a.kill()
    assert a.processes() == [] and not a.alive


def test_ray_stop_in_one_host_touches_no_other_hosts_nor_the_machines_processes(lab):
    a = lab.add_host("hps-a", f"{SUBNET}.10")
    b = lab.add_host("hps-b", f"{SUBNET}.11")
    python = sys.executable  # this checkout's Ray; root in the hosts may run it
    machine = subprocess.Popen([python, "-c", RAYLIKE, "monitor.py"])
    try:
        for host in (a, b):
            host.popen(f"exec {python} -c '{RAYLIKE}' monitor.py", lab.root / f"{host.name}.log", user=None)
        deadline = time.monotonic() + 30
        while not all(any("monitor.py" in cmd for _, cmd in h.processes()) for h in (a, b)):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # Before any `ray stop`: of the three stand-ins, b sees through /proc (as Ray's psutil does)
        # its own only.
        count = ("import psutil; print(sum('monitor' + '.py' in ' '.join(p.cmdline()) "
                 "for p in psutil.process_iter()))")
        assert b.run(f'{python} -c "{count}"', user=None, check=True).stdout.strip() == "1"
        stop = b.run(f"{Path(python).with_name('ray')} stop", user=None, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert not any("monitor.py" in cmd for _, cmd in b.processes())  # it does kill what it sees
        assert any("monitor.py" in cmd for _, cmd in a.processes())
        assert machine.poll() is None
    finally:
        machine.kill()
        machine.wait()
