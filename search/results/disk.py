"""What a write of results that the disk refuses means to the user: a full disk (ENOSPC), a full
quota (EDQUOT) or a read-only file system (EROFS) is no bug to show a traceback for. It is one
line: which file, how much space is left, and what to do, for a study what its `--resume` will
redo. The writes themselves leave no temp file behind (search.util.atomic)."""

from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path

from search.results.files import STATE_FILE
from trainables.errors import UserError

REFUSED = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EROFS: "the file system is read-only"}

# What `--resume` does after a study stopped in each phase (search.results.request.PHASES).
REDO = {"search": "continues the search from its last saved state (finished trials are kept, unfinished ones go on "
                  "from their last whole epoch)",
        "final": "trains and tests the final model again (the trials are kept)",
        "done": "writes what is missing again"}


def _free(folder: Path) -> str:
    for place in (folder, *folder.parents):
        if place.exists():
            free = shutil.disk_usage(place).free
            return f"{free / 2 ** 20:,.1f} MiB free on the disk holding {folder}"
    return f"the disk holding {folder} cannot be read"


def refused_write(e: OSError, folder: Path, then: str) -> UserError | None:
    """The one line for `e`, a write under `folder` the disk refused, or None for any other error.
    `then`: what to do once there is room."""
    why = REFUSED.get(e.errno or 0)
    if why is None:
        return None
    file = f" {e.filename}" if e.filename else ""
    fix = "make it writable (or move the results elsewhere)" if e.errno == errno.EROFS else "free some space"
    return UserError(f"cannot write{file}: {why} ({_free(folder)}); {fix}, then {then}")


def study_then(folder: Path, phase: str, resume_command: str) -> str:
    if not (folder / STATE_FILE).is_file():
        return "start the study again (nothing of it was saved)"
    return f"run `{resume_command}`: it {REDO.get(phase, REDO['search'])}"


@contextmanager
def study_writes(state):
    """Around a study (search.results.request.StudyState): a write the disk refuses ends it in one line
    that says what `--resume` will redo from the phase it reached."""
    try:
        yield
    except OSError as e:
        folder = state.request.folder
        error = refused_write(e, folder, study_then(folder, state.phase, state.request.resume_command()))
        if error is None:
            raise
        raise error from None
