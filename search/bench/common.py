"""What every benchmark shares: sizes, the output folder, data subsets, a quiet Ray session,
the service's own search path with timing hooks, a process-memory sampler, JSON and plots."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import struct
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.study.phases import SearchContext, search
from search.tracking.tracker import Tracker
from search.tracking.trial_logger import TrialLogger
from search.tune.tuner import Plan, make_plan
from spaces.study import Study
from trainables.datasets import Dataset, TrainingData
from trainables.readers import load_dataset

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sizes:
    """Every size a benchmark uses, in one place, so `--quick` (the CI smoke test) and the
    documented run differ only here."""

    overhead_epochs: int = 2
    overhead_trials: int = 2
    overhead_train: int | None = None  # None: all 60,000 training images
    datapath_train: int | None = None
    augment_images: int = 10000
    efficiency_train: int | None = None  # None: the whole training set (54,000 for the search)
    efficiency_epochs: int = 3
    efficiency_seeds: int = 3
    efficiency_tpe_samples: int = 16
    efficiency_random_samples: int = 16
    efficiency_fifo_samples: int = 8
    efficiency_grid_points: int | None = None  # None: all 96
    scaling_train: int = 6000
    scaling_trials: int = 4
    scaling_epochs: int = 1
    peer_train: int = 3000
    peer_test: int = 10000
    peer_trials: int = 20
    peer_epochs: int = 10
    numerics_train: int | None = 6000
    numerics_epochs: int = 2
    warm_train: int | None = 6000
    warm_epochs: int = 3
    warm_samples: int = 12
    warm_seeds: int = 3
    # scale: simulated trials (search.bench.simulated) at 8, 32 and 64 concurrent workers (those
    # below scale_workers, then scale_workers itself); the most concurrent run has scale_trials
    # and is then resumed, the others scale_trials_fewer.
    scale_workers: int = 64
    scale_trials: int = 1000
    scale_trials_fewer: int = 300
    scale_epoch_ms: int = 1000  # mean simulated seconds per epoch (each configuration 0.75-1.25x)
    scale_epochs: int = 4  # rungs at 0.25 and 1 epoch (fashion_space's, reduction factor 4)


FULL = Sizes()
QUICK = Sizes(overhead_epochs=1, overhead_trials=2, overhead_train=1000, datapath_train=1000, augment_images=256,
              efficiency_train=600, efficiency_epochs=2, efficiency_seeds=1, efficiency_tpe_samples=2,
              efficiency_random_samples=2, efficiency_fifo_samples=2, efficiency_grid_points=2,
              scaling_train=600, scaling_trials=2, scaling_epochs=1, peer_train=600, peer_test=200,
              peer_trials=2, peer_epochs=1, numerics_train=300, numerics_epochs=1, warm_train=600, warm_epochs=1,
              warm_samples=2, warm_seeds=1,
              scale_workers=8, scale_trials=20, scale_trials_fewer=0, scale_epoch_ms=200, scale_epochs=2)


@dataclass
class Bench:
    """One benchmark session: where results go and where data comes from."""

    out: Path
    data_dir: str | None
    sizes: Sizes
    seed: int = 0
    quick: bool = False  # the CI smoke test: parts may leave out what a test of its own already checks
    _dataset: Dataset | None = None

    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_dataset("fashion_mnist", self.data_dir)
        return self._dataset

    def subset(self, n_train: int | None, n_test: int = 10000) -> Dataset:
        ds = self.dataset()
        return ds if n_train is None else ds.sliced(n_train, n_test, self.seed)

    @property
    def tracking_uri(self) -> str:
        """One MLflow store per session: creating a SQLite store costs seconds of migrations."""
        return tracking_uri(self.scratch("."))

    def scratch(self, name: str) -> Path:
        path = self.out / "scratch" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, name: str, payload: dict) -> Path:
        payload = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "machine": machine(), "sizes": dataclasses.asdict(self.sizes), **payload}
        path = self.out / f"{name}.json"
        path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "load_avg_1m": os.getloadavg()[0]}


def default_out() -> Path:
    from search.results.locate import results_dir

    return results_dir(None) / "bench" / time.strftime("%Y%m%d-%H%M%S")


def quiet() -> None:
    """The same environment the CLI sets up (search.run.main), minus its argument checks."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # search.tune.tuner.result_loggers
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def write_idx_layout(ds: Dataset, root: Path) -> Path:
    """ROOT/FashionMNIST/raw/*-ubyte (uncompressed, as torchvision reads them), from a
    (possibly sliced) dataset: hpsearch's --data-dir and torchvision then read the same images."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for part, split in (("train", ds.train), ("t10k", ds.test)):
        x = np.ascontiguousarray(split.x[:, 0])
        (raw / f"{part}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, *x.shape) + x.tobytes())
        y = split.y.astype(np.uint8)
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(y)) + y.tobytes())
    return root


# --- the service's search path, with timing hooks ----------------------------------------------

class TimedLogger(TrialLogger):
    """The service's own MLflow trial logger, also recording when each trial started, reported
    and finished (driver clock), for start-up cost and anytime curves."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events: list[dict] = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.events.append({"kind": "start", "trial": trial.trial_id, "t": time.time()})
        return super().on_trial_start(iteration, trials, trial, **info)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.events.append({"kind": "result", "trial": trial.trial_id, "t": time.time(),
                            "epoch": int(result.get("epoch", 0)), "val_accuracy": result.get("val_accuracy"),
                            "epoch_seconds": result.get("epoch_seconds"), "pid": result.get("pid"),
                            "node_ip": result.get("node_ip"), "partial": bool(result.get("partial")),
                            "epochs_seen": result.get("epochs_seen")})
        return super().on_trial_result(iteration, trials, trial, result, **info)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.events.append({"kind": "complete", "trial": trial.trial_id, "t": time.time()})
        return super().on_trial_complete(iteration, trials, trial, **info)


