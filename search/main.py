"""`hpsearch COMMAND ...`: the one command, its verbs each a module of its own (search/run.py for
`hpsearch run`, and so on), which also runs alone as `python -m search.run`.

This module imports none of them until a verb is chosen: `hpsearch --help` reads each verb's
summary (its module docstring's first line) from the source, so it needs neither torch nor Ray
and answers at once. docs/cli.md is written from the same parsers (search/cli_docs.py).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import NoReturn

# Verb -> the module that implements it, in the order `hpsearch --help` lists them.
VERBS: dict[str, str] = {
    "run": "search.run",
    "check": "search.check",
    "report": "search.report",
    "predict": "search.predict",
    "export": "search.export",
    "train": "search.train",
    "compare": "search.compare",
    "dashboard": "search.dashboard",
    "bench": "search.bench",
}
# A verb's parser lives in its module, except the benchmarks' (the package's docstring is their help).
PARSER_MODULE = {"bench": "search.bench.__main__"}
# Verbs a wheel leaves out (pyproject.toml: the benchmarks come with a checkout only), and how to get them.
CHECKOUT_ONLY = {"bench": "the benchmarks come with a checkout of hpsearch: clone it, then "
                          "`pip install -e '.[bench]'` (or bash setup.sh) there"}

EPILOG = """\
`hpsearch COMMAND --help` shows a command's options. Each command is also a Python module: \
`python -m search.run ...` is `hpsearch run ...`.

A study first is short for `hpsearch run`: `hpsearch fashion_space --smoke` is `hpsearch run \
fashion_space --smoke`, as before the commands existed.

Studies are found by name in the results directory: --results-dir, else $HPSEARCH_RESULTS_DIR, \
else ~/hpsearch-results."""


def summary(verb: str) -> str:
    """The first line of the verb's module docstring, read from its source without importing it
    (importing search.run would import most of hpsearch)."""
    spec = importlib.util.find_spec(VERBS[verb])
    if spec is None:
        return f"(not installed: {CHECKOUT_ONLY[verb]})" if verb in CHECKOUT_ONLY else ""
    if spec.origin is None or not spec.origin.endswith(".py"):
        doc = importlib.import_module(VERBS[verb]).__doc__  # no source to read: import it after all
    else:
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8")))
    return (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("hpsearch")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed; pip install -e .)"


def build_parser():
    """The top-level parser, for its help only: the arguments are dispatched by `main`, so that a
    verb's own parser (imported only then) sees everything after the verb."""
    import argparse

    from search.cli import Formatter, Parser

    width = max(len(v) for v in VERBS) + 2
    commands = "\n".join(f"  {verb:<{width}}{summary(verb)}" for verb in VERBS)
    p = Parser(prog="hpsearch", usage="hpsearch [--version] [--help] COMMAND [ARGS ...]",
               description="Hyperparameter search for image-classification networks: Ray Tune, Optuna and "
                           "MLflow.\n\ncommands:\n" + commands, epilog=EPILOG,
               formatter_class=_keep_commands(Formatter), add_help=False)
    p.add_argument("-h", "--help", action="help", help="show this help and exit")
    p.add_argument("--version", action="version", version=f"hpsearch {version()}",
                   help="show hpsearch's version and exit")
    p.add_argument("command", metavar="COMMAND", nargs="?", help=argparse.SUPPRESS)
    return p


def _keep_commands(base):
    """The formatter, but the paragraph listing the commands keeps its lines (one per verb)."""

    class Listing(base):
        def _fill_text(self, text: str, width: int, indent: str) -> str:
            parts = text.split("\n\n")
            return "\n\n".join(part if part.startswith("commands:\n") else super(Listing, self)._fill_text(
                part, width, indent) for part in parts)

    return Listing


def _fail(message: str) -> NoReturn:
    print(f"hpsearch: error: {message}", file=sys.stderr)
    sys.exit(2)


def run_verb(verb: str, argv: list[str]) -> NoReturn:
    """The verb's own `main`, with its usage lines saying `hpsearch VERB`, and the one-line error
    handling every command has (search.cli.run_cli)."""
    from search.cli import run_cli
    from search.util.provenance import set_command

    if verb in CHECKOUT_ONLY and importlib.util.find_spec(VERBS[verb]) is None:
        _fail(f"`hpsearch {verb}` is not installed here: {CHECKOUT_ONLY[verb]}")
    set_command(f"hpsearch {verb}")  # MLflow's Source of the runs it creates (search.util.provenance)
    module = importlib.import_module(PARSER_MODULE.get(verb, VERBS[verb]))
    run_cli(lambda: module.main(argv, prog=f"hpsearch {verb}"))


def main(argv: list[str] | None = None) -> NoReturn:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = argv[0] if argv else None
    if first in VERBS:
        run_verb(first, argv[1:])
    if first is None or first in ("-h", "--help", "--version"):
        build_parser().parse_args(argv[:1])  # --help and --version print and exit
        build_parser().print_help()  # no command at all: what there is to choose from
        sys.exit(2)
    if first.startswith("-"):
        _fail(f"unrecognized option {first}; options go after a command, e.g. `hpsearch run {first}` "
              "(see hpsearch --help)")
    close = difflib.get_close_matches(first, VERBS, n=1, cutoff=0.75)
    if close:
        _fail(f"unknown command {first!r}; did you mean `hpsearch {close[0]}`? (to run a study of that name: "
              f"hpsearch run {first})")
    if _plain_word(first):
        _known_study_or_fail(first)
    # A study first: `hpsearch STUDY ...` was the command before it had verbs, and still is `run`.
    run_verb("run", argv)


def _plain_word(word: str) -> bool:
    """Neither a file nor a module path (those `run` reports on itself): a verb or a study's name."""
    return not any(c in word for c in "/.:~") and not Path(word).exists()


def _known_study_or_fail(word: str) -> None:
    """A word that is no verb must be a registered study (hpsearch's or an installed package's);
    otherwise one line saying it is neither."""
    from search.cli import explain
    from spaces.loading import load_study_source
    from trainables.errors import UserError

    try:
        load_study_source(word)
    except UserError as e:
        _fail(f"{word!r} is not a command ({', '.join(VERBS)}; see hpsearch --help), and {explain(e)}")


def cli() -> None:
    """The `hpsearch` console script."""
    main()


if __name__ == "__main__":
    main()
