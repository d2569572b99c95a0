"""Files written whole or not at all. Every result hpsearch writes goes through here, so a crash
or a full disk mid-write leaves the previous file (or none), never half of one that later reads
as damaged; and the files get the permissions the umask asks for, since results are shared."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
