"""The end of `hpsearch run`'s output (search.study.summary), line by line: the top trials in fixed
precision with `-` for what a trial never measured, the result files one to a line, and the
next commands with this study's own name, results directory and tracking store."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from search.study.summary import Summary, cell, result_files, top_table

TOP = pd.DataFrame({
    "trial": ["trial_003", "trial_001", "trial_002"],
    "status": ["completed", "paused", "stopped_early"],
    "epochs_seen": [2.0, 0.25, 0.25],
    "best_epoch": [2, 0, 0],
    "val_accuracy": [0.812345, 0.7, math.nan],
    "mmacs": [4.2345, 0.71, 1.0],
    "latency_ms_b1": [0.456, math.nan, math.nan],
    "lr": [0.0031234, 0.01, 0.0005],
    "activation": ["relu", "gelu", math.nan],  # a conditional hyperparameter a trial did not have
})
COLUMNS = list(TOP.columns)


def summary(**changes) -> Summary:
    facts = dict(name="quick", folder=Path("/r/quick"), metric="val_accuracy", test_accuracy=0.76301,
                 what="retrained best configuration", tracking_uri="sqlite:////r/mlflow.db", top=TOP,
                 columns=COLUMNS, files=("best.yaml", "trials.parquet", "model.pt", "report.html"))
    return Summary(**{**facts, **changes})


def test_values_have_fixed_precision_and_a_dash_for_what_was_never_measured():
    assert cell("val_accuracy", 0.812345) == "0.8123" and cell("val_loss", 1.5) == "1.5000"
    assert cell("latency_ms_b1", 0.456) == "0.46" and cell("mmacs", 4.2345) == "4.2"
    assert cell("lr", 0.0031234) == "0.0031" and cell("epochs_seen", 0.25) == "0.25" and cell("best_epoch", 2) == "2"
    assert cell("dropout", 0.385465) == "0.3855" and cell("epochs_seen", 2.0) == "2"
    for never in (math.nan, None, pd.NA):
        assert cell("latency_ms_b1", never) == "-"
    assert cell("batch_norm", True) == "True" and cell("activation", "relu") == "relu"


def test_the_table_has_no_nan_and_stays_within_the_width():
    text = top_table(TOP, COLUMNS, width=200)
    lines = text.splitlines()
    assert "nan" not in text.lower() and len(lines) == 4
    assert lines[0].split() == COLUMNS
    assert lines[1].split() == ["trial_003", "completed", "2", "2", "0.8123", "4.2", "0.46", "0.0031", "relu"]
    assert lines[3].split() == ["trial_002", "stopped_early", "0.25", "0", "-", "1.0", "-", "0.0005", "-"]
    # Numbers line up on the right, under their header's end.
    assert lines[0].index("val_accuracy") + len("val_accuracy") == lines[1].index("0.8123") + len("0.8123")
    usual = top_table(TOP, COLUMNS).splitlines()  # 100 columns: the last hyperparameter does not fit
    assert usual[0].split() == COLUMNS[:-1] and all(len(line) <= 100 for line in usual)
    narrow = top_table(TOP, COLUMNS, width=60)  # what does not fit is left out, the first columns kept
    assert all(len(line) <= 60 for line in narrow.splitlines())
    assert narrow.splitlines()[0].split()[:3] == ["trial", "status", "epochs_seen"]


def test_the_summary_lists_the_files_one_to_a_line_then_what_to_do_next():
    lines = summary().lines()
    assert lines[:2] == ["", "top 3 trials by val_accuracy:"]
    assert "test accuracy of the retrained best configuration: 0.7630 (measured once, on the held-out test set)" \
        in lines
    start = lines.index("results in /r/quick/")
    assert [line.split()[0] for line in lines[start + 1:start + 5]] == ["best.yaml", "trials.parquet", "model.pt",
                                                                       "report.html"]
    assert lines[-4:] == ["next:", "  hpsearch report quick", "  mlflow ui --backend-store-uri sqlite:////r/mlflow.db",
                          "  hpsearch predict quick IMAGE"]
    assert all(len(line) <= 100 for line in lines) and not any("nan" in line.lower() for line in lines)


def test_the_next_commands_name_a_results_dir_that_is_not_the_default_and_never_a_password():
    s = summary(results_dir=Path("/my results"), tracking_uri="http://alice:secret@mlflow.lab:5000",
                registered="fashion-cnn/3")
    lines = s.lines()
    assert "registered model: fashion-cnn/3 (in the MLflow model registry)" in lines
    assert lines[-3:] == ["  hpsearch report quick --results-dir '/my results'",
                          "  open http://***@mlflow.lab:5000 (the MLflow server's UI)",
                          "  hpsearch predict quick IMAGE --results-dir '/my results'"]
    assert "secret" not in s.text()


def test_quiet_shows_the_best_configuration_wrapped_instead_of_the_table():
    best = "best: trial_003 (val_accuracy 0.8123): " + " ".join(f"param_{i}=value_{i}" for i in range(20))
    lines = summary(top=None, best=best).lines()
    assert lines[0].startswith("best: trial_003") and lines[1].startswith("  param_")
    assert all(len(line) <= 100 for line in lines) and "top" not in lines[0]


def test_result_files_are_those_the_folder_holds(tmp_path):
    for name in ("model.pt", "best.yaml", "notes.txt"):
        (tmp_path / name).write_text("")
    assert result_files(tmp_path) == ("best.yaml", "model.pt")
