"""Benchmark 7: does one driver keep up at cluster scale? Studies of up to 1,000 simulated trials
(search.bench.simulated: they sleep instead of training) at 8, 32 and 64 concurrent workers,
through the service's own search phase (TPE, ASHA, checkpoints, the MLflow trial logger and its
delivery queue) against a real `mlflow server` on 127.0.0.1. Measured as the study grows: the
searcher's time per proposal against the trials finished, the driver's CPU share and memory, the
delay from a trial's report to its MLflow metric, the results handled per second, the worker
processes' memory, and how long resuming the finished 1,000-trial search takes.

The workers are Ray's logical GPUs (one per trial, as on a GPU cluster: no CPU cost cap, no core
sharing); Ray is told the machine has as many as the benchmark needs."""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ray import tune
from ray.tune.search import Searcher

from search.bench.common import Bench, MemorySampler, TimedLogger, pyplot, quiet
from search.bench.mlflow_server import MlflowServer
from search.bench.simulated import SimSettings, simulated_trial
from search.study.phases import SearchContext, search
from search.tracking.delivery import DeliveryQueue, reconcile
from search.tracking.tracker import Tracker
from search.tune.tuner import BenchHooks, asha_rungs, make_plan, trial_resources
from search.util.progress import Verbosity, set_verbosity, verbosity
from spaces.registry import get_study
from spaces.study import Study

CONCURRENCIES = (8, 32, 64)


def scale_study(trials: int, max_epochs: int) -> Study:
    """fashion_space's real space, start points and ASHA rungs (a quarter epoch, then x4), one
    GPU per trial so that a run with N logical GPUs runs N trials at a time."""
    base = get_study("fashion_space")
    settings = dataclasses.replace(base.settings, num_samples=trials, max_epochs=max_epochs, gpus_per_trial=1.0,
                                   time_budget_min_cpu=None)
    return dataclasses.replace(base, name="bench_scale", settings=settings)


# --- what the driver does, timed ----------------------------------------------------------------

@dataclass
class Proposal:
    t: float  # wall clock when the searcher answered
    finished: int  # trials the searcher had been told were complete
    seconds: float


class TimedSearcher(Searcher):
    """The service's searcher (whatever search.tune.tuner.make_searcher builds), timed: every proposal
    against the number of finished trials, and what it spends on each result and completion."""

    def __init__(self, inner: Searcher):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.proposals: list[Proposal] = []
        self.finished = 0
        self.result_s = self.complete_s = 0.0
        self.results = 0

    @property
    def metric(self):
        return self.inner.metric

    @property
    def mode(self):
        return self.inner.mode

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.inner.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str):
        started = time.perf_counter()
        config = self.inner.suggest(trial_id)
        if config not in (None, Searcher.FINISHED):  # None: the concurrency limit said "not now"
            self.proposals.append(Proposal(time.time(), self.finished, time.perf_counter() - started))
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        started = time.perf_counter()
        self.inner.on_trial_result(trial_id, result)
        self.result_s += time.perf_counter() - started
        self.results += 1

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        started = time.perf_counter()
        self.inner.on_trial_complete(trial_id, result=result, error=error)
        self.complete_s += time.perf_counter() - started
        self.finished += 1

    def add_evaluated_point(self, *args, **kwargs):
        return self.inner.add_evaluated_point(*args, **kwargs)

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)

    def get_state(self) -> dict:
        return self.inner.get_state()

    def set_state(self, state: dict) -> None:
        self.inner.set_state(state)

    def on_pause(self, trial_id: str) -> None:
        self.inner.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        self.inner.on_unpause(trial_id)


class StampedQueue(DeliveryQueue):
    """The service's delivery queue, noting when each call it was given while `label` was set (by
    ScaleLogger, around one result) reached the store."""

    def __init__(self, tracker: Tracker):
        self.label: tuple[float, float] | None = None  # (reported by the trial, received by the driver)
        self.labels: dict[int, tuple[float, float]] = {}  # queued calls' labels, by id (held until delivered)
        self.delivered_at: list[tuple[float, float, float]] = []  # label + delivered, wall clock
        self.dropped = 0
        super().__init__(tracker)

    def put(self, op) -> None:
        if self.label is not None:
            self.labels[id(op)] = self.label
        super().put(op)

    def delivered(self, op) -> None:
        label = self.labels.pop(id(op), None)
        if label is not None:
            self.delivered_at.append((*label, time.time()))

    def stop(self, timeout: float = 60.0) -> int:
        self.dropped = super().stop(timeout)
        return self.dropped


