"""Chaos run: a search whose driver is killed twice (the second time while its MLflow server is
down), one of whose workers is killed once, and whose MLflow server goes away twice (the second
outage lasts past the end of the search); then the record is checked.

    python -m tests.chaos --data-dir ../shared/datasets [--results-dir DIR] [--samples 12] [--max-epochs 8]

Afterwards the study must have exactly the requested number of trials, MLflow exactly one
child run per trial with no missing or repeated epoch, and best.yaml must name the true best of
the recorded trials. Exit status 0 when all of that holds. The helpers here are also what the
recovery tests use to start servers and kill processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from search.bench.mlflow_server import MlflowServer, free_port, wait_for  # noqa: F401 - the tests import them from here

REPO = Path(__file__).resolve().parents[1]


def epochs_done(folder: Path) -> int:
    """Epoch results Tune has written for the study so far (rows of every progress.csv)."""
    return sum(max(0, len(p.read_text().splitlines()) - 1) for p in (folder / "tune").glob("*/progress.csv"))


def start_search(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "search.run", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                            start_new_session=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process it started (its local Ray), by PID, as a crash would."""
    import psutil

    driver = psutil.Process(proc.pid)
    family = [driver, *driver.children(recursive=True)]
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.communicate(timeout=30)
    psutil.wait_procs(family, timeout=30)


def follow(stream) -> list[str]:
    """The lines of `stream` as they come, read by a thread (a pipe left unread would block)."""
    import threading

    lines: list[str] = []

    def read() -> None:
        for line in iter(stream.readline, ""):
            lines.append(line)
    threading.Thread(target=read, daemon=True).start()
    return lines


def kill_one_worker(proc: subprocess.Popen) -> int:
    """SIGKILL one Ray worker process that is running a trial; returns its PID."""
    import psutil

    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "ImplicitFunc" in " ".join(child.cmdline()) or "ImplicitFunc" in child.name():
                child.kill()
                return child.pid
        except psutil.NoSuchProcess:
            continue
    raise AssertionError("no trial worker found to kill")


def recorded_trials(results: Path, name: str, uri: str | None = None):
    """(parent run, {trial name: (run, sorted val_accuracy steps, best val_accuracy)}, child count)."""
    from mlflow.tracking import MlflowClient

    state = json.loads((results / name / "study.json").read_text())
    client = MlflowClient(uri or state["tracking_uri"])
    parent = client.get_run(state["parent_run_id"])
    runs = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              max_results=1000)
    children = {}
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        children[run.info.run_name] = (
            run,
            sorted(m.step for m in history),
            max((m.value for m in history), default=None),
        )
    return parent, children, len(runs)


def check(results: Path, name: str, samples: int, uri: str) -> list[str]:
    import pandas as pd
    import yaml

    problems = []
    folder = results / name
    table = pd.read_parquet(folder / "trials.parquet")
    if len(table) != samples:
        problems.append(f"{len(table)} trials in the table, asked for {samples}")
    _, children, count = recorded_trials(results, name, uri)
    if count != samples or len(children) != samples:
        problems.append(f"{count} MLflow child runs ({len(children)} names) for {samples} trials")
    for _, row in table.iterrows():
        run = children.get(row["trial"])
        if run is None:
            problems.append(f"{row['trial']} has no MLflow run")
            continue
        # Every whole epoch Tune recorded, once, for every trial (a failed one included: the
        # epochs it finished before it failed).
        expected = list(range(1, int(row["epochs"]) + 1))
        if run[1] != expected:
            problems.append(f"{row['trial']}: MLflow epochs {run[1]}, Tune recorded {int(row['epochs'])}")
    problems += check_store(folder, name, table)
    best = yaml.safe_load((folder / "best.yaml").read_text())
    scored = {n: c[2] for n, c in children.items() if c[2] is not None}
    top = max(scored.values())
    tied = {n for n, v in scored.items() if v == top}  # a 300-image split often ties; any of them is right
    if best["search"]["best_trial"] not in tied or abs(best["metrics"]["val_accuracy"] - top) > 1e-9:
        problems.append(f"best.yaml names {best['search']['best_trial']}, the recorded best is {sorted(tied)}")
    return problems


