"""Write a study's report: report.html, with its figures beside it.

STUDY is a study's name in the results directory, or its folder; the page goes into that folder.
It holds a summary of the study, figures with captions (the best score against the compute
spent, parallel coordinates of the hyperparameters, their importances, learning curves, the
accuracy-cost front, the final model's confusion matrix), the trials on the front and a table of
the top configurations. `hpsearch run` writes it at the end of every study; this writes it again.
Also `python -m search.report`.
"""

from __future__ import annotations

from search.cli import Parser, describe, entry_prog, run_cli
from search.reporting.page import write_report
from search.results.files import REPORT_DIR

PROG = "python -m search.report"


def build_parser(prog: str = PROG) -> Parser:
    from search.results.locate import RESULTS_DIR_HELP, STUDY_HELP

    p = Parser(prog=prog, description=describe(__doc__))
    p.add_argument("study", metavar="STUDY", help=STUDY_HELP)
    p.add_argument("--results-dir", default=None, help=RESULTS_DIR_HELP)
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    from search.results.locate import find_study

    args = build_parser(prog).parse_args(argv)
    report = write_report(find_study(args.study, args.results_dir))
    print(f"report: {report.html} ({len(report.figures)} figures in {report.html.parent / REPORT_DIR})")
    for note in report.notes:
        print(f"note: {note}")
    return 0


def cli() -> None:
    run_cli(lambda: main(prog=entry_prog("search.report")))


if __name__ == "__main__":
    cli()
