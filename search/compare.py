"""Compare two studies side by side: a table and a page of curves.

STUDY_A and STUDY_B are studies' names in the results directory, or their folders (e.g. a grid
study against a TPE one). The table prints here; compare.html, with both studies' best score
against the compute spent on one axis and where their best configurations differ, goes to
--output. Also `python -m search.compare`.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from search.cli import Parser, describe, entry_prog, run_cli
from search.reporting.figures import _figure, _metric_label, _save, anytime_figure
from search.reporting.page import _format
from search.results.files import REPORT_FILE
from search.results.folder import StudyResults, load
from search.util.atomic import atomic_write_text
from trainables.errors import UserError


def facts(r: StudyResults) -> dict[str, str]:
    scored = r.scored()
    best = scored.iloc[0] if len(scored) else None
    test = r.best.metrics.get("test_accuracy", math.nan) if r.best is not None else math.nan
    return {
        "space": r.space,
        "trials": str(len(r.table)),
        "trial-epochs": f"{r.trial_epochs():g}" if "epochs" in r.table else "?",
        "wall minutes": f"{r.wall_minutes():.1f}",
        f"best {r.metric}": "-" if best is None else f"{best[r.metric]:.4f} ({best['trial']})",
        "test accuracy": "-" if math.isnan(test) else f"{test:.4f}",
    }


def best_params(r: StudyResults) -> dict:
    if r.best is not None:
        return dict(r.best.hyperparameters)
    scored = r.scored()
    return r.params(scored.iloc[0]) if len(scored) else {}


def config_diff(a: StudyResults, b: StudyResults) -> list[tuple[str, str, str]]:
    """Hyperparameters whose best values differ (absent in one: '-')."""
    pa, pb = best_params(a), best_params(b)
    rows = []
    for key in list(pa) + [k for k in pb if k not in pa]:
        va, vb = pa.get(key), pb.get(key)
        if va != vb:
            rows.append((key, "-" if va is None else _format(va), "-" if vb is None else _format(vb)))
    return rows


def table(a: StudyResults, b: StudyResults) -> pd.DataFrame:
    fa, fb = facts(a), facts(b)
    # Metric names can differ between studies; align rows by position, label by A's.
    return pd.DataFrame({"": list(fa), a.name: list(fa.values()), b.name: list(fb.values())})


def curves_figure(a: StudyResults, b: StudyResults, path: Path) -> Path:
    fig = _figure(9, 5)
    ax = fig.add_subplot()
    for r in (a, b):
        if anytime_figure(r, path, label=f"{r.name} ({r.space})", ax=ax) is None:
            ax.plot([], [], label=f"{r.name}: no per-epoch results")
    ax.legend(loc="lower right", fontsize=9)
    ax.set_title(f"best {_metric_label(a.metric)} so far against trial-epochs spent")
    return _save(fig, path)


def render_html(a: StudyResults, b: StudyResults, figure: Path, out: Path) -> str:
    e = html.escape
    t = table(a, b)
    head = "".join(f"<th>{e(str(c))}</th>" for c in t.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in t.itertuples(index=False)
    )
    diff = "".join(f"<tr><td>{e(k)}</td><td>{e(x)}</td><td>{e(y)}</td></tr>" for k, x, y in config_diff(a, b))
    links = "".join(f'<li><a href="{e(Path(_relative(r.folder / REPORT_FILE, out)).as_posix())}">'
                    f"{e(r.name)} report</a></li>" for r in (a, b) if (r.folder / REPORT_FILE).is_file())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hpsearch: {e(a.name)} vs {e(b.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }} th {{ background: #f3f3f3; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head><body>
<h1>{e(a.name)} vs {e(b.name)}</h1>
<table>{f"<tr>{head}</tr>"}{rows}</table>
<figure><img src="{e(figure.name)}" alt="anytime curves"><figcaption>The best validation score found so far
against the trial-epochs spent: the study whose curve is higher at the left found good
configurations for less compute.</figcaption></figure>
<h2>Best configurations: where they differ</h2>
<table><tr><th>hyperparameter</th><th>{e(a.name)}</th><th>{e(b.name)}</th></tr>
{diff or '<tr><td colspan="3">identical</td></tr>'}</table>
{f"<ul>{links}</ul>" if links else ""}
</body></html>
"""


def _relative(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target.resolve(), start.resolve())


PROG = "python -m search.compare"


def build_parser(prog: str = PROG) -> Parser:
    from search.results.locate import RESULTS_DIR_HELP, STUDY_HELP

    p = Parser(prog=prog, description=describe(__doc__))
    p.add_argument("study_a", metavar="STUDY_A", help=STUDY_HELP)
    p.add_argument("study_b", metavar="STUDY_B", help="another study, given the same way")
    p.add_argument("--output", "-o", default=None, metavar="DIR",
                   help="where compare.html and its figure go (default: compare-A-vs-B beside study A)")
    p.add_argument("--results-dir", default=None, help=RESULTS_DIR_HELP)
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    from search.results.locate import find_study

    args = build_parser(prog).parse_args(argv)
    folders = [find_study(s, args.results_dir) for s in (args.study_a, args.study_b)]  # both found before either loads
    a, b = (load(folder) for folder in folders)
    if a.folder.resolve() == b.folder.resolve():
        raise UserError(f"both arguments are {a.folder}; pass two different studies")
    out = Path(args.output) if args.output else a.folder.parent / f"compare-{a.folder.name}-vs-{b.folder.name}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write to {out} ({e.strerror}); pass --output") from None
    print(table(a, b).to_string(index=False))
    diff = config_diff(a, b)
    print("\nbest configurations differ in:" if diff else "\nbest configurations are identical")
    if diff:
        print(pd.DataFrame(diff, columns=["hyperparameter", a.name, b.name]).to_string(index=False))
    figure = curves_figure(a, b, out / "anytime.png")
    page = out / "compare.html"
    atomic_write_text(page, render_html(a, b, figure, out))
    print(f"\ncomparison: {page}")
    return 0


def cli() -> None:
    run_cli(lambda: main(prog=entry_prog("search.compare")))


if __name__ == "__main__":
    cli()
