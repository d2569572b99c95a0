"""Terminal progress: one line per finished trial with the best score so far and the elapsed
time; on a terminal, a status line in between shows the epoch each running trial is at."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, metric: str, mode: str, stream=None):
        self.total = total
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.stream = stream or sys.stdout
        self.live = getattr(self.stream, "isatty", lambda: False)()
        self.started = time.monotonic()
        self.done = 0
        self.epochs = 0
        self.best: float | None = None
        self.running: dict[str, int] = {}

    def _minutes(self) -> float:
        return (time.monotonic() - self.started) / 60

    def _fmt(self, value) -> str:
        return f"{value:.4f}" if isinstance(value, float) and value == value else "-"

    def on_result(self, name: str, result: dict) -> None:
        self.epochs += 1
        self.running[name] = int(result.get("epoch", 0))
        value = result.get(self.metric)
        if isinstance(value, float) and value == value and (self.best is None or self.sign * value > self.sign * self.best):
            self.best = value
        if self.live:
            at = ", ".join(f"{n} epoch {e}" for n, e in sorted(self.running.items()))
            self.stream.write(f"\r\033[K  {self.done}/{self.total} done, running: {at}; best {self._fmt(self.best)} "
                              f"({self.epochs} trial-epochs, {self._minutes():.1f} min)")
            self.stream.flush()

    def on_finish(self, name: str, status: str, result: dict) -> None:
        self.done += 1
        self.running.pop(name, None)
        prefix = "\r\033[K" if self.live else ""
        print(f"{prefix}[{self.done:>3}/{self.total}] {name} {status:<13} "
              f"epochs {int(result.get('epoch', 0)):>2}  {self.metric} {self._fmt(result.get(self.metric))}  "
              f"best {self._fmt(self.best)}  ({self.epochs} trial-epochs, {self._minutes():.1f} min)",
              file=self.stream, flush=True)
