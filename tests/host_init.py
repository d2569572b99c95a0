"""PID 1 of a test host (tests/hosts.py): lays out the host's own view of the file system (its home,
/tmp, /run, /dev/shm, accounts, ssh configuration, the shared folder at /mnt/hpsearch; the machine's
own files read-only), names the host, starts its sshd and reaps orphaned processes until stopped.

Runs under Debian's python3 with the standard library only, already inside the host's new mount,
PID, UTS and IPC namespaces (and its network namespace). Its one argument is a JSON file:
{"hostname", "tmpfs": [dirs], "mkdirs": [dirs], "binds": [[source, target], ...], "sshd": bool}.
It prints "ready" on stdout once sshd accepts connections (or at once without sshd)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def lay_out(spec: dict) -> None:
    # Nothing mounted here may reach the machine's mount table, and nothing run here may write to
    # the machine's files: the root is remounted read-only, and a *bind* remount changes only this
    # namespace's copy of the root mount (a plain `remount,ro` would change the file system itself).
    mount("--make-rprivate", "/")
    for target in spec["tmpfs"]:
        mount("-t", "tmpfs", "-o", "mode=1777" if target == "/dev/shm" else "mode=755", "tmpfs", target)
    for folder in spec["mkdirs"]:
        os.makedirs(folder, exist_ok=True)
    # In the order given: sources under the machine's /tmp must be bound before /tmp itself is.
    for source, target in spec["binds"]:
        mount("--bind", source, target)
    # Last: bind mounts made from a read-only mount would be read-only too.
    mount("-o", "remount,bind,ro", "/")
    subprocess.run(["hostname", spec["hostname"]], check=True)


def start_sshd(address: str) -> subprocess.Popen:
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", "/etc/ssh/sshd_config", "-E", "/var/log/sshd.log"],
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sshd.poll() is not None:
            raise SystemExit(f"sshd exited with {sshd.returncode}: see sshd.log")
        try:
            socket.create_connection((address, 22), timeout=1).close()
            return sshd
        except OSError:
            time.sleep(0.1)
    raise SystemExit("sshd did not listen within 30 s")


def stop(*_: object) -> None:
    # As PID 1 of the namespace, kill(-1) reaches every process of this host and no other. Each one
    # ends up a child of this one (orphans are re-parented here), so "no children left" means done.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(-1, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    time.sleep(0.05)
            except ChildProcessError:
                raise SystemExit(0) from None
    raise SystemExit(0)


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    signal.signal(signal.SIGTERM, stop)
    lay_out(spec)
    if spec["sshd"]:
        start_sshd(spec["address"])
    print("ready", flush=True)
    os.close(1)
    while True:  # orphans of this host are re-parented here: reap them
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.5)


if __name__ == "__main__":
    main()
