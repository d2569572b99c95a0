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


@contextlib.contextmanager
def user_error(match: str):
    """A library's UserError as the CLI prints it (the library names a setting, the CLI its flag)."""
    from search.cli import explain
    from trainables.errors import UserError

    with pytest.raises(UserError) as info:
        yield info
    assert re.search(match, explain(info.value)), explain(info.value)
