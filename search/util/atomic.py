"""Files written whole or not at all. Every result hpsearch writes goes through here, so a crash
or a full disk mid-write leaves the previous file (or none), never half of one that later reads
as damaged; and the files get the permissions the umask asks for, since results are shared."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file beside `path`, flush it to disk, then rename: a crash leaves the old
    file or the new one, never half of one, and no temp file on failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        _name(e, path)
        raise


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """`write(temp_path)` (a library's own saver: torch.save, to_parquet, savefig) into a temp
    file beside `path`, then renamed over it; on any failure (a full disk) the temp file is
    removed. The temp file keeps `path`'s suffix, which some savers read the format from."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        _name(e, path)
        raise
    return path


def save_torch(obj, path: Path) -> None:
    """torch.save through a Python file: given a file name, torch writes with its own C++ stream,
    and a full disk then raises a RuntimeError saying only "iostream error"; through a Python
    file it is the OSError (ENOSPC) the callers turn into one line."""
    import torch

    with path.open("wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _name(e: BaseException, path: Path) -> None:
    """A write that fails (a full disk) raises without a file name: the message names the result."""
    if isinstance(e, OSError) and e.filename is None:
        e.filename = str(path)
