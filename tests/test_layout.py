"""The house rules, checked by the test command (and so by CI): the layers and loops written down
as import-linter contracts in pyproject.toml (search above spaces above trainables; trainables
plain torch; no import loops but the model <-> transfer recursion), and ruff's lint. Both tools are
test dependencies: missing, they fail here rather than skip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.is_file(), f"{name} is not installed beside {sys.executable}: pip install -e '.[test]'"
    return str(path)


def test_import_contracts_are_kept():
    proc = subprocess.run([tool("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout, proc.stdout


def test_ruff_finds_nothing():
    proc = subprocess.run([tool("ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