class ScaleLogger(TimedLogger):
    """The service's trial logger, with its deliveries stamped."""

    def __setstate__(self, settings: dict) -> None:
        super().__setstate__(settings)
        self.events = []  # a restored logger (a resumed search) starts a fresh record

    def delivery_queue(self, tracker: Tracker) -> DeliveryQueue:
        return StampedQueue(tracker)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        now = time.time()
        self.queue.label = (float(result.get("reported_at", now)), now)
        try:
            return super().on_trial_result(iteration, trials, trial, result, **info)
        finally:
            self.queue.label = None


class DriverSampler:
    """Once a second, in a thread: the driver's CPU (percent of one core) and resident memory,
    the MLflow server's CPU, the machine's memory in use, the deliveries waiting, and how far
    the study is."""

    def __init__(self, logger: ScaleLogger, searcher: list[TimedSearcher], server_pid: int | None,
                 interval: float = 1.0):
        import psutil

        self.psutil, self.logger, self.searcher, self.interval = psutil, logger, searcher, interval
        self.driver = psutil.Process()
        self.server = self._family(server_pid)
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scale-sampler", daemon=True)

    def _family(self, pid: int | None) -> list:
        if pid is None:
            return []
        root = self.psutil.Process(pid)
        return [root, *root.children(recursive=True)]  # mlflow server: its gunicorn/uvicorn workers

    def __enter__(self) -> "DriverSampler":
        self.driver.cpu_percent()
        for p in self.server:
            p.cpu_percent()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            server_cpu = 0.0
            for p in self.server:
                with contextlib.suppress(self.psutil.Error):
                    server_cpu += p.cpu_percent()
            queue = self.logger.queue
            self.rows.append({
                "t": time.time(), "driver_cpu_pct": self.driver.cpu_percent(),
                "driver_rss_mib": self.driver.memory_info().rss / 2 ** 20, "server_cpu_pct": server_cpu,
                "machine_used_mib": self.psutil.virtual_memory().used / 2 ** 20,
                "pending_deliveries": queue.pending() if queue is not None else 0,
                "finished": self.searcher[0].finished if self.searcher else 0,
                "results": sum(e["kind"] == "result" for e in list(self.logger.events)),
            })


# --- one study ------------------------------------------------------------------------------

@dataclass
class StudyRun:
    workers: int
    trials: int
    folder: Path
    parent: str
    wall_s: float
    logger: ScaleLogger
    searcher: TimedSearcher
    samples: list[dict]
    memory: dict
    reconcile_s: float
    filled: int
    dropped: int
    records: list = field(repr=False, default_factory=list)


