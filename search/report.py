"""`python -m search.report RESULTS_DIR`: a study's report, report.html with PNG figures beside it.

Figures: the anytime curve (best score so far against trial-epochs spent), parallel coordinates
of the hyperparameters, their importances (Optuna's PED-ANOVA on the recorded trials), learning
curves (where ASHA stopped trials), the final model's confusion matrix and per-class accuracy,
and a table of the top configurations. `search.run` writes it at the end of every study.
"""

from __future__ import annotations

import html
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search.atomic import atomic_write_text
from search.cli import Parser, run_cli
from search.files import REPORT_DIR, REPORT_FILE
from search.results import StudyResults, load
from search.trials_table import config_columns, short_names

DPI = 110
TOP_CURVES = 5
TOP_TABLE = 10
MAX_AXES = 10  # parallel-coordinate axes beyond this are unreadable; the least important are left out
SUMMARY_COLUMNS = ["trial", "status", "epochs", "best_epoch", "val_accuracy", "val_loss", "mmacs"]


@dataclass
class Report:
    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- the hyperparameters as an Optuna study --------------------------------------------------

def distributions(results: StudyResults, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Each hyperparameter's search distribution. A define-by-run space is replayed with each
    trial's values (optuna's FixedTrial records what was asked: ranges, log scales, choices);
    a grid, or a space that cannot be replayed, gets categorical distributions over the values
    that were tried, which is what a grid is."""
    import optuna

    found: dict[str, Any] = {}
    study = _study(results.space)
    if study is not None and study.define is not None:
        from spaces.study import SpaceContext

        # No cost cap: the capped upper bounds depend on the cluster; the uncapped space holds every value.
        # The frozen-layer range of a transfer space depends on its backbone: the most any trial froze.
        frozen = max((int(p.get("frozen_layers", 0)) for p in trials), default=0)
        ctx = SpaceContext(study.settings.example_input, study.settings.example_classes, None, frozen)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for params in trials:
                    fixed = optuna.trial.FixedTrial(params)
                    study.define(fixed, ctx)
                    for name, dist in fixed.distributions.items():
                        found.setdefault(name, dist)
            if all(_contains(found[k], v) for params in trials for k, v in params.items() if k in found):
                return found
        except Exception:  # noqa: BLE001 - a space changed since the study ran: fall back below
            pass
        found = {}
    for name in sorted({k for params in trials for k in params}):
        values = {params[name] for params in trials if name in params}
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() for v in values):
            values = {int(v) for v in values}  # a width column with gaps reads back as 32.0
        values = sorted(values, key=lambda v: (str(type(v)), v))
        found[name] = optuna.distributions.CategoricalDistribution(values)
    return found


def _contains(dist, value) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(_coerce(dist, value))))
    except (ValueError, TypeError):
        return False


def _coerce(dist, value):
    """Parquet gives 32.0 for an int column with gaps, numpy scalars for others."""
    import optuna

    if isinstance(dist, optuna.distributions.IntDistribution):
        return int(value)
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return float(value)
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return next((c for c in dist.choices if c == value), value)
    return value


def _study(space: str):
    from spaces.registry import get_study
    from trainables.errors import UserError

    try:
        return get_study(space)
    except UserError:
        return None


def optuna_study(results: StudyResults):
    """The recorded trials as a finished Optuna study (value: each trial's best score)."""
    import optuna

    scored = results.scored()
    trials = [results.params(row) for _, row in scored.iterrows()]
    dists = distributions(results, trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if results.mode == "max" else "minimize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for params, value in zip(trials, scored[results.metric]):
        known = {k: _coerce(dists[k], v) for k, v in params.items() if k in dists}
        study.add_trial(optuna.trial.create_trial(params=known, distributions={k: dists[k] for k in known},
                                                  value=float(value)))
    return study, dists


def searched(dists: dict[str, Any]) -> list[str]:
    return [name for name, dist in dists.items() if not dist.single()]


def importances(results: StudyResults) -> dict[str, float]:
    """Optuna's default evaluator, PED-ANOVA: needs no scikit-learn and, unlike fANOVA, also
    rates conditional parameters (a layer's width that exists only in deeper networks)."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    study, dists = optuna_study(results)
    params = searched(dists)
    if len(study.trials) < 2 or not params:
        return {}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer than 5 trials above the quantile": shown in the caption instead
        return get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), params=params)


# --- figures ---------------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    # Figure without pyplot: no global state, no display needed (the Agg canvas is the default).
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI)
    tmp.replace(path)
    return path


def _metric_label(metric: str) -> str:
    return metric.replace("_", " ").replace("val ", "validation ")


def anytime_figure(results: StudyResults, path: Path, label: str | None = None, ax=None) -> Path | None:
    """Best score so far against trial-epochs spent, with each trial's last score as a dot
    where it finished. Given `ax`, draws onto it (search.compare puts two studies on one axis)."""
    curve = results.anytime()
    if curve.empty:
        return None
    fig = None
    if ax is None:
        fig = _figure(9, 5)
        ax = fig.add_subplot()
    # Held for half a trial-epoch past the last one, so a gain at the very end is visible.
    xs = [*curve["trial_epochs"], curve["trial_epochs"].iloc[-1] + 0.5]
    line, = ax.step(xs, [*curve["best"], curve["best"].iloc[-1]], where="post", lw=2.2,
                    label=label or f"best so far ({results.name})")
    if fig is not None:
        last = curve.groupby("trial").tail(1)
        status = results.table.set_index("trial")["status"].to_dict()
        for name, marker, colour in (("completed", "o", "tab:blue"), ("stopped_early", "v", "tab:orange"),
                                     ("diverged", "x", "tab:red")):
            rows = last[last["trial"].map(status) == name]
            if len(rows):
                ax.scatter(rows["trial_epochs"], rows["value"], marker=marker, s=36, color=colour, zorder=3,
                           label=f"a trial's last score ({name.replace('_', ' ')})")
        ax.set_title(f"{results.name}: optimization history ({len(last)} trials, {len(curve)} trial-epochs)")
    ax.set_xlabel("trial-epochs spent (epochs trained, summed over all trials, in the order they finished)")
    ax.set_ylabel(_metric_label(results.metric))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    return _save(fig, path) if fig is not None else line


def parallel_figure(results: StudyResults, path: Path, order: list[str]) -> Path | None:
    import matplotlib as mpl

    study, dists = optuna_study(results)
    names = [n for n in order if n in dists] + [n for n in searched(dists) if n not in order]
    names = names[:MAX_AXES]
    trials = [t for t in study.trials if t.value is not None]
    if len(trials) < 2 or not names:
        return None
    values = np.array([t.value for t in trials])
    cmap = mpl.colormaps["viridis"]
    norm = mpl.colors.Normalize(values.min(), values.max() if values.max() > values.min() else values.min() + 1e-9)
    fig = _figure(max(9.0, 1.15 * len(names) + 2.5), 5.5)
    ax = fig.add_subplot()
    missing = -0.12
    for trial in sorted(trials, key=lambda t: t.value if results.mode == "max" else -t.value):
        ys = [_position(dists[n], trial.params[n]) if n in trial.params else missing for n in names]
        best = trial is max(trials, key=lambda t: t.value if results.mode == "max" else -t.value)
        ax.plot(range(len(names)), ys, color=cmap(norm(trial.value)), lw=2.6 if best else 1.2,
                alpha=1.0 if best else 0.75, zorder=3 if best else 2)
    for i, name in enumerate(names):
        ax.axvline(i, color="0.3", lw=0.8, zorder=1)
        for y, text in _ticks(dists[name]):
            ax.text(i - 0.04, y, text, ha="right", va="center", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7), zorder=4)
        if any(name not in t.params for t in trials):
            ax.text(i - 0.04, missing, "n/a", ha="right", va="center", fontsize=8, color="0.4", zorder=4)
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
    ax.set_yticks([])
    ax.set_xlim(-0.6, len(names) - 0.8)
    ax.set_ylim(missing - 0.06, 1.06)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=_metric_label(results.metric), pad=0.01)
    shown = f"{len(names)} most important of {len(searched(dists))}" if len(searched(dists)) > len(names) else "all"
    ax.set_title(f"{results.name}: hyperparameters of {len(trials)} trials ({shown} searched; "
                 "axes in importance order, the best trial bold)")
    return _save(fig, path)


def _position(dist, value) -> float:
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        index = next((i for i, c in enumerate(dist.choices) if c == value), 0)
        return index / max(len(dist.choices) - 1, 1) if len(dist.choices) > 1 else 0.5
    lo, hi, v = float(dist.low), float(dist.high), float(value)
    if hi <= lo:
        return 0.5
    if dist.log:
        return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (v - lo) / (hi - lo)


def _ticks(dist) -> list[tuple[float, str]]:
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return [(_position(dist, c), str(c)) for c in dist.choices]
    lo, hi = float(dist.low), float(dist.high)
    integer = isinstance(dist, optuna.distributions.IntDistribution)
    if integer and not dist.log and hi - lo <= 8:
        points = list(range(int(lo), int(hi) + 1))
    elif dist.log:
        decades = [10.0 ** k for k in range(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1)]
        points = [lo, *decades, hi]
    else:
        points = [lo, (lo + hi) / 2, hi]
    if integer:
        points = [round(p) for p in points]
    ends = {points[0], points[-1]}
    # An inner tick right next to an end (10 beside 8 on a log axis) would print on top of it.
    inner = [p for p in points[1:-1] if min(abs(_position(dist, p) - _position(dist, e)) for e in ends) > 0.1]
    return [(_position(dist, p), f"{p:g}") for p in sorted(ends | set(inner))]


def importance_figure(results: StudyResults, imp: dict[str, float], path: Path) -> Path | None:
    if not imp:
        return None
    names = list(imp)[::-1]
    fig = _figure(8, 0.38 * len(names) + 1.6)
    ax = fig.add_subplot()
    bars = ax.barh(names, [imp[n] for n in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
    ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    ax.set_xlim(0, max(imp.values()) * 1.18 + 1e-9)
    n = len(results.scored())
    few = "; fewer than 20 trials: a rough guide only" if n < 20 else ""
    ax.set_title(f"{results.name}: hyperparameter importance for {_metric_label(results.metric)}\n"
                 f"({n} trials{few})", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def curves_figure(results: StudyResults, path: Path) -> Path | None:
    h = results.history
    if h.empty or results.metric not in h:
        return None
    top = list(results.scored()["trial"].head(TOP_CURVES))
    status = results.table.set_index("trial")["status"].to_dict()
    fig = _figure(9, 5.2)
    ax = fig.add_subplot()
    stopped_label = None
    if any(s == "stopped_early" for s in status.values()):
        ax.scatter([], [], marker="X", s=45, color="0.45", label="stopped early by ASHA")
    for trial, rows in h.sort_values("epoch").groupby("trial", sort=False):
        if trial in top:
            continue
        ax.plot(rows["epoch"], rows[results.metric], color="0.7", lw=1, zorder=1)
        if status.get(trial) == "stopped_early":
            ax.scatter(rows["epoch"].iloc[-1:], rows[results.metric].iloc[-1:], marker="X", s=45, color="0.45",
                       zorder=2, label=stopped_label)
            stopped_label = None
    for rank, trial in enumerate(top, 1):
        rows = h[h["trial"] == trial].sort_values("epoch")
        line, = ax.plot(rows["epoch"], rows[results.metric], lw=2.2, marker="o", ms=4, zorder=3,
                        label=f"#{rank} {trial} ({rows[results.metric].max():.3f})")
        if status.get(trial) == "stopped_early":
            ax.scatter(rows["epoch"].iloc[-1:], rows[results.metric].iloc[-1:], marker="X", s=70,
                       color=line.get_color(), zorder=4)
    settings = results.settings
    max_epochs = int(results.state.get("max_epochs") or (settings.max_epochs if settings else h["epoch"].max()))
    if settings is not None and settings.scheduler == "asha":
        rung, label = min(settings.grace_period, max_epochs), "ASHA rung (the worst trials stop here)"
        while rung < max_epochs:
            ax.axvline(rung, color="tab:red", ls=":", lw=1, label=label)
            label = None
            rung *= settings.reduction_factor
    ax.set_xlabel("epoch")
    ax.set_ylabel(_metric_label(results.metric))
    ax.set_xticks(range(1, max_epochs + 1))
    ax.set_xlim(0.7, max_epochs + 0.3)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    others = h["trial"].nunique() - len(top)
    ax.set_title(f"{results.name}: learning curves (top {len(top)} in colour"
                 f"{f', the other {others} grey' if others else ''}; X = stopped early)")
    return _save(fig, path)


def confusion_figure(results: StudyResults, path: Path) -> Path | None:
    if results.confusion is None:
        return None
    matrix = results.confusion.to_numpy()
    classes = [str(c) for c in results.confusion.columns]
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    fig = _figure(13, 5.8)
    left, right = fig.subplots(1, 2, width_ratios=[1.25, 1])
    image = left.imshow(matrix, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if matrix[i, j]:
                left.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                          color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    left.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    left.set_yticks(range(len(classes)), classes, fontsize=8)
    left.set_xlabel("predicted class")
    left.set_ylabel("true class")
    fig.colorbar(image, ax=left, shrink=0.8, label="test images")
    order = np.argsort(per_class)
    bars = right.barh([classes[i] for i in order], per_class[order], color="tab:green")
    right.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
    right.set_xlim(0, 1.12)
    right.set_xlabel("per-class test accuracy (recall)")
    right.tick_params(axis="y", labelsize=8)
    right.grid(axis="x", alpha=0.3)
    total = int(matrix.sum())
    accuracy = matrix.trace() / max(total, 1)
    fig.suptitle(f"{results.name}: final model on {total} test images, accuracy {accuracy:.4f}")
    return _save(fig, path)


# --- the page --------------------------------------------------------------------------------

CAPTIONS = {
    "history": "Optimization history: the best {metric} found so far against the trial-epochs spent (the "
               "search's cost), and each trial's last score where it finished. A curve that flattens early "
               "means more trials would add little.",
    "parallel": "Parallel coordinates: one line per trial, coloured by its best {metric}. Categorical values "
                "sit at labelled positions, log-scaled ranges (lr, weight decay) on a log axis; n/a marks a "
                "conditional hyperparameter the trial did not have (e.g. a layer it lacks).",
    "importance": "Hyperparameter importance: Optuna's PED-ANOVA evaluator on the recorded trials "
                  "(how much each hyperparameter matters for reaching the top scores).",
    "curves": "Learning curves: {metric} per epoch. The top trials are in colour; the rest are grey, and "
              "an X marks where ASHA stopped a trial that was not keeping up.",
    "confusion": "The retrained best configuration, tested once on images the search never saw: "
                 "confusion matrix (rows: true class) and per-class accuracy.",
}


def top_table(results: StudyResults, k: int = TOP_TABLE) -> pd.DataFrame:
    scored = results.scored().head(k)
    params = [c for c in config_columns(scored) if scored[c].nunique(dropna=True) > 1 or len(scored) == 1]
    columns = [c for c in SUMMARY_COLUMNS if c in scored] + params
    return short_names(scored[columns])


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
    if results.best is not None:
        facts["test accuracy"] = f"{results.best.metrics.get('test_accuracy', math.nan):.4f} " \
                                 f"(retrained {results.best.epochs} epochs, measured once)"
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
    rows = "".join("<tr>" + "".join(f"<td>{e(_format(v))}</td>" for v in row) + "</tr>"
                   for row in table.itertuples(index=False))
    head = "".join(f"<th>{e(c)}</th>" for c in table.columns)
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
<h2>Top {len(table)} configurations (by {e(results.metric)})</h2>
<div class="wide"><table class="top"><tr>{head}</tr>{rows}</table></div>
{best_yaml}
</body></html>
"""


def _yaml(mapping: dict) -> str:
    import yaml

    return yaml.safe_dump(mapping, sort_keys=False)


def write_report(folder: str | Path) -> Report:
    """Read a study folder and write report.html plus report/*.png into it."""
    results = load(folder)
    out = results.folder / REPORT_DIR
    report = Report(html=results.folder / REPORT_FILE)
    imp = importances(results)
    report.importances = imp
    made = {
        "history": anytime_figure(results, out / "history.png"),
        "parallel": parallel_figure(results, out / "parallel.png", list(imp)),
        "importance": importance_figure(results, imp, out / "importance.png"),
        "curves": curves_figure(results, out / "curves.png"),
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
    "confusion": "No confusion matrix: the final retrain has not run (resume the study to run it).",
}


def build_parser() -> Parser:
    p = Parser(prog="python -m search.report", description=__doc__.splitlines()[0])
    p.add_argument("results_dir", help="one study's results folder, as printed by search.run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = write_report(args.results_dir)
    print(f"report: {report.html} ({len(report.figures)} figures in {report.html.parent / REPORT_DIR})")
    for note in report.notes:
        print(f"note: {note}")
    return 0


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
