"""Terminal progress: one line per finished trial with the best score so far and the elapsed time."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, metric: str, mode: str, stream=None):
        self.total = total
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.done = 0
        self.epochs = 0
        self.best: float | None = None

    def _better(self, value: float) -> bool:
        return self.best is None or self.sign * value > self.sign * self.best

    def on_result(self, trial, result: dict) -> None:
        self.epochs += 1
        value = result.get(self.metric)
        if value is not None and value == value and self._better(value):
            self.best = value

    def on_finish(self, name: str, status: str, result: dict) -> None:
        self.done += 1
        minutes = (time.monotonic() - self.started) / 60
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else "-"
        best = f"{self.best:.4f}" if self.best is not None else "-"
        print(f"[{self.done:>3}/{self.total}] {name} {status:<13} "
              f"epochs {int(result.get('epoch', 0)):>2}  {self.metric} {shown}  best {best}  "
              f"({self.epochs} trial-epochs, {minutes:.1f} min)", file=self.stream, flush=True)