def check_store(folder: Path, name: str, table) -> list[str]:
    """The Optuna store, through kills and resumes: every trial of the table in it once, finished
    (none left RUNNING), and nothing else but trials that died unseen with a driver (FAIL)."""
    if not (folder / "optuna.db").is_file():
        return []  # a grid study: no TPE, no store
    from optuna.trial import TrialState

    from search.results.optuna_store import Store

    trials = Store.in_study_folder(folder, name).load().trials
    problems = [f"Optuna trial {t.number} is still {t.state.name}" for t in trials
                if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    ids = [t.user_attrs.get("tune_trial_id") for t in trials]
    for trial_id in table["trial_id"]:
        if ids.count(trial_id) != 1:
            problems.append(f"{trial_id} is in the Optuna store {ids.count(trial_id)} times")
    strays = [t.number for t in trials if t.user_attrs.get("tune_trial_id") not in set(table["trial_id"])
              and t.state != TrialState.FAIL]
    if strays:
        problems.append(f"Optuna trials {strays} belong to no trial of the table")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--results-dir", default=None)
    p.add_argument("--space", default="fashion_space")
    p.add_argument("--samples", type=int, default=12)
    p.add_argument("--max-epochs", type=int, default=8)
    args = p.parse_args(argv)
    results = Path(args.results_dir or tempfile.mkdtemp(prefix="hpsearch-chaos-"))
    results.mkdir(parents=True, exist_ok=True)
    server = MlflowServer(results)
    server.start()
    name = "chaos"
    search = [args.space, "--smoke", "--samples", str(args.samples), "--max-epochs", str(args.max_epochs),
              "--name", name, "--results-dir", str(results), "--data-dir", args.data_dir,
              "--tracking-uri", server.uri]
    folder = results / name
    log = []

    def step(message: str) -> None:
        log.append(message)
        print(f"chaos: {message}", flush=True)

    try:
        proc = start_search(*search)
        wait_for(lambda: epochs_done(folder) >= 3, 300, "the first epochs")
        kill_tree(proc)
        step(f"driver killed (SIGKILL) after {epochs_done(folder)} epochs")

        proc = start_search(*search, "--resume")
        mark = epochs_done(folder)
        wait_for(lambda: epochs_done(folder) >= mark + 2, 300, "progress after the first resume")
        step(f"worker {kill_one_worker(proc)} killed (SIGKILL)")
        server.stop()
        step("tracking server stopped")
        mark = epochs_done(folder)
        wait_for(lambda: epochs_done(folder) >= mark + 3 or proc.poll() is not None, 300, "epochs during the outage")
        if proc.poll() is not None:
            print("chaos: PROBLEM: the search ended before the second kill; give it more --samples", file=sys.stderr)
            return 1
        kill_tree(proc)
        step(f"driver killed (SIGKILL) during the outage, after {epochs_done(folder) - mark} epochs without MLflow")
        server.start()
        step("tracking server back")

        proc = start_search(*search, "--resume")
        said, printed = follow(proc.stderr), follow(proc.stdout)
        mark = epochs_done(folder)
        wait_for(lambda: epochs_done(folder) >= mark + 1 or proc.poll() is not None, 300, "progress")
        server.stop()
        step(f"tracking server stopped until the search has ended, after {epochs_done(folder)} epochs")
        wait_for(lambda: any("unreachable; waiting" in line for line in said) or proc.poll() is not None, 900,
                 "the end of the search")
        if proc.poll() is not None:
            print("chaos: PROBLEM: the study ended before its search did without MLflow; give it more --samples\n"
                  + "".join(said), file=sys.stderr)
            return 1
        server.start()
        step("tracking server back after the search ended")
        if proc.wait(timeout=1800) != 0:
            print("".join(printed + said), file=sys.stderr)
            return 1
        step(f"resumed to the end: {epochs_done(folder)} epochs in all")
        problems = check(results, name, args.samples, server.uri)
    finally:
        server.stop()
    for problem in problems:
        print(f"chaos: PROBLEM: {problem}", file=sys.stderr)
    if not problems:
        print(f"chaos: ok: {args.samples} trials, one MLflow run each with every epoch once, "
              f"best.yaml names the recorded best ({results / name})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
