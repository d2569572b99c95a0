"""What `hpsearch run` prints when a study ends: the top trials in fixed precision, the test
accuracy, the result files one to a line, and what to do next with this study's own names and
URIs. Formatting only (search.study.study_run gathers the facts), so that a unit test covers every line.

No torch or Ray here; pandas only for the table.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from search.results.files import BEST_FILE, MODEL_FILE, REPORT_FILE, TRIALS_CSV, TRIALS_PARQUET
from search.util.credentials import redact
from search.util.progress import WIDTH, wrap

TOP = 5
MISSING = "-"  # a value the trial never measured (stopped before its first whole epoch, say)
# The result files, in the order they are listed, with what each is for.
FILES = ((BEST_FILE, "the best configuration (hpsearch train retrains it)"),
         (TRIALS_PARQUET, f"every trial, one row each (also {TRIALS_CSV})"),
         (MODEL_FILE, "the final model (hpsearch predict uses it)"),
         (REPORT_FILE, "the report: open it in a browser"))


def cell(column: str, value) -> str:
    """One value as the summary shows it: accuracies and losses to 4 decimals, latencies to 2,
    multiply-adds (millions) to 1, a learning rate in 2 significant digits, any other fraction
    (dropout, momentum) in 4; `-` for nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if "accuracy" in column or "loss" in column:
        return f"{value:.4f}"
    if "latency" in column:
        return f"{value:.2f}"
    if column == "mmacs":
        return f"{value:.1f}"
    if column in ("lr", "weight_decay"):
        return f"{value:.2g}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def top_table(table: pd.DataFrame, columns: list[str], width: int = WIDTH) -> str:
    """The first rows of `table` as fixed-precision text. `columns` in order of importance: the
    ones that would make a line wider than `width` are left out (trials.csv has them all)."""
    shown: list[str] = []
    text = ""
    for column in columns:
        if column not in table:
            continue
        candidate = _render(table, [*shown, column])
        if shown and max(len(line) for line in candidate.splitlines()) > width:
            continue  # a narrower column further on may still fit
        shown, text = [*shown, column], candidate
    return text


def _render(table: pd.DataFrame, columns: list[str]) -> str:
    cells = [[cell(c, v) for c, v in zip(columns, row)] for row in table[columns].itertuples(index=False)]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    # Text columns to the left, numbers to the right, as a reader scans them.
    numeric = [pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c]) for c in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(list(columns)), *(line(r) for r in cells)])


@dataclass
class Summary:
    """The facts of a finished study that its summary shows."""

    name: str
    folder: Path
    metric: str
    test_accuracy: float
    what: str  # "retrained best configuration", or the best trial's own weights
    tracking_uri: str
    # The results directory, where a later command would not find the study by its name alone
    # (not the default one); None where it would.
    results_dir: Path | None = None
    top: pd.DataFrame | None = None  # the top trials, short column names, best first; None under --quiet
    columns: list[str] = field(default_factory=list)  # the top table's columns, most important first
    best: str | None = None  # --quiet: the best configuration in one line, instead of the table
    chosen: str | None = None  # under device limits: which trial was chosen, and why
    files: tuple[str, ...] = ()  # the result files present in the folder
    registered: str | None = None  # the MLflow registry's NAME/VERSION

    def next_commands(self) -> list[str]:
        """This study's own commands: its name, its results directory where that is not the
        default, its tracking store (credentials redacted; a server's UI is its own address)."""
        where = f" --results-dir {shlex.quote(str(self.results_dir))}" if self.results_dir is not None else ""
        name = shlex.quote(self.name)
        uri = redact(self.tracking_uri)
        mlflow = f"open {uri} (the MLflow server's UI)" if uri.startswith(("http://", "https://")) else \
            f"mlflow ui --backend-store-uri {shlex.quote(uri)}"
        return [f"hpsearch report {name}{where}", mlflow, f"hpsearch predict {name} IMAGE{where}"]

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.top is not None:
            out += ["", f"top {min(TOP, len(self.top))} trials by {self.metric}:",
                    *top_table(self.top.head(TOP), self.columns).splitlines(), ""]
        for text in (self.chosen, self.best):
            if text:  # a configuration's every hyperparameter: wrapped, indented under its first line
                out += wrap(text).splitlines()
        out += wrap(f"test accuracy of the {self.what}: {self.test_accuracy:.4f} (measured once, on the "
                    "held-out test set)").splitlines()
        out.append(f"results in {self.folder}{'' if str(self.folder).endswith('/') else '/'}")
        known = dict(FILES)
        width = max((len(f) for f in self.files), default=0) + 2
        out += [f"  {f:<{width}}{known.get(f, '')}".rstrip() for f in self.files]
        if self.registered:
            out.append(f"registered model: {self.registered} (in the MLflow model registry)")
        out.append("next:")
        out += [f"  {command}" for command in self.next_commands()]
        return out

    def text(self) -> str:
        return "\n".join(self.lines())


def result_files(folder: Path) -> tuple[str, ...]:
    """The result files the study folder holds, in the order the summary lists them."""
    return tuple(name for name, _ in FILES if (folder / name).is_file())
