"""A study's report as a page: report.html, with its figures beside it in report/, drawn from the
study folder alone (search.results.folder). `hpsearch report` (search/report.py) writes it again;
`hpsearch run` writes it at the end of every study (search.study.study_run), and `hpsearch compare`
formats its values the same way (`_format`).
"""

# The figures are drawn by search.reporting.figures, the importances come from search.reporting.replay, the front from
# search.results.front.

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from search.reporting.figures import (
    _metric_label,
    anytime_figure,
    confusion_figure,
    curves_figure,
    front_figure,
    importance_figure,
    parallel_figure,
)
from search.reporting.replay import importances
from search.results.files import REPORT_DIR, REPORT_FILE
from search.results.folder import StudyResults, load
from search.results.front import pareto_front
from search.results.trials_table import config_columns, short_names
from search.tune.warm import earlier_curves
from search.util.atomic import atomic_write_text

TOP_TABLE = 10
SUMMARY_COLUMNS = ["trial", "status", "epochs", "best_epoch", "val_accuracy", "val_loss", "mmacs", "latency_ms_b1"]
FRONT_COLUMNS = ["trial", "status", "best_epoch", "mmacs", "latency_ms_b1", "latency_ms_b256", "fits"]


@dataclass
class Report:
    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


CAPTIONS = {
    "history": "Optimization history: the best {metric} found so far against the trial-epochs spent (the "
               "search's cost), and each trial's last score where it finished. A curve that flattens early "
               "means more trials would add little. A warm-started study also shows, dashed, the searches it "
               "began from, each against its own trial-epochs.",
    "parallel": "Parallel coordinates: one line per trial, coloured by its best {metric}. Categorical values "
                "sit at labelled positions, log-scaled ranges (lr, weight decay) on a log axis; n/a marks a "
                "conditional hyperparameter the trial did not have (e.g. a layer it lacks).",
    "importance": "Hyperparameter importance: Optuna's PED-ANOVA evaluator on the recorded trials "
                  "(how much each hyperparameter matters for reaching the top scores).",
    "curves": "Learning curves: {metric} per epoch. The top trials are in colour; the rest are grey. A "
              "trial that did not train every epoch ends in a mark saying why: P where it was left paused at "
              "a rung (pause-and-promote resumes only the best of each rung), X where the stopping scheduler "
              "stopped it, a diamond where the time budget ended the search.",
    "front": "Accuracy against cost: each trial that trained at least a whole epoch is a dot at its best "
             "{metric} and its multiply-adds per image (log scale) and, where measured, its inference "
             "latency at batch 1 on the device and in the numerics that trained it (the median of a few timed "
             "passes after a warm-up). The line is the Pareto front: the trials no other trial beats on both "
             "score and cost; the cheapest network for a given score lies on it. Crosses exceed the study's "
             "device limits (--max-mmacs, --max-latency-ms) and are never chosen as its best.",
    "confusion": "The retrained best configuration, tested once on images the search never saw: "
                 "confusion matrix (rows: true class) and per-class accuracy.",
}


def top_table(results: StudyResults, k: int = TOP_TABLE) -> pd.DataFrame:
    scored = results.scored().head(k)
    params = [c for c in config_columns(scored) if scored[c].nunique(dropna=True) > 1 or len(scored) == 1]
    shown = SUMMARY_COLUMNS + (["fits"] if results.limits.any else [])
    columns = [c for c in shown if c in scored] + params
    return short_names(scored[columns])


def front_table(results: StudyResults) -> pd.DataFrame:
    """The trials on the accuracy-cost front (multiply-adds), cheapest first, as the page lists them."""
    front = pareto_front(results.table, results.metric, results.mode, "mmacs")
    columns = [c for c in FRONT_COLUMNS if c in front and (c != "fits" or results.limits.any)]
    columns.insert(3, results.metric)
    return front[columns]


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary(results: StudyResults) -> dict[str, str]:
    scored = results.scored()
    facts = {"study": results.name, "space": results.space, "trials": str(len(results.table)),
             "trial-epochs": f"{results.trial_epochs():g}" if "epochs" in results.table else "?",
             "search wall time": f"{results.wall_minutes():.1f} min"}
    if len(scored):
        facts[f"best {results.metric}"] = f"{scored[results.metric].iloc[0]:.4f} ({scored['trial'].iloc[0]})"
    chosen = results.best.search.get("best_trial") if results.best is not None else None
    if chosen and len(scored) and chosen != scored["trial"].iloc[0]:
        # A top trial over the device limits, or stopped inside its first epoch, is not chosen.
        facts["chosen as best"] = f"{chosen} (the best trial that fits the device limits and trained a whole epoch)"
    if results.best is not None:
        facts["test accuracy"] = f"{results.best.metrics.get('test_accuracy', math.nan):.4f} " \
                                 f"(retrained {results.best.epochs} epochs, measured once)"
    if results.limits.any:
        unfit = int((~results.table["fits"].astype(bool)).sum()) if "fits" in results.table else 0
        facts["device limits"] = f"{results.limits.describe()}: {unfit} trial{'s' if unfit != 1 else ''} exceed" \
                                 f"{'' if unfit != 1 else 's'} them (fits: false), never chosen as the best"
    if results.state.get("warm_start"):
        counts = results.best.search.get("warm_start", {}) if results.best is not None else {}
        facts["warm start"] = "; ".join(
            f"{Path(p).name}" + (f" ({counts[Path(p).name]} trials)" if Path(p).name in counts else "")
            for p in results.state["warm_start"]) + ": TPE began with their trials (dashed in the history figure)"
    if results.state.get("smoke"):
        facts["note"] = "smoke run: a small slice of the data, figures are illustrative only"
    return facts