@dataclass
class ServiceRun:
    plan: Plan
    wall_s: float
    events: list[dict]
    results: Any = field(repr=False, default=None)
    fit_start: float = 0.0
    fit_end: float = 0.0

    @property
    def epochs(self) -> list[dict]:
        """Whole-epoch results (not the reports at rungs inside an epoch)."""
        return [e for e in self.events if e["kind"] == "result" and not e.get("partial")]


def run_service(study: Study, data: TrainingData, storage: Path, tracking_uri: str, *, cluster_cpus: float,
                samples: int, max_epochs: int, seed: int, sampler: str = "tpe",
                cpus_per_trial: int | None = None, warm_trials: list | None = None) -> ServiceRun:
    """One search through the service's own search phase (search.study.phases.search: make_plan,
    build_tuner with its searcher, scheduler, object-store data and MLflow trial logger) on the
    Ray session already running."""
    if cpus_per_trial is not None:  # e.g. the scaling benchmark's fixed 1-thread workers
        study = dataclasses.replace(study, settings=dataclasses.replace(study.settings, cpus_per_trial=cpus_per_trial))
    plan = dataclasses.replace(
        make_plan(study, cluster_cpus=cluster_cpus, cluster_gpus=0, gpus=0, samples=samples,
                  max_epochs=max_epochs, time_budget_min=None, seed=seed), sampler=sampler)
    tracker = Tracker(tracking_uri, study.name, storage.parent / "mlartifacts")
    parent = tracker.start_run(storage.name, {"samples": samples, "max_epochs": max_epochs, "sampler": sampler},
                               {"hpsearch.kind": "bench"})
    logger = TimedLogger(tracking_uri, study.name, parent, plan.max_epochs, plan.num_samples,
                         study.settings.metric, study.settings.mode, 0.5)
    storage.mkdir(parents=True, exist_ok=True)  # the study folder, as study_run makes it (the Optuna store)
    started, t0 = time.perf_counter(), time.time()
    outcome = search(SearchContext(study, plan, data, storage, logger, warm_trials=tuple(warm_trials or ())))
    wall = time.perf_counter() - started
    tracker.end_run(parent)
    return ServiceRun(plan, wall, logger.events, outcome.results, t0, t0 + wall)


# --quick: a Ray session left running for the next part that asks for as many CPUs, as (cpus,
# cluster). A start and shutdown cost the smoke test ~10 s each; the full run starts one per part
# so that each part's figures (overhead's ray_start_s) are its own.
_kept: tuple | None = None
KEEP_RAY = False


@contextlib.contextmanager
def local_ray(cpus: int):
    import ray

    from search.tune.cluster import start_ray

    global _kept
    if _kept is not None and _kept[0] == cpus and ray.is_initialized():
        yield 0.0, _kept[1]
        return
    release_ray()
    quiet()
    started = time.perf_counter()
    cluster = start_ray(None, cpus, 0)
    if KEEP_RAY:
        _kept = (cpus, cluster)
        yield time.perf_counter() - started, cluster
        return
    try:
        yield time.perf_counter() - started, cluster
    finally:
        ray.shutdown()


def release_ray() -> None:
    """End the session --quick kept (before a part that starts Ray its own way, and at the end)."""
    global _kept
    if _kept is not None:
        import ray

        ray.shutdown()
        _kept = None


def tracking_uri(folder: Path) -> str:
    return f"sqlite:///{folder.resolve() / 'mlflow.db'}"


# --- memory -----------------------------------------------------------------------------------

class MemorySampler:
    """Peak RSS, PSS and USS of this process and of every process below it (raylet, Ray
    workers) or below `roots`, sampled in a background thread. USS is what a process holds
    alone: a dataset mapped from the object store counts in RSS/PSS of each worker that
    touches it, but not in its USS."""

    def __init__(self, interval: float = 0.5, roots: list[int] | None = None):
        self.interval = interval
        self.roots = roots or [os.getpid()]
        self.peaks: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _procs(self):
        import psutil

        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                yield root
                yield from root.children(recursive=True)
            except psutil.Error:
                continue

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for proc in self._procs():
                try:
                    title = " ".join(proc.cmdline())[:120]
                    mem = proc.memory_full_info()
                except psutil.Error:
                    continue
                peak = self.peaks.setdefault(proc.pid, {"pid": proc.pid, "title": title, "rss": 0, "pss": 0, "uss": 0})
                if title.startswith("ray::") and not peak["title"].startswith("ray::ImplicitFunc"):
                    peak["title"] = title  # a worker's title says what it runs now
                for key in ("rss", "pss", "uss"):
                    peak[key] = max(peak[key], getattr(mem, key, 0))
            self._stop.wait(self.interval)

    def summary(self) -> dict:
        mib = 1 / 2 ** 20
        rows = [{**p, **{k: round(p[k] * mib, 1) for k in ("rss", "pss", "uss")}} for p in self.peaks.values()]
        trial = [r for r in rows if "ImplicitFunc" in r["title"] or "tune_trial" in r["title"]]
        driver = [r for r in rows if r["pid"] in self.roots]
        return {"unit": "MiB", "trial_workers": trial, "driver": driver,
                "others": [r for r in rows if r not in trial and r not in driver]}


# --- plots ------------------------------------------------------------------------------------

def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_plot(path: Path, title: str, labels: list[str], values: list[float], ylabel: str) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(labels, values, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(values)])
    ax.bar_label(bars, fmt="%.3g")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
