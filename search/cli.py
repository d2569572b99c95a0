"""What every command-line entry point shares: one-line errors (exit status 2), the advice that
spells a library error's setting as the flag that sets it, and what the libraries may print."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn

from trainables.errors import UserError


def flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def explain(e: UserError) -> str:
    """The line a user sees: the problem, then which flag fixes it and with what."""
    if e.option is None:
        return str(e)
    return f"{e}; pass {flag(e.option)}{' ' + e.fix if e.fix else ''}"


class Formatter(argparse.HelpFormatter):
    """argparse's formatter, but a description's or epilog's paragraphs stay paragraphs (argparse
    would run them together into one)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(super(Formatter, self)._fill_text(part, width, indent) for part in text.split("\n\n"))


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (exit status 2), as for any user error."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def describe(doc: str | None) -> str:
    """A command's --help description: its module docstring, paragraphs reflowed. The docstring of
    a command's module is written for its users; its first line is the summary `hpsearch --help`
    lists."""
    return "\n\n".join(" ".join(p.split()) for p in (doc or "").strip().split("\n\n"))


def entry_prog(module: str) -> str:
    """The command as its user typed it, for usage lines: `python -m search.train` when run as a
    module, the console script's name (hpsearch-train) when run as one. `hpsearch VERB` passes
    its own."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return f"python -m {module}" if not name or name.endswith(".py") or name in ("-m", "-c") else name


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a note is logged (a test's capture, say), as
    Python's own last-resort handler does."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_notes(quiet: bool = False) -> None:
    """trainables' notes (logging: a served model or a program of the user's shows them or not) as
    plain lines on stderr; `quiet` (--quiet) keeps only errors. Idempotent."""
    log = logging.getLogger("trainables")
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.ERROR if quiet else logging.INFO)


def quiet_libraries() -> None:
    """MLflow's artifact progress bars (a log_model downloads its artifacts twice) are carriage-return
    noise on a terminal and in a log file alike."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    show_notes()
    quiet_libraries()
    from search.results.disk import refused_write

    try:
        code = main() or 0
    except UserError as e:
        print(f"error: {explain(e)}", file=sys.stderr)
        code = 2
    except OSError as e:  # a full disk or a read-only one is bad luck, not a bug: no traceback
        refused = refused_write(e, Path(e.filename or ".").parent, "run the command again")
        if refused is None:
            raise
        print(f"error: {refused}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
