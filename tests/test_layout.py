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
    assert "4 kept, 0 broken" in proc.stdout, proc.stdout


def test_ruff_finds_nothing():
    proc = subprocess.run([tool("ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# search/: the commands at the top, the engine in its wings (docs/architecture.md); the `wings`
# contract in pyproject.toml orders the wings, these say what may lie where.
SEARCH = REPO / "search"
COMMANDS = {"__init__", "__main__", "main", "cli_docs", "run", "check", "report", "predict", "export", "train",
            "compare", "dashboard"}
SHARED_AT_TOP = {"cli", "data_args"}  # what the commands share
WINGS = {"study", "reporting", "tune", "tracking", "results", "util"}


def test_the_top_of_search_holds_the_commands_and_the_wings():
    modules = {p.stem for p in SEARCH.glob("*.py")}
    assert modules == COMMANDS | SHARED_AT_TOP, "a module at the top of search/ that is no command: put it in a wing"
    packages = {p.parent.name for p in SEARCH.glob("*/__init__.py")}
    assert packages == WINGS | {"bench"}


def test_every_module_says_what_it_owns():
    import ast

    for path in sorted(SEARCH.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{path.relative_to(REPO)} has no docstring saying what it owns"


def test_a_wing_imports_nothing_until_a_module_of_it_is_asked_for():
    """Commands start fast (`hpsearch run --help` imports neither torch nor Ray): a wing's
    __init__ imports nothing at its top level (a lazy import inside a function is fine)."""
    import ast

    for wing in sorted(WINGS):
        tree = ast.parse((SEARCH / wing / "__init__.py").read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"search/{wing}/__init__.py: say what the wing holds"
        top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
        assert not top, f"search/{wing}/__init__.py imports at its top: {ast.unparse(top[0])}"


def test_no_code_or_page_names_a_module_by_its_old_path():
    """The old module paths (MOVED in search/__init__.py) live on only for Tune's pickles:
    the code, the tests and the docs name the modules where they are."""
    import re

    from search import MOVED

    old = re.compile(r"(?<![\w/.-])search[./](" + "|".join(MOVED) + r")\b")
    # The project's own folders and top-level files (not git's list: a source archive has no .git).
    files = [p for folder in ("search", "spaces", "trainables", "tests", "docs", "examples", "k8s")
             for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".md", ".toml", ".yaml")]
    files += [p for p in REPO.glob("*") if p.suffix in (".md", ".toml", ".yaml")]
    skip = {REPO / "search" / "__init__.py", REPO / "tests" / "test_old_paths.py"}
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in files if p not in skip and p.is_file()
             for m in old.finditer(p.read_text(encoding="utf-8"))]
    assert not found, found


def test_a_wheel_holds_the_service_but_not_the_benchmarks(tmp_path):
    """What `pip install hpsearch` would install: the commands and every wing, the studies and the
    trainables, but not search/bench (a checkout's, pyproject.toml). Built from a copy of the
    sources, so no build/ or egg-info lands in the repository."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    for name in ("search", "spaces", "trainables"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = (tmp_path / "dist").glob("hpsearch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("search/bench/")]
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    assert {"search", *(f"search/{wing}" for wing in WINGS), "spaces", "trainables"} <= packages
    assert {f"search/{m}.py" for m in COMMANDS | SHARED_AT_TOP} <= set(names)
