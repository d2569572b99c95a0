"""Shared fixtures. Real data comes from ../shared/datasets beside the repository; tests that
need it are skipped, visibly, where it is absent."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HPSEARCH_TEST_DATA", REPO.parent / "shared" / "datasets"))


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test gets the environment the one before it had: a variable one test leaves behind (MLflow's
    set_tracking_uri writes MLFLOW_TRACKING_URI) would reach every later search a test starts, so a
    test's outcome would depend on which tests ran before it (seen when pytest-xdist reordered them:
    a warm-started study's runs went to another test's store)."""
    saved = dict(os.environ)
    yield
    if "mlflow" in sys.modules:  # MLflow's fluent API also keeps the URI in the process
        sys.modules["mlflow"].set_tracking_uri(None)
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (SHARED / "FashionMNIST" / "raw").is_dir():
        pytest.skip(f"real Fashion-MNIST not found at {SHARED} (set HPSEARCH_TEST_DATA)")
    return SHARED


def run_module(module: str, *args: str, cwd: Path | None = None, timeout: float = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args` the way a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd or REPO, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


def run_cli_here(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m module args` run in this process: the same `cli()` (argument parsing, run_cli's
    one-line errors and exit status), without a new interpreter's seconds of imports. For inputs
    refused before any training; the environment is restored afterwards."""
    import importlib

    return _here(f"python -m {module}", args, lambda: importlib.import_module(module).cli())


def run_hpsearch_here(*args: str) -> subprocess.CompletedProcess:
    """`hpsearch args` run in this process, as run_cli_here runs a module: the dispatcher
    (search.main) and the verb's own parser and error handling."""
    from search.main import main

    return _here("hpsearch", args, lambda: main(list(args)))


def _here(argv0: str, args: tuple[str, ...], call) -> subprocess.CompletedProcess:
    import io

    saved_env, saved_argv = dict(os.environ), sys.argv
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [argv0, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            call()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([argv0, *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def user_error(match: str):
    """A library's UserError as the CLI prints it (the library names a setting, the CLI its flag)."""
    from search.cli import explain
    from trainables.errors import UserError

    with pytest.raises(UserError) as info:
        yield info
    assert re.search(match, explain(info.value)), explain(info.value)


def pytest_collection_modifyitems(config, items):
    """The cluster test takes about 30 minutes: it runs only when asked for by name (`-m cluster`),
    and is skipped, visibly, everywhere else (the default run, `-m "not slow"`)."""
    if "cluster" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="the on-prem cluster test runs only with `pytest -m cluster` (docs/cluster.md)")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)
