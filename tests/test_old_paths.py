"""The engine's modules moved from the top of search/ into its wings (docs/architecture.md), but a
study folder keeps what Ray Tune pickled by the old paths (tune/: the tuner with its searcher,
schedulers, stoppers and callbacks, the searcher's own state): each old path must still import as
the very module it became, so that a study started before the move resumes after it."""

from __future__ import annotations

import importlib
import json
import pickle
import pickletools
import subprocess
import sys

import pytest

from search import MOVED
from tests.conftest import REPO

# What Tune pickles from hpsearch (search/tune/tuner.py builds them), and what else names a class
# by its module: each by its old path.
PICKLED = [
    ("search.asha", "PersistentASHA"), ("search.asha", "PromotingASHA"), ("search.asha", "PacedSearch"),
    ("search.budget", "StudyBudget"), ("search.budget", "FailureBudget"), ("search.budget", "BudgetPlan"),
    ("search.searcher", "StoredSearch"), ("search.store", "Store"), ("search.mirror", "MirroredStorage"),
    ("search.sampler", "FidelityAwareTPE"), ("search.cores", "CoreSharing"), ("search.trial", "tune_trial"),
    ("search.trial_logger", "TrialLogger"), ("search.request", "StudyRequest"),
    # old modules whose names are now wings: their packages hand the names out
    ("search.tracking", "Tracker"), ("search.tracking", "ChildRun"), ("search.results", "StudyResults"),
]


def test_every_old_path_is_the_module_it_became():
    for old, new in MOVED.items():
        module = importlib.import_module(f"search.{old}")
        assert module is importlib.import_module(new), old
        assert module.__name__ == new and module.__spec__.name == new, old  # the module keeps its own name
    assert not set(MOVED) & {p.stem for p in (REPO / "search").glob("*.py")}, "an old path that is a file again"
    assert set(MOVED.values()) <= {".".join(p.relative_to(REPO).with_suffix("").parts)
                                   for p in (REPO / "search").rglob("*.py")}, "an alias to no module"


def by_old_path(module: str, name: str) -> bytes:
    """The pickle of `module.name` as it was made before the move, under its old module path."""
    obj = getattr(importlib.import_module(module), name)
    new = obj.__module__
    obj.__module__ = module
    try:
        return pickle.dumps(obj, protocol=pickle.DEFAULT_PROTOCOL)
    finally:
        obj.__module__ = new


