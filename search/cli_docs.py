"""docs/cli.md, written from the commands' own parsers: `python -m search.cli_docs` writes it,
`python -m search.cli_docs --check` says whether it is up to date (tests/test_main.py checks
that), so the page cannot drift from what `hpsearch VERB --help` prints."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from typing import Iterator

from search.main import PARSER_MODULE, VERBS, build_parser, summary

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
COLUMNS = 100  # the help's wrapping width on the page, whatever the terminal that writes it

HEADER = """\
# The `hpsearch` command line

Every command's `--help`, as it prints it. This page is written from the commands' own parsers by
`python -m search.cli_docs` (do not edit it by hand; the test suite fails when it is out of date).
Each command is also a Python module: `hpsearch run ...` is `python -m search.run ...`.
"""


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    """argparse wraps to the terminal's width, which it reads from $COLUMNS first."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def verb_help(verb: str) -> str:
    module = importlib.import_module(PARSER_MODULE.get(verb, VERBS[verb]))
    return module.build_parser(prog=f"hpsearch {verb}").format_help()


def markdown() -> str:
    with _columns(COLUMNS):
        parts = [HEADER, "## hpsearch\n", "```text\n" + build_parser().format_help().rstrip() + "\n```\n"]
        for verb in VERBS:
            parts += [f"## hpsearch {verb}\n", summary(verb) + "\n",
                      "```text\n" + verb_help(verb).rstrip() + "\n```\n"]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = markdown()
    if argv == ["--check"]:
        if DOC.is_file() and DOC.read_text(encoding="utf-8") == text:
            return 0
        print(f"{DOC} is out of date; run `python -m search.cli_docs` and commit it", file=sys.stderr)
        return 1
    if argv:
        print("usage: python -m search.cli_docs [--check]", file=sys.stderr)
        return 2
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
