"""Where a command finds a study: the results directory (`--results-dir`, else $HPSEARCH_RESULTS_DIR,
else ~/hpsearch-results) and a study given by its folder or by its name in that directory. Every
command that takes a study (report, export, compare, predict, dashboard, train) resolves it here,
so a name works wherever a folder does and a wrong one reads the same everywhere.

Imports nothing heavier than pathlib: the dashboard and `--help` stay free of Ray and torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from search.results.files import STATE_FILE
from trainables.errors import UserError

DEFAULT_RESULTS_DIR = "~/hpsearch-results"
RESULTS_DIR_ENV = "HPSEARCH_RESULTS_DIR"
RESULTS_DIR_HELP = f"where studies are (default: ${RESULTS_DIR_ENV} or {DEFAULT_RESULTS_DIR})"
STUDY_HELP = "a study: its name in the results directory (see --results-dir) or its folder"


def results_dir(arg: str | None) -> Path:
    """The results directory as given, not created or checked (search.run.results_root does that
    for the commands that write into it)."""
    return Path(arg or os.environ.get(RESULTS_DIR_ENV) or DEFAULT_RESULTS_DIR).expanduser()


def _is_name(study: str) -> bool:
    """A bare name (no folder part) can only mean a study in the results directory."""
    return Path(study).name == study and study not in (".", "..", "")


def find_study(study: str, results_dir_arg: str | None) -> Path:
    """A study folder given as a path, or by its name in the results directory (as search.run
    wrote it). A folder is one with a study.json; anything else is one line naming the results
    directory and the fix."""
    given = Path(study).expanduser()
    if (given / STATE_FILE).is_file():
        return given.resolve()
    root = results_dir(results_dir_arg)
    if _is_name(study) and (root / study / STATE_FILE).is_file():
        return (root / study).resolve()
    if given.is_dir():
        raise UserError(f"{given} is not a study folder (it has no {STATE_FILE}); give a study's folder or "
                        f"its name in {root}")
    if not _is_name(study):
        raise UserError(f"{given}: no such directory; give a study's folder or its name in {root}")
    raise UserError(f"no study {study!r} in {root}", option="results_dir",
                    fix="the results directory the study was run with, or give the study's folder")
