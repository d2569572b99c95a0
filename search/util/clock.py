"""When this command started: a time budget covers the whole command (imports, data, Ray, the
search, the final model, the report), so its clock starts before any of them. The CLI marks the
moment first thing; without a mark (a library caller), the process's own start is used."""

from __future__ import annotations

import os
import time
from pathlib import Path

_command_started: float | None = None


def command_started() -> float:
    """When this command started, as `time.time()`."""
    return _command_started if _command_started is not None else _process_start()


def mark_command_start(at: float | None = None) -> None:
    global _command_started
    _command_started = time.time() if at is None else at


def _process_start() -> float:
    try:  # Linux: the process's start, in clock ticks after boot
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()
