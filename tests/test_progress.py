"""The progress display, driven the way TrialLogger drives it, on fake streams: a terminal
(isatty True) gets one bar redrawn in place, a log gets one plain line per finished trial."""

from __future__ import annotations

import io

from search.util.progress import Progress, Verbosity


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(stream: io.StringIO, level: Verbosity, clock: Clock | None = None) -> Progress:
    """Four trials, two epochs max: two finish, one is stopped after epoch 1, one still runs."""
    clock = clock or Clock()
    p = Progress(4, "val_accuracy", "max", max_epochs=2, stream=stream, level=level, clock=clock)
    for name, accs in (("trial_000", [0.7, 0.8]), ("trial_001", [0.5]), ("trial_002", [0.75, 0.85])):
        for epoch, acc in enumerate(accs, 1):
            clock.now += 60
            p.on_result(name, {"epoch": epoch, "val_accuracy": acc, "train_loss": 1.0})
        p.on_finish(
            name, "completed" if len(accs) == 2 else "stopped_early", {"epoch": len(accs), "val_accuracy": accs[-1]}
        )
    clock.now += 60
    p.on_result("trial_003", {"epoch": 1, "val_accuracy": 0.6})
    return p


def test_terminal_gets_one_bar_redrawn_in_place(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # the bar fits the terminal's width: this test's terminal is 100 wide
    out = Terminal()
    p = drive(out, Verbosity.NORMAL)
    text = out.getvalue()
    assert "\n" not in text  # nothing scrolls: every update redraws the same line
    last = text.rsplit("\r\033[K", 1)[-1]
    assert last.startswith("[" + "#" * 18 + "." * 6 + "] 3/4 trials")
    assert "best 0.8500" in last and "6.0 min" in last and "running 003:e1" in last
    # 6 minutes for 3.5 trials' worth of work: half a trial left takes about 1 minute.
    assert p.eta_minutes() == 6 / 3.5 * 0.5
    p.close()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


def test_bar_never_wraps():
    p = drive(Terminal(), Verbosity.NORMAL)
    assert len(p.bar(width=40)) < 40


def test_log_gets_one_line_per_finished_trial():
    out = io.StringIO()
    drive(out, Verbosity.NORMAL).close()
    lines = out.getvalue().splitlines()
    assert [line.split("] ")[1].split()[0] for line in lines] == ["trial_000", "trial_001", "trial_002"]
    assert lines[1].startswith("[  2/4] trial_001 stopped_early") and "best 0.8000" in lines[1]
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()


def test_quiet_prints_nothing_even_on_a_terminal():
    for stream in (io.StringIO(), Terminal()):
        drive(stream, Verbosity.QUIET).close()
        assert stream.getvalue() == ""


def test_verbose_adds_a_line_per_epoch():
    out = io.StringIO()
    drive(out, Verbosity.VERBOSE)
    lines = out.getvalue().splitlines()
    assert sum("epoch 1/2" in line or "epoch 2/2" in line for line in lines) == 6
    assert sum("] trial_" in line for line in lines) == 3
    tty = Terminal()
    drive(tty, Verbosity.VERBOSE)
    # On a terminal the epoch lines scroll above the bar, which stays last.
    assert tty.getvalue().count("\n") == 9 and tty.getvalue().rsplit("\n", 1)[-1].startswith("\r\033[K[")


def test_resumed_study_counts_only_this_run_for_the_eta():
    clock = Clock()
    p = Progress(4, "val_accuracy", "max", max_epochs=1, stream=io.StringIO(), level=Verbosity.NORMAL, clock=clock)
    p.resumed(2)
    clock.now += 120
    p.on_result("trial_002", {"epoch": 1, "val_accuracy": 0.5})
    p.on_finish("trial_002", "completed", {"epoch": 1, "val_accuracy": 0.5})
    assert p.done == 3 and p.eta_minutes() == 2.0
