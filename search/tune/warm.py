"""Warm starts (`--warm-start SOURCE...`): the trials of earlier studies, or of an old scikit-learn
GridSearchCV (its `cv_results_` saved as CSV), handed to TPE as observations before its first
proposal, without running them again.

Each earlier trial keeps what it was: a finished one its best score, one stopped early its
fidelity (PRUNED with its intermediate values, search.results.optuna_store), so TPE weighs a 1-epoch score as
one. Only the parameters this study's space has are kept, each re-expressed in this space's
distribution; a value this space cannot propose is left out (TPE handles trials that lack a
parameter), and a trial left with none is skipped. Every added trial carries the user attribute
`warm_start_from`, so the store, the report and best.yaml can tell them from the study's own.

A grid's parameter names rarely match the space's: a small YAML file (`--warm-start-map`) maps them:

    params:                      # the grid's parameter (cv_results_ column param_NAME) -> the space's
      learning_rate_init: lr
      solver: {name: optimizer, values: {adam: adam, sgd: sgd}}
    epochs: 10                   # epochs each grid point trained (default: the study's max epochs)
    score: mean_test_score       # the column to read (default)
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml
from optuna.trial import FrozenTrial, TrialState

from search.results.files import STATE_FILE
from search.results.optuna_store import STEPS_PER_EPOCH, Store
from search.tune.distributions import coerce, contains, space_distributions
from search.util.yaml_safe import load_yaml
from trainables.errors import UserError

FROM = "warm_start_from"  # the user attribute that marks a trial a warm start brought in
GRID_SCORE = "mean_test_score"


@dataclass(frozen=True)
class WarmSource:
    """One earlier search as TPE will see it."""

    label: str  # the study's name, or the CSV's file name
    path: str
    kind: str  # "study" or "grid"
    trials: tuple[FrozenTrial, ...]
    skipped: int  # its trials left out: none of their parameters is in this space, or they failed
    dropped: tuple[str, ...] = ()  # its parameters this space does not have
    # (parameter, how many trials lost its value): values this space cannot propose (lr 1e300)
    outside: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        extra = f", {self.skipped} left out" if self.skipped else ""
        dropped = f"; not in this space: {', '.join(self.dropped)}" if self.dropped else ""
        outside = "; values this space cannot propose, left out: " + ", ".join(
            f"{name} in {n} trial{'s' if n > 1 else ''}" for name, n in self.outside) if self.outside else ""
        return f"{self.label} ({self.kind}, {len(self.trials)} trials{extra}{dropped}{outside})"


# --- which sources ------------------------------------------------------------------------------

def resolve(items: list[str], results_root: Path) -> list[Path]:
    """Each SOURCE as a path: a study folder, a study's name in the results folder, or a CSV.
    Checked before anything starts, so a typo costs one line, not a search."""
    found = []
    for item in items:
        path = Path(item).expanduser()
        if not path.exists() and (results_root / item).is_dir():
            path = results_root / item
        path = path.resolve()
        if path.is_file() and path.suffix.lower() == ".csv":
            found.append(path)
        elif path.is_dir() and (path / STATE_FILE).is_file():
            found.append(path)
        elif path.is_dir():
            raise UserError(f"--warm-start {item!r}: {path} has no {STATE_FILE}, so it is not a study's results "
                            "folder; pass a study folder hpsearch run wrote, a study name in --results-dir, or a CSV")
        else:
            raise UserError(f"--warm-start {item!r}: no such study in {results_root} and no such file; pass a "
                            "study folder, a study name in --results-dir, or a GridSearchCV cv_results_ CSV")
    return found


def load_sources(paths: list[Path], define, ctx, metric: str, mode: str, max_epochs: int,
                 mapping: Path | None = None) -> list[WarmSource]:
    """The earlier trials of every source, in this space's terms (`define` and `ctx`: the space as
    this study will search it)."""
    dists = space_distributions(define, ctx)
    sources = []
    for path in paths:
        if path.is_file():
            sources.append(grid_source(path, dists, max_epochs, read_mapping(mapping, dists), metric))
        else:
            sources.append(study_source(path, dists, metric, mode))
    return sources


def check_sources(paths: list[Path], define, ctx, metric: str, mode: str, max_epochs: int,
                  mapping: Path | None, dataset: str) -> None:
    """Every source read as the study will read it, before its data loads and Ray starts (the
    study reads them again then, in the space as the cluster caps it): a bad mapping, a grid's
    impossible scores or a study of another dataset cost one line, not a minute. `ctx`: the space
    uncapped (its example input), which holds every value a capped one holds."""
    from search.results.folder import load

    for path in paths:
        if path.is_dir():
            data = load(path).state.get("data") or {}
            theirs = data.get("dataset") if isinstance(data, dict) else None
            if theirs is not None and theirs != dataset:
                raise UserError(f"--warm-start {path}: that study's trials were scored on {theirs}, this one runs on "
                                f"{dataset}; warm-start only from studies of the same data")
    load_sources(paths, define, ctx, metric, mode, max_epochs, mapping)


def trials_of(sources: list[WarmSource]) -> list[FrozenTrial]:
    return [t for s in sources for t in s.trials]


# --- earlier hpsearch studies -------------------------------------------------------------------

def study_source(folder: Path, dists: dict[str, Any], metric: str, mode: str) -> WarmSource:
    from search.results.folder import load

    earlier = load(folder)
    name = earlier.name
    if earlier.metric != metric or earlier.mode != mode:
        raise UserError(f"--warm-start {folder}: that study {'maximised' if earlier.mode == 'max' else 'minimised'} "
                        f"{earlier.metric}, this one {'maximises' if mode == 'max' else 'minimises'} {metric}; "
                        "warm-start only from studies scored the same way")
    store = Store.of_folder(folder)
    try:
        stored = store.load().get_trials(deepcopy=False) if store.exists() else None
    except UserError:
        stored = None  # its database server is gone: its trials table still tells
    if stored is not None:
        return from_store(stored, name, folder, dists)
    else:  # a grid study, or one from before the store: its trials table
        candidates = []
        for _, row in earlier.scored().iterrows():
            epochs = float(row.get("epochs_seen", row.get("epochs", 0)) or 0)
            state_ = TrialState.COMPLETE if row.get("status") == "completed" else TrialState.PRUNED
            value = float(row[metric])
            candidates.append((earlier.params(row), state_, value, {round(epochs * STEPS_PER_EPOCH): value}, epochs))
    return _source(name, folder, "study", candidates, dists)


def from_store(stored: list[FrozenTrial], label: str, path: Path, dists: dict[str, Any]) -> WarmSource:
    """An earlier study's own trials from its Optuna store (what it was itself warm-started from,
    the user can name too)."""
    candidates = [(t.params, t.state, t.user_attrs.get("best_score"), dict(t.intermediate_values),
                   float(t.user_attrs.get("epochs_seen", 0.0)))
                  for t in stored if FROM not in t.user_attrs]
    return _source(label, path, "study", candidates, dists)


def _source(label: str, path: Path, kind: str, candidates, dists: dict[str, Any]) -> WarmSource:
    trials, skipped, dropped, outside = [], 0, set(), Counter()
    for params, state, best, intermediate, epochs in candidates:
        if state not in (TrialState.COMPLETE, TrialState.PRUNED) or best is None:
            skipped += 1
            continue
        dropped |= {k for k in params if k not in dists}
        kept = {k: coerce(dists[k], v) for k, v in params.items() if k in dists and contains(dists[k], v)}
        outside.update(k for k in params if k in dists and k not in kept)
        if not kept:
            skipped += 1
            continue
        trials.append(optuna.trial.create_trial(
            state=state, value=float(best) if state == TrialState.COMPLETE else None,
            params=kept, distributions={k: dists[k] for k in kept},
            intermediate_values={int(k): float(v) for k, v in intermediate.items()} or None,
            user_attrs={FROM: label, "best_score": float(best), "epochs_seen": epochs},
        ))
    return WarmSource(label, str(path), kind, tuple(trials), skipped, tuple(sorted(dropped)),
                      tuple(sorted(outside.items())))


# --- an old scikit-learn grid -------------------------------------------------------------------

@dataclass(frozen=True)
class GridMap:
    """How a GridSearchCV's parameters read in this space (see the module's docstring)."""

    params: dict[str, str]  # grid parameter -> space parameter
    values: dict[str, dict[str, Any]]  # grid parameter -> {grid value (as text): space value}
    epochs: float | str | None = None  # epochs per grid point, or the grid parameter holding them
    score: str = GRID_SCORE


def read_mapping(path: Path | None, dists: dict[str, Any]) -> GridMap | None:
    if path is None:
        return None
    try:
        body = load_yaml(Path(path).read_bytes().decode("utf-8")) or {}  # no aliases: no gigabytes from a few bytes
    except UnicodeDecodeError as e:
        raise UserError(f"--warm-start-map {path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8"
                        ) from None
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"--warm-start-map {path}: cannot read it ({str(e).splitlines()[0]})") from None
    if not isinstance(body, dict) or not isinstance(body.get("params", {}), dict):
        raise UserError(f"--warm-start-map {path}: expected a mapping with 'params: {{GRID_NAME: SPACE_NAME}}'")
    unknown = set(body) - {"params", "epochs", "score"}
    if unknown:
        raise UserError(f"--warm-start-map {path}: unknown keys {', '.join(sorted(map(str, unknown)))} "
                        "(expected params, epochs, score)")
    params, values = {}, {}
    for grid_name, target in (body.get("params") or {}).items():
        name = target.get("name") if isinstance(target, dict) else target
        if not isinstance(name, str) or name not in dists:
            raise UserError(f"--warm-start-map {path}: {grid_name} maps to {name!r}, which is not a parameter of "
                            f"this space ({', '.join(sorted(dists))})")
        params[str(grid_name)] = name
        given = target.get("values") if isinstance(target, dict) else None
        if given is not None and not isinstance(given, dict):
            raise UserError(f"--warm-start-map {path}: the values of {grid_name} must be a mapping "
                            f"{{GRID_VALUE: SPACE_VALUE}}, not {given!r}"[:300])
        if given:
            values[str(grid_name)] = {str(k): v for k, v in given.items()}
    epochs = body.get("epochs")
    if not (epochs is None or isinstance(epochs, str) or _positive_number(epochs)):
        raise UserError(f"--warm-start-map {path}: epochs must be the epochs each grid point trained (a positive "
                        f"number) or the name of the grid parameter holding them, not {epochs!r}"[:300])
    score = body.get("score", GRID_SCORE)
    if not isinstance(score, str):
        raise UserError(f"--warm-start-map {path}: score must name the grid's score column, not {score!r}"[:300])
    return GridMap(params, values, epochs, score)


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def read_grid(path: Path, score: str = GRID_SCORE) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - pandas' parse errors are many; one line names the file
        raise UserError(f"--warm-start {path}: not a readable CSV ({type(e).__name__})") from None
    grid_params = [c for c in table.columns if c.startswith("param_")]
    if score not in table.columns or not grid_params:
        raise UserError(f"--warm-start {path}: not a GridSearchCV cv_results_ table (it needs {score} and "
                        "param_NAME columns); save it with pandas.DataFrame(search.cv_results_).to_csv(PATH)")
    return table


def grid_folds(table: pd.DataFrame) -> int:
    """Cross-validation folds the grid scored each point on (split0_test_score...)."""
    return sum(1 for c in table.columns if c.startswith("split") and c.endswith("_test_score")) or 1


def grid_epochs(table: pd.DataFrame, mapping: GridMap | None, max_epochs: int) -> pd.Series:
    epochs = mapping.epochs if mapping is not None else None
    if isinstance(epochs, str):
        column = epochs if epochs.startswith("param_") else f"param_{epochs}"
        if column not in table:
            raise UserError(f"--warm-start-map: epochs names {epochs!r}, which is not a parameter of the grid")
        found = pd.to_numeric(table[column], errors="coerce")
        bad = found.notna() & ~(np.isfinite(found) & (found > 0))
        if bad.any():
            row = int(bad.idxmax())
            raise UserError(f"--warm-start-map: epochs come from {column}, whose row {row} says "
                            f"{_shown(table[column][row])}; epochs must be positive numbers")
        return found.fillna(max_epochs)
    return pd.Series(float(epochs if epochs is not None else max_epochs), index=table.index)


def _shown(value) -> str:
    """A cell as the user wrote it: text quoted, numbers plain (not numpy's repr)."""
    return repr(value) if isinstance(value, str) else f"{value:g}"


def grid_scores(table: pd.DataFrame, score: str, metric: str, path: Path) -> pd.Series:
    """The grid's scores (NaN: a point that failed), each one a score `metric` can have: finite,
    and an accuracy between 0 and 1 (57.3 is a percentage; 1e308 no score at all)."""
    raw = table[score]
    values = pd.to_numeric(raw, errors="coerce")
    text = values.isna() & raw.notna() & (raw.astype(str).str.strip().str.lower() != "nan")
    bad = text | (values.notna() & ~np.isfinite(values))
    if "accuracy" in metric:
        bad |= values.notna() & ((values < 0) | (values > 1))
    if bad.any():
        row = int(bad.idxmax())
        what = "an accuracy between 0 and 1" if "accuracy" in metric else "a finite number"
        raise UserError(f"--warm-start {path}: {score} of row {row} is {_shown(raw[row])}, not {what} "
                        f"({int(bad.sum())} such row(s)); TPE would take the grid's scores for {metric}s of its own")
    return values


def grid_source(path: Path, dists: dict[str, Any], max_epochs: int, mapping: GridMap | None,
                metric: str = "val_accuracy") -> WarmSource:
    score = mapping.score if mapping else GRID_SCORE
    table = read_grid(path, score)
    names = {c.removeprefix("param_"): c for c in table.columns if c.startswith("param_")}
    epochs_param = mapping.epochs if mapping is not None and isinstance(mapping.epochs, str) else None
    # The grid's names that are the space's are taken as they are; the mapping adds (or redirects) others.
    mapped = mapping.params if mapping is not None else {}
    rename = {**{n: n for n in names if n in dists and n not in mapped.values() and n != epochs_param}, **mapped}
    if not rename:
        raise UserError(f"--warm-start {path}: none of the grid's parameters ({', '.join(sorted(names))}) is a "
                        f"parameter of this space; map them with --warm-start-map FILE (see docs/warm-starts.md)")
    missing = [n for n in rename if n not in names]
    if missing:
        raise UserError(f"--warm-start-map names {', '.join(missing)}, which the grid in {path} does not have "
                        f"(it has {', '.join(sorted(names))})")
    epochs = grid_epochs(table, mapping, max_epochs)
    scores = grid_scores(table, score, metric, path)
    candidates = []
    for i, row in table.iterrows():
        value = scores[i]
        if pd.isna(value):
            continue  # a grid point that failed (GridSearchCV records NaN)
        params = {}
        for grid_name, space_name in rename.items():
            raw = row[names[grid_name]]
            if pd.isna(raw):
                continue  # a parameter this grid point did not have (a list of grids)
            params[space_name] = (mapping.values.get(grid_name, {}).get(str(raw), raw) if mapping else raw)
        e = float(epochs[i])
        candidates.append((params, TrialState.COMPLETE, float(value), {round(e * STEPS_PER_EPOCH): float(value)}, e))
    dropped = tuple(sorted(n for n in names if n not in rename and n != (epochs_param or "").removeprefix("param_")))
    source = _source(path.name, path, "grid", candidates, dists)
    lost = dict(source.outside)
    for grid_name, space_name in mapped.items():
        tried = sum(space_name in params for params, *_ in candidates)
        if tried and lost.get(space_name, 0) == tried:
            shown = sorted({str(v) for v in table[names[grid_name]].dropna()})
            raise UserError(f"--warm-start-map maps {grid_name} to {space_name}, but none of its values "
                            f"({', '.join(shown[:5])}{' ...' if len(shown) > 5 else ''}) is one {space_name} can take "
                            f"({describe_distribution(dists[space_name])}); map its values (values: {{GRID: SPACE}})")
    return dataclasses.replace(source, dropped=dropped, skipped=source.skipped + len(table) - len(candidates))


def describe_distribution(dist) -> str:
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return ", ".join(map(str, dist.choices))
    return f"{dist.low:g} to {dist.high:g}{' on a log scale' if getattr(dist, 'log', False) else ''}"


def grid_curve(path: Path, mapping_path: Path | None, max_epochs: int, mode: str = "max") -> pd.DataFrame:
    """The grid's anytime curve for the report: best score so far against the epochs it trained,
    points in the order GridSearchCV ran them, each costing its epochs times its folds."""
    mapping = None
    if mapping_path is not None and Path(mapping_path).is_file():
        body = load_yaml(Path(mapping_path).read_text()) or {}
        mapping = GridMap({}, {}, body.get("epochs"), str(body.get("score", GRID_SCORE)))
    score = mapping.score if mapping else GRID_SCORE
    table = read_grid(path, score)
    values = pd.to_numeric(table[score], errors="coerce")
    cost = grid_epochs(table, mapping, max_epochs) * grid_folds(table)
    best = values.cummax() if mode == "max" else values.cummin()
    return pd.DataFrame({"trial_epochs": cost.cumsum(), "best": best.ffill()}).dropna()


# --- in the searcher ---------------------------------------------------------------------------

def not_yet_evaluated(points: list[dict], warm: list[FrozenTrial]) -> list[dict]:
    """Start points an earlier study already ran are not run again: TPE has their scores."""
    def ran(point: dict, trial: FrozenTrial) -> bool:
        return bool(trial.params) and all(k in point and point[k] == v for k, v in trial.params.items())

    return [p for p in points if not any(ran(p, t) for t in warm)]


def warm_counts(store: Store) -> dict[str, int]:
    """Trials each warm-start source gave, from the study's store (for best.yaml and the report)."""
    try:
        if not store.exists():
            return {}
        trials = store.load().get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - a database server that is gone: the count is left out
        return {}
    counts: dict[str, int] = {}
    for t in trials:
        if FROM in t.user_attrs:
            counts[t.user_attrs[FROM]] = counts.get(t.user_attrs[FROM], 0) + 1
    return counts


# --- in the report ------------------------------------------------------------------------------

def earlier_curves(state: dict, max_epochs: int, mode: str) -> list[tuple[str, pd.DataFrame]]:
    """The anytime curve of each source a study was warm-started from, where it can still be read
    (a source moved or deleted since is left out)."""
    from search.results.folder import load

    curves = []
    for source in state.get("warm_start") or ():
        path = Path(source)
        try:
            if path.is_file():
                mapping = state.get("warm_start_map")
                curve = grid_curve(path, Path(mapping) if mapping else None, max_epochs, mode)
                curves.append((f"earlier grid {path.name} (each point: its epochs x {grid_folds(read_grid(path))} "
                               "folds)", curve))
            elif path.is_dir():
                earlier = load(path)
                curves.append((f"earlier study {earlier.name}", earlier.anytime()))
        except (UserError, OSError, ValueError, KeyError):
            continue
    return [(label, curve) for label, curve in curves if not curve.empty]
