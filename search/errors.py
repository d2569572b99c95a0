"""User errors: one clear line and exit status 2; everything else keeps its traceback."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (exit status 2), as for any user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(main: Callable[[], int | None]) -> NoReturn:
    try:
        code = main() or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
