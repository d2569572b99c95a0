"""Where a result came from: the package versions and the git commit recorded in best.yaml and
on the study's MLflow run, so a figure can be traced to the code and libraries that made it, and
MLflow's standard provenance tags, which its UI shows, on every run hpsearch creates."""

from __future__ import annotations

import functools
import getpass
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("hpsearch", "torch", "ray", "optuna", "mlflow", "numpy", "pandas")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_command: str | None = None  # set by search.main: `hpsearch VERB`, whichever way it was started


def set_command(name: str) -> None:
    global _command
    _command = name
    mlflow_source_tags.cache_clear()  # the runs made from now on name this command, not the one cached


def command_name() -> str:
    """The command that is running, as its user typed it: `hpsearch run` for `hpsearch run` (or
    `python -m search run`), `search.run` for `python -m search.run`, a console script's name."""
    if _command is not None:
        return _command
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name.removesuffix(".__main__")
    script = sys.argv[0] if sys.argv else ""
    return os.path.basename(script) if script not in ("", "-c") else "python"


@functools.cache
def mlflow_source_tags() -> dict[str, str]:
    """MLflow's own provenance tags (the UI's Source, User and Git Commit), which MlflowClient's
    create_run leaves unset; computed once per process, since a study creates a run per trial."""
    tags = {"mlflow.source.name": command_name(), "mlflow.source.type": "LOCAL"}
    commit = git_commit()
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # a uid without a name (some containers): MLflow's UI shows none
        pass
    return tags
