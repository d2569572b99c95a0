"""Check a study (yours or a built-in one) before its first search.

STUDY is what `hpsearch run` takes: a registered name, a Python file of yours that calls
register_study (./my_study.py) or a module path (my_package.my_module:study). Every
configuration it proposes with the random and the TPE sampler must build, train a step with its
augmentation and stay within its CPU cost cap; its start points too; a sample must train and
evaluate in fp32 and in bf16; its largest networks must build without the cap. The check hpsearch's
own studies pass in its test suite, in about a minute on a laptop's CPU, with no data, Ray or
MLflow. It prints a line per part passed, then "ok", or the first problem in one line (exit
status 2). Also `python -m search.check`.
"""

from __future__ import annotations

import shlex

from search.cli import Parser, describe, entry_prog, run_cli

PROG = "python -m search.check"


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=describe(__doc__))
    p.add_argument("study", metavar="STUDY",
                   help="the study: a registered name, ./my_study.py or my_package.my_module:study")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    # Imported here: torch and Optuna only once the arguments are known to be sound.
    import optuna

    from search.util.progress import wrap
    from spaces.check import check_study
    from spaces.loading import load_study_source

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per in-memory study it samples from
    study = load_study_source(args.study)
    print(wrap(f"checking study {study.name}: {study.description}"), flush=True)
    check_study(study, lambda line: print(f"  {line}", flush=True))
    print(f"ok: {study.name} passes the checks hpsearch's own studies pass\n"
          f"next: hpsearch run {shlex.quote(args.study)} --smoke")
    return 0


def cli() -> None:
    run_cli(lambda: main(prog=entry_prog("search.check")))


if __name__ == "__main__":
    cli()
