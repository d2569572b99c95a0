"""Test hosts on this machine, each with its own address, processes and home.

A host is a network namespace with one address on the lab's private bridge, plus mount, PID, UTS
and IPC namespaces whose PID 1 is tests/host_init.py: its own /home, /tmp, /var/tmp, /run,
/dev/shm, /var/log, hostname and sshd on its address; the accounts and the shared folder at
/mnt/hpsearch (standing in for NFS) are the lab's; the machine's own files are seen read-only.
`ray stop` on a host sees that host's processes only, and killing its PID 1 ends all of them at
once (a machine lost). The bridge lives in a namespace of its own: the machine gets no address or
route on the lab's network, and the hosts get no default route, as on a site without internet
access: nothing but the bridge's addresses is reachable from them, and a try fails at once.

Everything is made by `Lab` and removed by `Lab.close()`, also when a test fails; labs left by a
killed test run are removed by the next one (their namespaces carry the creating process id, and
every host's processes die with the process that made it).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

SUBNET = "10.23.0"  # exists only on the lab's bridge, inside the lab's namespaces
USER, UID = "hpsearch", 23023  # the hosts' login user (the cluster files' ssh_user)
PREFIX = "hpsearch-lab-"
INIT = Path(__file__).with_name("host_init.py")
HOST_PYTHON = "/usr/bin/python3"  # the hosts' system Python: the machine's Debian one
NEEDS = {"sshd": "/usr/sbin/sshd", "rsync": "/usr/bin/rsync", "sudo": "/usr/bin/sudo", "ip": "/usr/sbin/ip",
         "unshare": "/usr/bin/unshare", "nsenter": "/usr/bin/nsenter", "python3": HOST_PYTHON}
PACKAGES = "openssh-server rsync sudo iproute2 util-linux python3-venv"

SSHD_CONFIG = """\
ListenAddress {address}
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
UsePAM no
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
MaxStartups 64
MaxSessions 64
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
"""


def sh(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def missing() -> str | None:
    """Why hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "test hosts need root (network, mount and PID namespaces)"
    absent = [name for name, path in NEEDS.items() if not os.access(path, os.X_OK)]
    if absent:
        return f"test hosts need {', '.join(absent)}: apt-get install {PACKAGES}"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--mount-proc", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this machine refuses new namespaces ({probe.stderr.strip()})"
    return None


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the test process dies, so does the host (and, as its PID 1 goes, every
    # process in it), instead of a cluster left running on the machine.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def remove_stale_labs() -> None:
    """Namespaces of labs whose test process is gone (killed before its teardown ran)."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        found = re.match(rf"{PREFIX}(\d+)-", name)
        if found and not _alive(int(found.group(1))):
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", name, check=False)


class Host:
    """One machine of the lab; `lab.add_host` makes and starts it."""

    def __init__(self, lab: Lab, name: str, address: str | None, index: int, sshd: bool, shared: bool):
        self.lab, self.name, self.address, self.index = lab, name, address, index
        self.sshd, self.shared = sshd, shared
        self.dir = lab.root / "hosts" / name
        self.netns = f"{lab.tag}-{name}" if address else None
        self.proc: subprocess.Popen | None = None
        self.pid1 = 0
        self.pidns = ""

    @property
    def home(self) -> Path:
        """The login user's home as the machine sees it."""
        return self.dir / "home" / USER

    # --- making it -----------------------------------------------------------------------

    def _network(self) -> None:
        ns, sw = self.netns, self.lab.switch
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{self.index}", "netns", sw)
        sh("ip", "-n", sw, "link", "set", f"p{self.index}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{self.address}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def _files(self) -> dict:
        d = self.dir
        for sub in ("home", "tmp", "var_tmp", "log", "etc/ssh"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("tmp", "var_tmp"):
            (d / sub).chmod(0o1777)
        home = d / "home" / USER
        if not home.exists():
            shutil.copytree("/etc/skel", home, symlinks=True)
            (home / ".ssh").mkdir(mode=0o700)
            (home / ".ssh" / "authorized_keys").write_text(self.lab.public_key)
            sh("chown", "-R", f"{UID}:{UID}", str(home))
            home.chmod(0o755)
        (d / "etc" / "hostname").write_text(f"{self.name}\n")
        # As Debian writes it: the host's own name on 127.0.1.1, the other hosts by address.
        others = "".join(f"{h.address} {h.name}\n" for h in self.lab.hosts.values() if h.address and h is not self)
        (d / "etc" / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n{others}")
        ssh = d / "etc" / "ssh"
        for name in ("ssh_config", "moduli"):
            if Path("/etc/ssh", name).exists():
                shutil.copy(Path("/etc/ssh", name), ssh / name)
        if self.sshd:
            if not (ssh / "ssh_host_ed25519_key").exists():
                key = str(ssh / "ssh_host_ed25519_key")
                sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f", key)
            (ssh / "sshd_config").write_text(SSHD_CONFIG.format(address=self.address))
        lab = self.lab
        mnt = [[str(lab.shared), "/mnt/hpsearch"], [str(lab.wheels), "/mnt/wheels"]] if self.shared else []
        binds = [
            *mnt,
            *[[str(lab.etc / f), f"/etc/{f}"] for f in ("passwd", "group", "shadow", "sudoers.d")],
            *[[str(d / "etc" / f), f"/etc/{f}"] for f in ("hosts", "hostname", "ssh")],
            [str(d / "home"), "/home"], [str(d / "var_tmp"), "/var/tmp"], [str(d / "log"), "/var/log"],
            [str(d / "tmp"), "/tmp"],  # last: the sources above may lie under the machine's /tmp
        ]
        return {"hostname": self.name, "address": self.address, "sshd": self.sshd,
                "tmpfs": ["/run", "/dev/shm", "/mnt"], "mkdirs": [target for _, target in mnt], "binds": binds}

    def start(self) -> Host:
        if self.netns:
            self._network()
        spec = self.dir / "host.json"
        spec.write_text(json.dumps(self._files()))
        command = ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--mount-proc", "--kill-child",
                   HOST_PYTHON, str(INIT), str(spec)]
        if self.netns:
            command = ["ip", "netns", "exec", self.netns, *command]
        with open(self.dir / "init.log", "ab") as log:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.kill()
            raise RuntimeError(f"host {self.name} did not start:\n{(self.dir / 'init.log').read_text()[-3000:]}")
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        self.pid1 = int(children[0])
        self.pidns = os.readlink(f"/proc/{self.pid1}/ns/pid")
        return self

    # --- using it ------------------------------------------------------------------------

    def command(self, script: str, user: str | None = USER, env: dict | None = None) -> list[str]:
        """The argv that runs a bash `script` in this host, as `user` (None: root) from its home,
        with a login's plain environment (nothing of the test's), plus `env`."""
        enter = ["nsenter", "--target", str(self.pid1), "--mount", "--uts", "--ipc", "--pid"]
        if self.netns:
            enter.append("--net")
        if user is not None:
            enter += ["--setuid", str(UID), "--setgid", str(UID)]
        home = f"/home/{user}" if user else "/root"
        base = {"HOME": home, "USER": user or "root", "LOGNAME": user or "root", "SHELL": "/bin/bash",
                "PATH": "/usr/local/bin:/usr/bin:/bin" + ("" if user else ":/usr/sbin:/sbin"), "LANG": "C.UTF-8"}
        variables = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
        return [*enter, "--", "/usr/bin/env", "-i", *variables, "/bin/bash", "-c", f"cd ~ 2>/dev/null; {script}"]

    def run(self, script: str, user: str | None = USER, env: dict | None = None, timeout: float = 300,
            check: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.command(script, user, env), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: `{script}` exited {proc.returncode}:\n{proc.stdout[-3000:]}"
                                 f"\n{proc.stderr[-3000:]}")
        return proc

    def popen(self, script: str, log: Path, user: str | None = USER, env: dict | None = None) -> subprocess.Popen:
        out = open(log, "ab")
        return subprocess.Popen(self.command(script, user, env), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)

    def processes(self) -> list[tuple[int, str]]:
        """(machine pid, command line) of every process in this host, seen from outside it."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "pid") != self.pidns:
                    continue
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue  # gone meanwhile
            found.append((int(entry.name), cmdline))
        return sorted(found)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- ending it -----------------------------------------------------------------------

    def kill(self) -> None:
        """The machine is lost: SIGKILL to its PID 1, and the kernel ends every process in it."""
        if self.proc is None:
            return
        if self.pid1 and _alive(self.pid1):
            os.kill(self.pid1, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()  # unshare --kill-child: its child, the host's PID 1, goes with it
        self.proc.wait(timeout=60)
        self.proc.stdout.close()
        deadline = time.monotonic() + 30
        while self.pidns and self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)

    def stop(self) -> None:
        """Shut down: SIGTERM to every process of the host, SIGKILL to what is left after 2 s."""
        if self.alive and self.pid1 and _alive(self.pid1):
            os.kill(self.pid1, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def remove_network(self) -> None:
        if self.netns:
            sh("ip", "netns", "del", self.netns, check=False)


class Lab:
    """The private network (a bridge), the accounts, the shared folder, and the hosts on them."""

    def __init__(self, root: Path, public_key: str, wheels: Path):
        self.root, self.public_key, self.wheels = root, public_key, wheels
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.shared = root / "shared"
        self.etc = root / "etc"
        self.hosts: dict[str, Host] = {}
        self._count = 0

    def open(self) -> Lab:
        remove_stale_labs()
        self.shared.mkdir(parents=True, exist_ok=True)
        os.chown(self.shared, UID, UID)
        self._accounts()
        sw = self.switch
        sh("ip", "netns", "add", sw)
        sh("ip", "-n", sw, "link", "set", "lo", "up")
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        return self

    def _accounts(self) -> None:
        etc = self.etc
        (etc / "sudoers.d").mkdir(parents=True, exist_ok=True)
        line = {"passwd": f"{USER}:x:{UID}:{UID}:hpsearch:/home/{USER}:/bin/bash\n",
                "group": f"{USER}:x:{UID}:\n", "shadow": f"{USER}:*:20000:0:99999:7:::\n"}
        for name, entry in line.items():
            text = Path("/etc", name).read_text()
            (etc / name).write_text(text + ("" if text.endswith("\n") else "\n") + entry)
        shutil.copystat("/etc/shadow", etc / "shadow")
        st = os.stat("/etc/shadow")
        os.chown(etc / "shadow", st.st_uid, st.st_gid)
        sudoers = etc / "sudoers.d" / USER
        sudoers.write_text(f"{USER} ALL=(ALL) NOPASSWD:ALL\n")
        sudoers.chmod(0o440)

    def add_host(self, name: str, address: str | None, sshd: bool = True, shared: bool = True) -> Host:
        """A host at `address` on the bridge (None: no network namespace of its own, so it reaches
        what the machine reaches: only for building things the hosts then get as files), with the
        shared folder at /mnt/hpsearch and the wheel folder at /mnt/wheels unless `shared` is False."""
        self._count += 1
        host = Host(self, name, address, self._count, sshd and address is not None, shared)
        self.hosts[name] = host
        return host.start()

    def replace_host(self, name: str) -> Host:
        """A new machine in place of a lost one: the same name and address, a fresh home."""
        old = self.hosts.pop(name)
        old.kill()
        old.remove_network()
        lost = old.dir.with_name(f"{name}.lost-{time.time_ns()}")
        old.dir.rename(lost)  # its logs stay for a look
        self.hosts[f"{name}.lost"] = old  # torn down with the lab all the same
        old.dir = lost
        return self.add_host(name, old.address, old.sshd, old.shared)

    def close(self) -> None:
        for host in self.hosts.values():
            try:
                host.stop()
            finally:
                host.remove_network()
        sh("ip", "netns", "del", self.switch, check=False)
        leftover = [n for n in sh("ip", "netns", "list", check=False).stdout.split() if n.startswith(self.tag)]
        assert not leftover, f"namespaces left behind: {leftover}"