def test_what_was_pickled_by_an_old_path_unpickles():
    """In a fresh interpreter, as a resumed driver (or a Ray worker) meets Tune's pickles."""
    blobs = [by_old_path(module, name) for module, name in PICKLED]
    for blob, (module, _) in zip(blobs, PICKLED):
        assert module.encode() in blob
    loader = ("import pickle, sys\n"
              "blobs = pickle.loads(sys.stdin.buffer.read())\n"
              "for blob in blobs:\n"
              "    obj = pickle.loads(blob)\n"
              "    print(obj.__module__, obj.__qualname__)\n")
    proc = subprocess.run([sys.executable, "-c", loader], input=pickle.dumps(blobs), capture_output=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    loaded = proc.stdout.decode().splitlines()
    expected = [f"{getattr(importlib.import_module(m), n).__module__} {n}" for m, n in PICKLED]
    assert loaded == expected


def test_old_paths_cost_nothing_until_asked_for():
    """`import search` (every command's first step) installs the aliases and imports none of them."""
    code = ("import sys, search\n"
            "print(sorted(m for m in sys.modules if m.startswith('search')))\n"
            "print([m for m in ('torch', 'ray', 'mlflow', 'optuna', 'pandas') if m in sys.modules])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['search']", "[]"]


def to_old_paths(data: bytes) -> tuple[bytes, int]:
    """`data`, a pickle, with every module path that moved written as it was before the move
    (search.tune.budget -> search.budget), and how many it rewrote. The strings change length, so
    the frames (optional to an unpickler) are left out."""
    old_of = {new: f"search.{old}" for old, new in MOVED.items()}
    ops = list(pickletools.genops(data))
    out, count = bytearray(), 0
    for i, (op, arg, pos) in enumerate(ops):
        raw = data[pos:ops[i + 1][2] if i + 1 < len(ops) else len(data)]
        if op.name == "FRAME":
            continue
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE") and arg in old_of:
            text = old_of[arg].encode()
            raw, count = b"\x8c" + bytes([len(text)]) + text, count + 1  # SHORT_BINUNICODE
        elif op.name in ("GLOBAL", "INST") and arg.split(" ")[0] in old_of:
            module, name = arg.split(" ", 1)
            raw, count = op.code.encode("latin-1") + f"{old_of[module]}\n{name}\n".encode(), count + 1
        out += raw
    return bytes(out), count


def test_a_pickle_rewritten_to_the_old_paths_is_the_same_object():
    from search.results.optuna_store import Store
    from search.tune.budget import BudgetPlan

    for obj in (Store(url="sqlite:///x.db", name="a-study"), BudgetPlan(budget_s=600.0)):
        for protocol in (2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
            old, count = to_old_paths(pickle.dumps(obj, protocol=protocol))
            old_path = next(f"search.{o}" for o, n in MOVED.items() if n == type(obj).__module__)
            assert count >= 1 and old_path.encode() in old
            assert type(obj).__module__.encode() not in old
            assert pickle.loads(old) == obj


def to_old_paths_in(path) -> int:
    """Rewrites one file of a study's tune/ folder to the old module paths, as the code before the
    move wrote it; how many it rewrote. Tune keeps pickles (tuner.pkl, the searcher's state, the
    search generator's state, whatever its name ends in) and JSON whose objects it could not write
    as JSON are cloudpickles in hex (the experiment state: the stoppers, among others)."""
    data = path.read_bytes()
    if data[:1] == b"\x80":  # a pickle's PROTO
        data, count = to_old_paths(data)
        path.write_bytes(data)
        return count
    if path.suffix != ".json":
        return 0
    count = 0

    def walk(value):
        nonlocal count
        if isinstance(value, dict):
            if value.get("_type") == "CLOUDPICKLE_FALLBACK":
                data, n = to_old_paths(bytes.fromhex(value["value"]))
                count += n
                return {**value, "value": data.hex()}
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, str) and value.startswith("{"):  # a trial's state: JSON inside JSON
            try:
                inner = json.loads(value)
            except ValueError:
                return value
            return json.dumps(walk(inner))
        return value

    path.write_text(json.dumps(walk(json.loads(data))))
    return count


@pytest.mark.slow
def test_a_study_killed_before_the_move_resumes_after_it(tmp_path, data_root):
    """A real search (Fashion-MNIST, TPE, ASHA, MLflow) killed mid-search, its Tune state then
    written back to the module paths of before the move, as that code pickled it: --resume
    unpickles it through the aliases and finishes the study."""
    from tests.chaos import epochs_done, kill_tree, start_search, wait_for
    from tests.conftest import run_module

    results = tmp_path / "results"
    args = ["fashion_space", "--smoke", "--samples", "4", "--max-epochs", "3", "--name", "old",
            "--results-dir", str(results), "--data-dir", str(data_root)]
    folder = results / "old"
    proc = start_search(*args)
    try:
        wait_for(lambda: epochs_done(folder) >= 3 and any((folder / "tune").glob("searcher-state-*.pkl")), 600,
                 "a few epochs and Tune's saved state")
    finally:
        kill_tree(proc)
    assert not (folder / "best.yaml").exists()

    rewritten = {path.name: to_old_paths_in(path) for path in sorted((folder / "tune").iterdir()) if path.is_file()}
    for kind in ("tuner.pkl", "searcher-state-", "search_gen_state-", "experiment_state-"):
        assert any(name.startswith(kind) and count for name, count in rewritten.items()), (kind, rewritten)
    for path in (folder / "tune").iterdir():  # nothing there names a module where it is now
        data = path.read_bytes() if path.is_file() else b""
        assert not [new for new in MOVED.values() if new.encode() in data or new.encode().hex().encode() in data], \
            path.name

    resumed = run_module("search.run", *args, "--resume", timeout=900)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (folder / "best.yaml").is_file() and (folder / "model.pt").is_file()
