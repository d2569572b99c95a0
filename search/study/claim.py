"""A new study's folder, claimed before anything else runs. Two studies started at once with the
same --name must not both get past a check that the folder is free and then meet, a minute later,
in the same folder: the folder is made with one atomic mkdir, which exactly one of them wins;
the other is refused at once. A claimed folder that its study leaves empty (refused before it
began: missing data, a bad option) is given back, so that a refusal writes nothing."""

from __future__ import annotations

from pathlib import Path

from trainables.errors import UserError


def claim(folder: Path) -> None:
    """Make `folder` (its parent exists), or refuse in one line when it already exists."""
    try:
        folder.mkdir()
    except FileExistsError:
        if folder.is_dir() and not any(folder.iterdir()):
            raise UserError(f"results folder {folder} exists but is empty: a study with this name is starting right "
                            "now, or one was stopped before it began; pass another --name (or remove the empty "
                            "folder if no study is starting)") from None
        raise UserError(f"results for {folder.name!r} already exist in {folder}; pass --resume to continue that "
                        "study or another --name") from None


def release_if_unused(folder: Path) -> None:
    """Give back a claimed folder its study never wrote to; one that holds anything stays."""
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (the study began: it is resumable), or already gone
