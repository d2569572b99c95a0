"""The report's figures, each a PNG drawn from a study's results: the anytime curve, parallel
coordinates, importances, learning curves, the accuracy-cost front and the confusion matrix.
matplotlib without pyplot (no global state, no display); `search.compare` draws two studies'
anytime curves with the same code."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from search.reporting.replay import optuna_study, searched
from search.results.folder import StudyResults
from search.results.front import COSTS, counted, pareto_front
from search.util.atomic import atomic_write

DPI = 110
TOP_CURVES = 5
MAX_AXES = 10  # parallel-coordinate axes beyond this are unreadable; the least important are left out


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    # Figure without pyplot: no global state, no display needed (the Agg canvas is the default).
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI))


def _metric_label(metric: str) -> str:
    return metric.replace("_", " ").replace("val ", "validation ")


def anytime_figure(results: StudyResults, path: Path, label: str | None = None, ax=None,
                   earlier: list | None = None) -> Path | None:
    """Best score so far against trial-epochs spent, with each trial's last score as a dot
    where it finished. Given `ax`, draws onto it (search.compare puts two studies on one axis).
    `earlier`: (label, curve) of the searches a warm start began from, drawn dashed on the same
    axis, so the new search shows where it started from."""
    curve = results.anytime()
    if curve.empty:
        return None
    fig = None
    if ax is None:
        fig = _figure(9, 5)
        ax = fig.add_subplot()
    for (name, old), style in zip(earlier or [], ("--", ":", "-.", (0, (5, 1)))):
        xs_old = [*old["trial_epochs"], old["trial_epochs"].iloc[-1] + 0.5]
        ax.step(xs_old, [*old["best"], old["best"].iloc[-1]], where="post", lw=1.6, ls=style, color="0.35",
                label=f"{name}: best so far {old['best'].max() if results.mode == 'max' else old['best'].min():.4f}")
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
    # Where a trial that did not train every epoch ended, and why (search.results.records.FINAL_STATUSES).
    ends = {"stopped_early": ("X", "stopped at a rung by ASHA"), "paused": ("P", "left paused at a rung"),
            "stopped_by_budget": ("D", "stopped by the time budget")}
    for kind, (marker, label) in ends.items():
        if any(s == kind for s in status.values()):
            ax.scatter([], [], marker=marker, s=45, color="0.45", label=label)
    for trial, rows in h.sort_values("epoch").groupby("trial", sort=False):
        if trial in top:
            continue
        ax.plot(rows["epoch"], rows[results.metric], color="0.7", lw=1, zorder=1)
        if status.get(trial) in ends:
            ax.scatter(rows["epoch"].iloc[-1:], rows[results.metric].iloc[-1:], marker=ends[status[trial]][0], s=45,
                       color="0.45", zorder=2)
    for rank, trial in enumerate(top, 1):
        rows = h[h["trial"] == trial].sort_values("epoch")
        line, = ax.plot(rows["epoch"], rows[results.metric], lw=2.2, marker="o", ms=4, zorder=3,
                        label=f"#{rank} {trial} ({rows[results.metric].max():.3f})")
        if status.get(trial) in ends:
            ax.scatter(rows["epoch"].iloc[-1:], rows[results.metric].iloc[-1:], marker=ends[status[trial]][0], s=70,
                       color=line.get_color(), zorder=4)
    settings = results.settings
    max_epochs = int(results.state.get("max_epochs") or (settings.max_epochs if settings else h["epoch"].max()))
    scheduler = (results.state.get("scheduler") or (settings.scheduler if settings else "fifo"))
    if scheduler in ("promotion", "stopping", "asha"):
        rung = min(settings.grace_period if settings else 1.0, max_epochs)
        label = "rung: trials pause here, the best go on" if scheduler == "promotion" else \
            "ASHA rung (the worst trials stop here)"
        while settings is not None and rung < max_epochs:
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
                 f"{f', the other {others} grey' if others else ''})")
    return _save(fig, path)


def front_figure(results: StudyResults, path: Path) -> Path | None:
    """The study's metric against cost (log x), one dot per trial that trained a whole epoch, the
    Pareto front as a highlighted step line with its trials named; beside it the same against the
    measured batch-1 latency where the trials have one. Trials over the device limits are crosses,
    the limits dashed lines."""
    from matplotlib.ticker import FuncFormatter

    table = counted(results.table, results.metric)
    costs = [c for c in ("mmacs", "latency_ms_b1") if c in table and np.isfinite(table[c].astype(float)).any()]
    if "mmacs" not in costs:
        return None
    fig = _figure(6.5 * len(costs), 5)
    axes = fig.subplots(1, len(costs), squeeze=False)[0]
    limits = results.limits
    best = results.best.search.get("best_trial") if results.best is not None else None
    for ax, cost in zip(axes, costs):
        rows = table[np.isfinite(table[cost].astype(float))]
        ok = rows["fits"].astype(bool).to_numpy() if "fits" in rows else np.ones(len(rows), dtype=bool)
        ax.scatter(rows[cost][ok], rows[results.metric][ok], s=28, color="0.55", zorder=2, label="a trial")
        front = pareto_front(results.table, results.metric, results.mode, cost)
        ax.step(front[cost], front[results.metric], where="post", color="tab:blue", lw=2, zorder=3)
        ax.scatter(front[cost], front[results.metric], s=60, color="tab:blue", zorder=4,
                   label=f"the front ({len(front)} trials)")
        for _, row in front.iterrows():
            ax.annotate(str(row["trial"]).removeprefix("trial_"), (row[cost], row[results.metric]),
                        textcoords="offset points", xytext=(4, -11), fontsize=7, color="tab:blue")
        if (~ok).any():  # over the front's dots: a front trial can be over the limits too
            ax.scatter(rows[cost][~ok], rows[results.metric][~ok], s=50, marker="x", color="tab:red", zorder=6,
                       label="over the device limits (fits: false)")
        if best is not None and best in set(rows["trial"]):
            chosen = rows[rows["trial"] == best]
            ax.scatter(chosen[cost], chosen[results.metric], s=190, marker="*", color="gold", edgecolor="black",
                       zorder=5, label=f"the study's best ({best})")
        limit = limits.max_mmacs if cost == "mmacs" else limits.max_latency_ms
        if limit is not None:
            ax.axvline(limit, color="tab:red", ls="--", lw=1, label="the device limit")
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.5, not 5x10^-1
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(f"{cost}: {COSTS[cost]} (log scale)")
        ax.set_ylabel(_metric_label(results.metric))
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="lower right", fontsize=8)
    left_out = len(results.scored()) - len(table)
    fig.suptitle(f"{results.name}: {_metric_label(results.metric)} against cost ({len(table)} trial"
                 f"{'s' if len(table) != 1 else ''} that trained a whole epoch"
                 f"{f', {left_out} stopped inside their first epoch left out' if left_out > 0 else ''})\n"
                 "the line joins the trials no other trial beats on both score and cost", fontsize=10)
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
