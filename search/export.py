"""Export a study's best configurations, or its accuracy-cost front.

STUDY is a finished study: its name in the results directory, or its folder. By default the best
configuration alone, as the best.yaml that `hpsearch train` retrains; with --top K the K best as a
list; with --pareto every trial that no other beats on both score and cost (multiply-adds or
latency), cheapest first. YAML or JSON, to standard output or to --output. Also
`python -m search.export`.
"""

# The entries are search.results.best_config's BestConfig; the front is search.results.front's.

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from search.results.best_config import BestConfig
from search.results.files import BEST_FILE
from search.results.folder import StudyResults, load
from search.results.front import COSTS, pareto_front
from search.util.atomic import atomic_write_text
from trainables.errors import UserError
from trainables.model import NetConfig


def top_configs(folder: Path, k: int) -> list[BestConfig]:
    """The best `k` configurations of a study, best first, each retrainable as it stands. The
    best is best.yaml itself (with its test score) once the study has run its final retrain."""
    results = load(folder)
    scored = results.scored()
    if "best_epoch" in scored:  # a trial stopped inside its first epoch has no epoch count to retrain for
        scored = scored[scored["best_epoch"] >= 1]
    scored = scored.head(k)
    if scored.empty:
        raise UserError(f"{folder}: no trial of this study has a score to export")
    return [_entry(results, row, {"rank": rank}) for rank, (_, row) in enumerate(scored.iterrows(), 1)]


def pareto_configs(folder: Path, cost: str = "mmacs") -> list[BestConfig]:
    """The study's accuracy-cost front (search.results.front.pareto_front), cheapest first: each entry
    retrainable, with its place on the front and its costs."""
    results = load(folder)
    if cost != "mmacs" and cost not in results.table:
        raise UserError(f"{folder}: its trials have no {cost} (a study from before latency was measured)",
                        option="cost", fix="mmacs")
    front = pareto_front(results.table, results.metric, results.mode, cost)
    if front.empty:
        raise UserError(f"{folder}: no trial trained a whole epoch with a known {cost}; there is no front to export")
    return [_entry(results, row, {"front": place, "front_cost": cost})
            for place, (_, row) in enumerate(front.iterrows(), 1)]


def _entry(results: StudyResults, row: pd.Series, place: dict[str, Any]) -> BestConfig:
    """One trial of the table as a best.yaml entry: where it stands (`place`), its costs and,
    under device limits, whether it fits them."""
    import dataclasses

    settings = results.settings
    if settings is None and results.best is None:
        raise UserError(f"{results.folder}: study {results.space!r} is no longer registered; cannot tell its dataset")
    cost = {c: float(row[c]) for c in COSTS if c in row and pd.notna(row[c])}
    limited = results.limits.any
    search = {"name": results.name, "trial": str(row["trial"]), **place,
              **({"cv": results.state["cv"]} if results.state.get("cv") else {}),
              **({"cost": cost} if cost else {}),
              **({"fits": bool(row["fits"])} if limited and "fits" in row else {})}
    search["results_dir"] = str(results.folder)
    best = results.best
    if best is not None and best.search.get("best_trial") == row["trial"]:
        return dataclasses.replace(best, search={**best.search, **search})
    metrics = {m: float(row[m]) for m in (results.metric, "val_loss", f"{results.metric}_std")
               if m in row and pd.notna(row[m])}
    return BestConfig(
        space=results.space,
        dataset=best.dataset if best is not None else settings.dataset,
        hyperparameters=NetConfig.from_flat(results.params(row)).to_flat(),
        epochs=int(row["best_epoch"]),
        seed=int(results.state.get("seed", 0)),
        val_fraction=best.val_fraction if best is not None else settings.val_fraction,
        metrics=metrics,
        search=search,
        data=best.data if best is not None else {},
        classes=best.classes if best is not None else [],
        versions=best.versions if best is not None else {},
        git_commit=best.git_commit if best is not None else "unknown",
    )


def render(configs: list[BestConfig], fmt: str, single: bool) -> str:
    import json

    body: Any = configs[0].to_dict() if single else [c.to_dict() for c in configs]
    if fmt == "json":
        return json.dumps(body, indent=2) + "\n"
    return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


PROG = "python -m search.export"


def build_parser(prog: str = PROG):
    from search.cli import Parser, describe
    from search.results.locate import RESULTS_DIR_HELP, STUDY_HELP

    p = Parser(prog=prog, description=describe(__doc__))
    p.add_argument("study", metavar="STUDY", help=STUDY_HELP)
    p.add_argument("--top", type=int, default=None, metavar="K",
                   help="export the K best configurations as a list (default 1: the best alone, "
                        "in the form hpsearch train reads)")
    p.add_argument("--pareto", action="store_true",
                   help="export the accuracy-cost front instead: every trial no other beats on both score and "
                        "cost, cheapest first, with its costs (and, under --max-mmacs/--max-latency-ms, fits)")
    p.add_argument("--cost", choices=tuple(COSTS), default="mmacs",
                   help="the front's cost (with --pareto): multiply-adds (default) or measured latency")
    p.add_argument("--format", choices=("yaml", "json"), default=None,
                   help="output format (default: from --output's suffix, else yaml)")
    p.add_argument("--output", "-o", default=None, metavar="FILE", help="write here instead of to standard output")
    p.add_argument("--results-dir", default=None, help=RESULTS_DIR_HELP)
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    import sys

    from search.results.locate import find_study

    args = build_parser(prog).parse_args(argv)
    if args.pareto and args.top is not None:
        raise UserError("--top and --pareto choose different lists; pass one of them")
    top = 1 if args.top is None else args.top
    if top < 1:
        raise UserError(f"--top must be 1 or more, got {top}")
    output = Path(args.output) if args.output else None
    fmt = args.format or ("json" if output is not None and output.suffix.lower() == ".json" else "yaml")
    if output is not None and not output.parent.is_dir():
        raise UserError(f"--output {output}: folder {output.parent} does not exist")
    if output is not None and output.is_dir():
        raise UserError(f"--output {output} is a folder; name a file, e.g. {output / BEST_FILE}")
    folder = find_study(args.study, args.results_dir)
    configs = pareto_configs(folder, args.cost) if args.pareto else top_configs(folder, top)
    unfit = [c.search["trial"] for c in configs if c.search.get("fits") is False]
    if unfit:
        print(f"note: {', '.join(unfit)} exceed{'s' if len(unfit) == 1 else ''} the study's device limits "
              "(fits: false) and cannot be its best", file=sys.stderr)
    if not args.pareto and len(configs) < top:
        print(f"note: only {len(configs)} trials have a score after a whole epoch (trials stopped inside "
              "their first epoch cannot be retrained); exporting those", file=sys.stderr)
    text = render(configs, fmt, single=top == 1 and not args.pareto)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(output, text)
        print(f"wrote {len(configs)} configuration{'s' if len(configs) > 1 else ''} to {output}", file=sys.stderr)
    return 0


def cli() -> None:
    from search.cli import entry_prog, run_cli

    run_cli(lambda: main(prog=entry_prog("search.export")))


if __name__ == "__main__":
    cli()
