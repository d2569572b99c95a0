"""The one error type for bad user input, at the bottom so that every layer may raise it.

The library names the setting that fixes a problem (`option="data_dir"`), never a command-line
flag: how a setting is spelt is the CLI's business (search/cli.py turns it into "pass --data-dir").
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: the message names the problem; `option` the setting that fixes
    it (snake_case) and `fix` what to give that setting."""

    def __init__(self, problem: str, *, option: str | None = None, fix: str = ""):
        super().__init__(problem)
        self.option, self.fix = option, fix