def render_html(results: StudyResults, report: Report) -> str:
    e = html.escape
    facts = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary(results).items())
    sections = []
    for key, path in report.figures.items():
        rel = path.relative_to(results.folder).as_posix()
        caption = CAPTIONS[key].format(metric=_metric_label(results.metric))
        sections.append(f'<figure id="{key}"><img src="{e(rel)}" alt="{e(key)}"><figcaption>{e(caption)}'
                        "</figcaption></figure>")
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    table = top_table(results)
    rows, head = _html_rows(table)
    front = front_table(results)
    front_rows, front_head = _html_rows(front)
    front_html = ""
    if len(front):
        front_html = (f'<h2>The accuracy-cost front ({len(front)} trials, cheapest first)</h2>'
                      f'<p>No other trial is both cheaper (multiply-adds) and better; '
                      f'<code>hpsearch export {e(str(results.folder))} --pareto</code> exports them.</p>'
                      f'<div class="wide"><table class="front"><tr>{front_head}</tr>{front_rows}</table></div>')
    best_yaml = ""
    if results.best is not None:
        best_yaml = (f"<h2>Best configuration (best.yaml)</h2><pre>"
                     f"{e(_yaml(results.best.hyperparameters))}</pre>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hpsearch report: {e(results.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ color: #555; font-size: 0.9em; max-width: 60em; }}
pre {{ background: #f7f7f7; padding: 0.8em; }}
.wide {{ overflow-x: auto; }}
</style></head><body>
<h1>hpsearch report: {e(results.name)}</h1>
<table class="facts">{facts}</table>
{f'<ul class="notes">{notes}</ul>' if notes else ''}
{''.join(sections)}
{front_html}
<h2>Top {len(table)} configurations (by {e(results.metric)})</h2>
<div class="wide"><table class="top"><tr>{head}</tr>{rows}</table></div>
{best_yaml}
</body></html>
"""


def _html_rows(table: pd.DataFrame) -> tuple[str, str]:
    """A table's body rows and header row as HTML."""
    e = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{e(_format(v))}</td>" for v in row) + "</tr>"
                   for row in table.itertuples(index=False))
    return rows, "".join(f"<th>{e(c)}</th>" for c in table.columns)


def _yaml(mapping: dict) -> str:
    import yaml

    return yaml.safe_dump(mapping, sort_keys=False)


def _max_epochs(results: StudyResults) -> int:
    epochs = results.state.get("max_epochs") or (results.settings.max_epochs if results.settings else None)
    return int(epochs or 1)


def write_report(folder: str | Path) -> Report:
    """Read a study folder and write report.html plus report/*.png into it."""
    results = load(folder)
    out = results.folder / REPORT_DIR
    report = Report(html=results.folder / REPORT_FILE)
    imp = importances(results)
    report.importances = imp
    made = {
        "history": anytime_figure(results, out / "history.png",
                                  earlier=earlier_curves(results.state, _max_epochs(results), results.mode)),
        "parallel": parallel_figure(results, out / "parallel.png", list(imp)),
        "importance": importance_figure(results, imp, out / "importance.png"),
        "curves": curves_figure(results, out / "curves.png"),
        "front": front_figure(results, out / "front.png"),
        "confusion": confusion_figure(results, out / "confusion.png"),
    }
    report.figures = {k: v for k, v in made.items() if v is not None}
    for key in made:
        if made[key] is None:
            report.notes.append(_MISSING[key])
    atomic_write_text(report.html, render_html(results, report))
    return report


_MISSING = {
    "history": "No optimization history: the study has no per-epoch results.",
    "parallel": "No parallel coordinates: fewer than two scored trials, or nothing was searched.",
    "importance": "No importances: fewer than two scored trials, or nothing was searched.",
    "curves": "No learning curves: the study has no per-epoch results.",
    "front": "No accuracy-cost front: no trial trained a whole epoch with a known cost.",
    "confusion": "No confusion matrix: the final retrain has not run (resume the study to run it).",
}
