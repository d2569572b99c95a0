"""Inputs that used to escape, explode or train silently (issue 12's audit): each is refused
with one line and exit status 2, or handled as documented, and nothing is left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search.results.best_config import BestConfig
from search.util.atomic import atomic_write_text
from spaces.fashion_space import TEXTBOOK_CNN
from tests.conftest import run_cli_here, run_module
from tests.test_export import best
from trainables.errors import UserError
from trainables.model import NetConfig


def one_line_refusal(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", ["../escape", "/tmp/absolute", "a/b", ".", "..", "with space"])
def test_study_names_stay_inside_the_results_folder(tmp_path: Path, name: str) -> None:
    proc = run_cli_here("search.run", "fashion_space", "--name", name, "--results-dir", str(tmp_path / "r"))
    one_line_refusal(proc, "--name", "letters, digits")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "r").exists()


def test_a_negative_seed_is_one_line(tmp_path: Path) -> None:
    one_line_refusal(run_cli_here("search.run", "fashion_space", "--seed", "-1", "--results-dir", str(tmp_path)),
                     "--seed must be between 0 and")


def test_yaml_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    good = best().to_yaml()
    bomb = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 9))
    path = tmp_path / "best.yaml"
    path.write_text(good.replace("data: {}\n", "data:\n  l0: &l0 [x]\n" + "".join("  " + line + "\n" for line in
                                                                              bomb.splitlines())))
    assert path.stat().st_size < 2000
    with pytest.raises(UserError, match="aliases") as err:
        BestConfig.load(path)
    assert len(str(err.value)) < 300


def test_mappings_in_best_yaml_must_be_mappings() -> None:
    with pytest.raises(UserError, match="data must be a mapping"):
        best(data="fashion_mnist")


def test_a_batch_of_one_is_refused() -> None:
    with pytest.raises(UserError, match="batch_size=1"):
        NetConfig.from_flat({**TEXTBOOK_CNN, "batch_size": 1})


def study_folder(root: Path) -> Path:
    folder = root / "study"
    folder.mkdir(parents=True)
    (folder / "study.json").write_text('{"space": "fashion_space", "name": "study"}')
    return folder


@pytest.mark.parametrize("table,content", [("trials.parquet", b"PAR1 not really"), ("trials.csv", b"")])
def test_a_damaged_trials_table_is_one_line(tmp_path: Path, table: str, content: bytes) -> None:
    folder = study_folder(tmp_path)
    (folder / table).write_bytes(content)
    for module in ("search.export", "search.report"):
        one_line_refusal(run_cli_here(module, str(folder)), table)


def test_export_to_a_folder_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    folder = study_folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    one_line_refusal(run_cli_here("search.export", str(folder), "--output", str(out)), "is a folder")
    assert list(out.iterdir()) == []


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("x")  # os.replace cannot put a file over a non-empty folder
    with pytest.raises(OSError):
        atomic_write_text(target, "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_infinite_cells_in_a_table_are_missing_values(tmp_path: Path) -> None:
    from trainables.tables import load_tabular_csv

    rows = pd.DataFrame({"a": [1.0, 2.0, np.inf, 4.0, 5.0, -np.inf, 7.0, 8.0, 9.0, 10.0] * 2,
                         "label": ["x", "y"] * 10})
    rows.to_csv(tmp_path / "t.csv", index=False)
    data = load_tabular_csv(str(tmp_path / "t.csv"), None, "label").for_search(0.25, 0)
    assert np.isfinite(data.mean).all() and np.isfinite(data.std).all()
    assert np.isfinite(data.train.x).all()


def test_credentials_in_a_tracking_uri_are_split_off_and_redacted(monkeypatch) -> None:
    from search.util.credentials import adopt_credentials, redact, split_credentials

    assert split_credentials("http://alice:s%40cret@mlflow.internal:5000/x") == \
        ("http://mlflow.internal:5000/x", "alice", "s@cret")
    assert split_credentials("sqlite:////tmp/mlflow.db") == ("sqlite:////tmp/mlflow.db", None, None)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert adopt_credentials("https://bob:pw@host") == "https://host"
    import os

    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("bob", "pw")
    assert redact("python -m search.run x --tracking-uri http://bob:pw@host:5000") == \
        "python -m search.run x --tracking-uri http://***@host:5000"


def test_a_password_in_the_tracking_uri_is_never_printed(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = run_module("search.run", "fashion_space", "--smoke", "--results-dir", str(tmp_path),
                      "--tracking-uri", f"http://alice:hunter2@127.0.0.1:{port}")
    assert proc.returncode == 2 and "hunter2" not in proc.stdout + proc.stderr, proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr
