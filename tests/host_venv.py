"""The hpsearch virtualenv and the wheel folder that test hosts get, so that `ray up` does not
install torch three times (5.5 GB and about 4 minutes each on a 2-core machine).

The virtualenv is built once by the cluster file's own venv commands (`python3 -m venv ~/venv`,
its `pip install -e ~/hpsearch ...` line) in a seed host, one without a network of its own so that
pip reaches the package registry as the machine does, and kept outside the repository
(`$HPSEARCH_CLUSTER_CACHE`, default ~/.cache/hpsearch-cluster-test), keyed by what decides its
contents. A host gets a hard-linked copy at the same path (/home/hpsearch/venv), as if its image
came with it; `ray up` then runs the same commands there, offline: pip finds every requirement
installed and builds hpsearch's editable wheel from the wheel folder, which the hosts' pip is
configured to use instead of an index (a site without internet access has such a mirror).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from tests.hosts import UID, Host, Lab

REPO = Path(__file__).resolve().parents[1]
CLUSTER_FILE = REPO / "cluster-onprem.yaml"
CACHE = Path(os.environ.get("HPSEARCH_CLUSTER_CACHE", Path.home() / ".cache" / "hpsearch-cluster-test"))
PIP_CONF = "[global]\nno-index = true\nfind-links = /mnt/wheels\n"


def venv_commands() -> list[str]:
    """The cluster file's own commands that make the virtualenv."""
    config = yaml.safe_load(CLUSTER_FILE.read_text())
    found = [c for c in config["setup_commands"] if "python3 -m venv" in c or "pip install" in c]
    assert len(found) == 2, found
    return found


def build_requirements() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]


def cache_key() -> str:
    python = subprocess.run(["/usr/bin/python3", "--version"], capture_output=True, text=True).stdout
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    basis = [python, *venv_commands(), *project["project"]["dependencies"], *build_requirements()]
    return hashlib.sha256("\n".join(basis).encode()).hexdigest()[:16]


def machine_pip_env() -> dict[str, str]:
    """The machine's pip settings (its mirrors, its caps) as variables the seed's pip reads."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in ("extra-index-url", "index-url", "find-links", "constraint", "cert"):
            env["PIP_" + name.upper().replace("-", "_")] = value.strip("'\"")
    return env


def copy_checkout(target: Path) -> None:
    """This checkout as `ray up`'s file_mounts put it on a host (the cluster file's rsync_exclude)."""
    excludes = yaml.safe_load(CLUSTER_FILE.read_text())["rsync_exclude"]
    args = [a for pattern in excludes for a in ("--exclude", pattern.replace("**/", ""))]
    subprocess.run(["rsync", "-a", "--delete", *args, f"{REPO}/", f"{target}/"], check=True)


def wheels() -> Path:
    """The wheel folder the hosts' pip uses: what an editable build of hpsearch needs."""
    folder = CACHE / "wheels"
    marker = folder / ("built-" + hashlib.sha256("\n".join(build_requirements()).encode()).hexdigest()[:12])
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:", "--dest",
                        str(folder), *build_requirements()], check=True, timeout=600)
        marker.touch()
    return folder


def seeded_venv(lab: Lab, log: Path) -> Path:
    """The cached virtualenv, built in a seed host of `lab` if it is not there yet."""
    target = CACHE / cache_key() / "venv"
    if (target.parent / "complete").exists():
        return target
    seed = lab.add_host("seed", None)
    try:
        copy_checkout(seed.home / "hpsearch")
        subprocess.run(["chown", "-R", f"{UID}:{UID}", str(seed.home)], check=True)
        script = " && ".join(venv_commands())
        proc = seed.run(script, env=machine_pip_env(), timeout=1800)
        log.write_text(proc.stdout + proc.stderr)
        assert proc.returncode == 0, f"building the hosts' virtualenv failed:\n{proc.stderr[-3000:]}"
    finally:
        seed.stop()
    shutil.rmtree(target.parent, ignore_errors=True)
    target.parent.mkdir(parents=True)
    os.rename(seed.home / "venv", target)
    (target.parent / "complete").touch()
    return target


def provide(host: Host, venv: Path) -> None:
    """Give `host` the virtualenv (hard links: no copy of the 5.5 GB) and the offline pip config."""
    subprocess.run(["cp", "-al", str(venv), str(host.home / "venv")], check=True)
    conf = host.home / ".config" / "pip"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "pip.conf").write_text(PIP_CONF)
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(host.home / ".config")], check=True)
