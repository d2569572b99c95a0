"""What a running study tells the user, and how much.

On a terminal: one bar line, redrawn in place (trials done / budget, best so far, the running
trials' epochs, elapsed time and ETA). Elsewhere (CI, a log file): one plain line per finished
trial, which reads well in a log. `--quiet` keeps only errors and the final summary;
`--verbose` adds a line per epoch and Ray/Tune's own output.
"""

from __future__ import annotations

import enum
import shutil
import sys
import textwrap
import time


class Verbosity(enum.IntEnum):
    QUIET = 0
    NORMAL = 1
    VERBOSE = 2


# Set once by the CLI. Module-level rather than passed along: Tune pickles the callback that
# owns the progress display with the experiment, and a resumed study must use the current flag.
_level = Verbosity.NORMAL


def set_verbosity(level: Verbosity) -> None:
    global _level
    _level = Verbosity(level)


def verbosity() -> Verbosity:
    return _level


# The widest line the commands print: it reads in an 80-100 column terminal and in a CI log.
WIDTH = 100


def wrap(text: str, width: int = WIDTH) -> str:
    """A long line as lines of at most `width`, the rest indented under the first; a path or a
    URI is never split (a word longer than `width` stays whole)."""
    if len(text) <= width or "\n" in text:
        return text
    return textwrap.fill(text, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def say(*args, **kwargs) -> None:
    """print() that --quiet silences: progress and context, not results or errors."""
    if _level >= Verbosity.NORMAL:
        print(*args, **kwargs)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    BAR = 24

    def __init__(self, total: int, metric: str, mode: str, max_epochs: int = 0, stream=None,
                 level: Verbosity | None = None, clock=time.monotonic, budget_min: float | None = None):
        """`budget_min`: the study's time budget; the bar then shows the time spent of it instead
        of an ETA (under a budget the time, not the trials, ends the search)."""
        self.total = total
        self.budget_min = budget_min
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.max_epochs = max_epochs
        self.stream = stream or sys.stdout
        self.level = _level if level is None else Verbosity(level)
        self.live = _isatty(self.stream) and self.level >= Verbosity.NORMAL
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.done_before = None  # trials finished before this driver started (a resumed study)
        self.best: float | None = None
        self.running: dict[str, int] = {}
        self.paused: set[str] = set()
        self.drawn = False

    # --- figures -------------------------------------------------------------------------

    def _minutes(self) -> float:
        if self.budget_min:  # the budget's clock: the command's, from its start
            from search.util.clock import command_started

            return (time.time() - command_started()) / 60
        return (self.clock() - self.started) / 60

    def _fmt(self, value) -> str:
        return f"{value:.4f}" if isinstance(value, float) and value == value else "-"

    def eta_minutes(self) -> float | None:
        """Remaining time at the pace so far, counting a running trial as the fraction of its
        epochs it has done. An overestimate under ASHA, which stops most trials early."""
        before = self.done_before if self.done_before is not None else 0
        partial = sum(min(e / self.max_epochs, 0.99) for e in self.running.values()) if self.max_epochs else 0.0
        progressed = (self.done - before) + partial
        if progressed <= 0:
            return None
        left = max(self.total - self.done - partial, 0.0)
        return self._minutes() / progressed * left

    def bar(self, width: int | None = None) -> str:
        width = width or shutil.get_terminal_size((100, 20)).columns
        filled = round(self.BAR * self.done / max(self.total, 1))
        eta = self.eta_minutes()
        eta_text = "done" if self.done >= self.total else "ETA ?" if eta is None else \
            f"ETA {eta:.0f} min" if eta >= 1 else "ETA <1 min"
        if self.budget_min:
            eta_text = f"of {self.budget_min:g}"
        paused = f"  paused {len(self.paused)}" if self.paused else ""
        running = ", ".join(f"{n.removeprefix('trial_')}:e{e:g}" for n, e in sorted(self.running.items()))
        line = (f"[{'#' * filled}{'.' * (self.BAR - filled)}] {self.done}/{self.total} trials  "
                f"best {self._fmt(self.best)}  {self._minutes():.1f} min  "
                f"{eta_text}"
                f"{f'  running {running}' if running else ''}{paused}")
        # Wider than the terminal, the line would wrap and \r could no longer redraw it.
        return line if len(line) < width else line[: max(width - 2, 10)] + "…"

    # --- events ----------------------------------------------------------------------------

    def resumed(self, done: int) -> None:
        self.done = done
        self.done_before = done

    def _draw(self) -> None:
        self.stream.write(f"\r\033[K{self.bar()}")
        self.stream.flush()
        self.drawn = True

    def _line(self, text: str) -> None:
        """A line of its own; on a terminal, printed above the bar, which is then redrawn."""
        if self.live:
            self.stream.write(f"\r\033[K{text}\n")
            self._draw()
        else:
            print(text, file=self.stream, flush=True)

    def on_result(self, name: str, result: dict) -> None:
        if self.done_before is None:
            self.done_before = self.done
        partial = bool(result.get("partial"))
        seen = float(result.get("epochs_seen", result.get("epoch", 0)))
        epoch = seen if partial else int(result.get("epoch", 0))
        self.running[name] = epoch
        value = result.get(self.metric)
        if (
            isinstance(value, float)
            and value == value
            and (self.best is None or self.sign * value > self.sign * self.best)
        ):
            self.best = value
        if self.level >= Verbosity.VERBOSE:
            self._line(f"  {name} epoch {epoch:g}{f'/{self.max_epochs}' if self.max_epochs else ''}  "
                       f"{self.metric} {self._fmt(value)}  train_loss {self._fmt(result.get('train_loss'))}")
        elif self.live:
            self._draw()

    def on_pause(self, name: str, result: dict) -> None:
        """Pause-and-promote: the trial waits at a rung; it counts as done unless it is promoted."""
        self.paused.add(name)
        self.on_finish(name, "paused", result)

    def on_promote(self, name: str, result: dict) -> None:
        self.paused.discard(name)
        self.done -= 1
        self.running[name] = int(result.get("epoch", 0))
        if self.level == Verbosity.QUIET:
            return
        if self.live and self.level < Verbosity.VERBOSE:
            self._draw()
            return
        self._line(f"{'':9}{name} promoted      from {float(result.get('epochs_seen', 0)):g} epochs  "
                   f"{self.metric} {self._fmt(result.get(self.metric))}")

    def on_finish(self, name: str, status: str, result: dict) -> None:
        if self.done_before is None:
            self.done_before = self.done
        if status != "paused" and name in self.paused:  # a paused trial ended at the search's end
            self.paused.discard(name)
            return
        self.done += 1
        self.running.pop(name, None)
        if self.level == Verbosity.QUIET:
            return
        if self.live and self.level < Verbosity.VERBOSE:
            self._draw()
            return
        self._line(
            f"[{self.done:>3}/{self.total}] {name} {status:<13} "
            f"epochs {float(result.get('epochs_seen', result.get('epoch', 0))):>4g}  "
            f"{self.metric} {self._fmt(result.get(self.metric))}  "
            f"best {self._fmt(self.best)}  {self._minutes():.1f} min"
        )

    def close(self) -> None:
        """End the bar's line so what follows starts on a fresh one."""
        if self.live and self.drawn:
            self.stream.write(f"\r\033[K{self.bar()}\n")
            self.stream.flush()
            self.drawn = False