@contextlib.contextmanager
def logical_ray(workers: int):
    """A local Ray that believes it has `workers` GPUs (and CPUs): simulated trials use neither."""
    import logging

    import ray

    quiet()
    ray.init(num_cpus=workers, num_gpus=workers, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def run_study(bench: Bench, server: MlflowServer, workers: int, trials: int, data, folder: Path) -> StudyRun:
    s = bench.sizes
    study = scale_study(trials, s.scale_epochs)
    plan = make_plan(study, cluster_cpus=workers, cluster_gpus=workers, gpus=workers, samples=trials,
                     max_epochs=s.scale_epochs, time_budget_min=None, seed=bench.seed)
    sim = SimSettings(plan.max_epochs, s.scale_epoch_ms / 1000,
                      tuple(r for r in asha_rungs(study, plan) if r != int(r)))
    trainable = tune.with_resources(tune.with_parameters(simulated_trial, sim=sim), trial_resources(plan))
    folder.mkdir(parents=True)  # the study folder, as search.study.study_run makes it (the Optuna store goes there)
    tracker = Tracker(server.uri, study.name)
    parent = tracker.start_run(folder.name, {"trials": trials, "workers": workers}, {"hpsearch.kind": "bench"})
    logger = ScaleLogger(server.uri, study.name, parent, plan.max_epochs, plan.num_samples,
                         study.settings.metric, study.settings.mode, 0.5)
    timed: list[TimedSearcher] = []

    def wrap(searcher: Searcher) -> Searcher:
        timed.append(TimedSearcher(searcher))
        return timed[0]

    with DriverSampler(logger, timed, server.proc.pid if server.proc else None) as sampler, \
            MemorySampler(interval=20.0) as memory:
        started = time.perf_counter()
        outcome = search(SearchContext(study, plan, data, folder, logger, hooks=BenchHooks(trainable, wrap)))
        wall = time.perf_counter() - started
    # Still queued when the search ended (after the logger's 30 s flush), left to the reconciliation.
    dropped = logger.queue.dropped if isinstance(logger.queue, StampedQueue) else 0
    # What a real study does next (search.study.study_run: _deliver): MLflow made whole from Tune's records.
    t = time.perf_counter()
    filled = reconcile(tracker, parent, outcome.records)
    reconcile_s = time.perf_counter() - t
    return StudyRun(workers, trials, folder, parent, wall, logger, timed[0], sampler.rows, memory.summary(),
                    reconcile_s, filled, dropped, outcome.records)


def time_resume(bench: Bench, server: MlflowServer, run: StudyRun, data) -> dict:
    """`--resume` of the finished search, as far as a simulated study reaches it: the search
    phase again (Tune's state, the searcher and the trial logger restored, every trial found
    finished, the trials' records read back) and the MLflow reconciliation that follows it.
    Not included: the Ray start and the data preparation a real --resume also does."""
    s = bench.sizes
    study = scale_study(run.trials, s.scale_epochs)
    plan = make_plan(study, cluster_cpus=run.workers, cluster_gpus=run.workers, gpus=run.workers,
                     samples=run.trials, max_epochs=s.scale_epochs, time_budget_min=None, seed=bench.seed)
    sim = SimSettings(plan.max_epochs, s.scale_epoch_ms / 1000, ())
    trainable = tune.with_resources(tune.with_parameters(simulated_trial, sim=sim), trial_resources(plan))
    started = time.perf_counter()
    # The logger passed here is not used: Tune restores the one it saved with the experiment.
    outcome = search(SearchContext(study, plan, data, run.folder, run.logger, hooks=BenchHooks(trainable)))
    search_s = time.perf_counter() - started
    t = time.perf_counter()
    filled = reconcile(Tracker(server.uri, study.name), run.parent, outcome.records)
    return {"trials": len(outcome.records), "search_phase_s": search_s, "reconcile_s": time.perf_counter() - t,
            "filled": filled, "total_s": time.perf_counter() - started,
            "what": "the search phase of a finished search resumed (Tuner.restore + fit + the trials' records) and "
                    "the MLflow reconciliation after it; Ray start and data preparation not included"}


# --- figures --------------------------------------------------------------------------------

def _pct(values, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def summarise(run: StudyRun, epoch_s: float) -> dict:
    searcher, logger = run.searcher, run.logger
    proposals = searcher.proposals
    ms = [p.seconds * 1000 for p in proposals]
    stamps = run.logger.queue.delivered_at if isinstance(run.logger.queue, StampedQueue) else []
    delay = [d - r for r, _, d in stamps]
    to_driver = [g - r for r, g, _ in stamps]
    results = [e for e in logger.events if e["kind"] == "result"]
    seen = {}
    for e in results:
        seen[e["trial"]] = max(seen.get(e["trial"], 0.0), float(e.get("epochs_seen") or e.get("epoch") or 0))
    samples = run.samples
    cpu = [r["driver_cpu_pct"] for r in samples]
    first_start = min((e["t"] for e in logger.events if e["kind"] == "start"), default=None)
    bins = proposal_bins(proposals, run.trials)
    return {
        "workers": run.workers, "trials": len(run.records), "wall_s": run.wall_s,
        "results": len(results), "results_per_s": len(results) / run.wall_s,
        "trials_per_s": len(run.records) / run.wall_s,
        "trial_epochs": sum(seen.values()),
        # The simulated GPUs' busy share: trial-epochs slept / (workers x wall time). 1.0 would be
        # a driver that never kept a worker waiting (nor Ray starting one).
        "worker_utilisation": sum(seen.values()) * epoch_s / (run.workers * run.wall_s),
        "proposal_ms": {"count": len(ms), "median": _pct(ms, 50), "p95": _pct(ms, 95), "max": max(ms, default=None),
                        "by_finished": bins},
        "searcher_ms_per_result": 1000 * searcher.result_s / max(searcher.results, 1),
        "searcher_ms_per_completion": 1000 * searcher.complete_s / max(searcher.finished, 1),
        "driver_cpu_pct_of_one_core": {"mean": statistics.fmean(cpu) if cpu else None, "p95": _pct(cpu, 95)},
        "driver_machine_share": (statistics.fmean(cpu) / 100 / _cores()) if cpu else None,
        "driver_rss_mib": {"start": samples[0]["driver_rss_mib"] if samples else None,
                           "peak": max((r["driver_rss_mib"] for r in samples), default=None),
                           "end": samples[-1]["driver_rss_mib"] if samples else None},
        "mlflow_server_cpu_pct_mean": statistics.fmean(r["server_cpu_pct"] for r in samples) if samples else None,
        "machine_used_mib_peak": max((r["machine_used_mib"] for r in samples), default=None),
        "mlflow_delay_s": {"count": len(delay), "median": _pct(delay, 50), "p95": _pct(delay, 95),
                           "max": max(delay, default=None)},
        "report_to_driver_s": {"median": _pct(to_driver, 50), "p95": _pct(to_driver, 95),
                               "max": max(to_driver, default=None)},
        "pending_deliveries_max": max((r["pending_deliveries"] for r in samples), default=0),
        "deliveries_dropped_at_end": run.dropped,
        "reconcile_s": run.reconcile_s, "reconcile_filled": run.filled,
        "first_trial_start_s": (first_start - min(p.t for p in proposals)) if first_start and proposals else None,
        "worker_memory": worker_memory(run.memory),
        "series": {"samples": samples, "proposals": [[p.finished, p.seconds * 1000] for p in proposals],
                   "delays": [[d - (first_start or 0), d - r] for r, _, d in stamps],
                   "results_t": [e["t"] - (first_start or 0) for e in results]},
    }


def proposal_bins(proposals: list[Proposal], trials: int) -> list[dict]:
    """Median and 95th percentile of the proposal time per tenth of the study (by trials finished)."""
    width = max(1, trials // 10)
    rows = []
    for low in range(0, trials, width):
        ms = [p.seconds * 1000 for p in proposals if low <= p.finished < low + width]
        if ms:
            rows.append({"finished_from": low, "finished_to": low + width, "count": len(ms),
                         "median_ms": _pct(ms, 50), "p95_ms": _pct(ms, 95)})
    return rows


def worker_memory(summary: dict) -> dict:
    workers = summary["trial_workers"]
    return {"processes": len(workers),
            "rss_mib_median": _pct([w["rss"] for w in workers], 50),
            "uss_mib_median": _pct([w["uss"] for w in workers], 50),
            "pss_mib_total": round(sum(w["pss"] for w in workers), 1),
            "ray_others_pss_mib": round(sum(o["pss"] for o in summary["others"]), 1)}


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def plot(path: Path, runs: list[dict], resume: dict | None, epoch_s: float) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    colours = {8: "#4c72b0", 32: "#dd8452", 64: "#c44e52"}
    (prop, delay, rate), (cpu, rss, res) = axes
    for r in runs:
        c, label = colours.get(r["workers"], "#55a868"), f"{r['workers']} workers"
        series = r["series"]
        if series["proposals"]:
            x, y = zip(*series["proposals"])
            prop.scatter(x, y, s=4, color=c, alpha=0.5, label=label)
        if series["delays"]:
            x, y = zip(*series["delays"])
            delay.scatter(x, y, s=3, color=c, alpha=0.4, label=label)
        if series["results_t"]:
            t = np.asarray(series["results_t"])
            edges = np.arange(0, max(t.max(), 1) + 10, 10)
            counts, _ = np.histogram(t, edges)
            rate.plot(edges[:-1] + 5, counts / 10, color=c, label=label)
        samples = series["samples"]
        if samples:
            t0 = samples[0]["t"]
            cpu.plot([s["t"] - t0 for s in samples], [s["driver_cpu_pct"] for s in samples], color=c, label=label)
            rss.plot([s["finished"] for s in samples], [s["driver_rss_mib"] for s in samples], color=c, label=label)
    prop.set(title="searcher: time per proposal", xlabel="trials finished", ylabel="ms", yscale="log")
    prop.axhline(epoch_s * 1000, color="grey", ls=":", lw=1)
    prop.text(0, epoch_s * 1000, f" simulated epoch ({epoch_s:g} s)", va="bottom", fontsize=8, color="grey")
    delay.set(title="report -> MLflow metric delivered", xlabel="s since the first trial started", ylabel="s")
    rate.set(title="results handled per second (10 s bins)", xlabel="s since the first trial started",
             ylabel="results / s")
    cpu.set(title="driver CPU (100 = one core)", xlabel="s since the study started", ylabel="%")
    rss.set(title="driver resident memory", xlabel="trials finished", ylabel="MiB")
    for ax in (prop, delay, rate, cpu, rss):
        ax.legend(fontsize=8)
    if resume:
        parts = {"search phase\n(restore + fit)": resume["search_phase_s"], "MLflow\nreconcile": resume["reconcile_s"]}
        bars = res.bar(list(parts), list(parts.values()), color=["#4c72b0", "#55a868"])
        res.bar_label(bars, fmt="%.1f s")
        res.set(title=f"--resume of the finished {resume['trials']}-trial search", ylabel="s")
    else:
        res.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(bench: Bench) -> dict:
    s = bench.sizes
    # Trial data are not used by simulated trials; the searcher reads the input shape and classes.
    data = bench.subset(600, 100).for_search(0.1, bench.seed)
    scratch = bench.scratch("scale")
    concurrency = [w for w in CONCURRENCIES if w < s.scale_workers] + [s.scale_workers]
    # Without MLflow's job runner: its eight idle consumer processes would take memory and start-up
    # CPU from the driver being measured, and nothing here submits a job.
    server = MlflowServer(scratch / "mlflow")
    (scratch / "mlflow").mkdir(parents=True, exist_ok=True)
    level = verbosity()
    set_verbosity(Verbosity.QUIET)  # a line per finished trial, a thousand times, says nothing here
    server.start()
    runs, resume = [], None
    try:
        for workers in concurrency:
            trials = s.scale_trials if workers == s.scale_workers else s.scale_trials_fewer
            if trials < 1:
                continue
            with logical_ray(workers):
                study = run_study(bench, server, workers, trials, data, scratch / f"w{workers}")
                if workers == s.scale_workers:
                    resume = time_resume(bench, server, study, data)
            runs.append(summarise(study, s.scale_epoch_ms / 1000))
            print(f"  scale: {workers} workers, {trials} trials: {study.wall_s:.0f} s, "
                  f"{runs[-1]['results_per_s']:.1f} results/s, proposal median "
                  f"{runs[-1]['proposal_ms']['median']:.0f} ms, MLflow delay p95 "
                  f"{runs[-1]['mlflow_delay_s']['p95'] or 0:.1f} s", flush=True)
    finally:
        server.stop()
        set_verbosity(level)
    result = {
        "epoch_s": s.scale_epoch_ms / 1000, "max_epochs": s.scale_epochs, "concurrency": concurrency,
        "runs": runs, "resume": resume, "mlflow_server": "mlflow server, 1 worker, SQLite backend, on 127.0.0.1",
        "cores": _cores(),
    }
    bench.write("scale", result)
    plot(bench.out / "scale.png", runs, resume, s.scale_epoch_ms / 1000)
    return result
