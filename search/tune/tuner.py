"""Tuner assembly: searcher (Optuna TPE or the exact grid), scheduler (ASHA or FIFO),
resources per trial and the concurrency they allow."""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.stopper import CombinedStopper

from search.results.files import TUNE_DIR
from search.results.optuna_store import Store
from search.tracking.trial_logger import TrialLogger
from search.tune.asha import STATE_FILE as ASHA_STATE
from search.tune.asha import PacedSearch, PersistentASHA, PromotingASHA
from search.tune.budget import BUDGET_FILE, BudgetPlan, FailureBudget, StudyBudget
from search.tune.cores import CoreSharing, start_ledger
from search.tune.rungs import milestones
from search.tune.sampler import make_sampler
from search.tune.searcher import StoredSearch, resuming_in
from search.tune.trial import tune_trial
from search.tune.warm import not_yet_evaluated
from search.util.progress import Verbosity, verbosity
from spaces.study import SpaceContext, Study
from trainables.datasets import TrainingData
from trainables.errors import UserError
from trainables.model import NetConfig, model_macs
from trainables.train import TrialSettings
from trainables.transfer import Backbone

# Torch threads per CPU trial unless a study sets cpus_per_trial. Measured on a 2-core machine
# (`python -m search.bench numerics`, docs/benchmarks.md, *Speed*): one trial with 2 threads trains about as many
# epochs per hour as two 1-thread trials, and it wins on accuracy per hour: ASHA and TPE see
# each result before the next decision, and no core idles at the end of a search.
CPU_THREADS_PER_TRIAL = 2


@dataclass(frozen=True)
class Plan:
    """What the search will run: budget and how trials map onto the cluster's resources."""

    num_samples: int
    max_epochs: int
    cpus_per_trial: int
    gpus_per_trial: float
    concurrency: int
    max_macs: int | None
    time_budget_s: float | None
    seed: int
    # "tpe" is the service's searcher; "random" exists so benchmarks can compare against it
    # through the same OptunaSearch path.
    sampler: str = "tpe"
    precision: str = "auto"  # trainables.numerics: auto | bf16 | fp32


def make_plan(study: Study, *, cluster_cpus: float, cluster_gpus: float, gpus: int, samples: int | None,
              max_epochs: int | None, time_budget_min: float | None, seed: int, precision: str = "auto",
              node_cpus: float | None = None, max_mmacs: float | None = None) -> Plan:
    """node_cpus: the largest node's CPUs (a trial runs on one node); None means one node with
    all of cluster_cpus. max_mmacs: the user's cost cap (--max-mmacs), which replaces the
    study's CPU or GPU cap."""
    s = study.settings
    node_cpus = cluster_cpus if node_cpus is None else min(node_cpus, cluster_cpus)
    own_budget = samples is None and max_epochs is None and gpus == 0
    budget_min = time_budget_min if time_budget_min is not None else s.time_budget_min_cpu if own_budget else None
    num_samples = len(study.grid) if study.grid is not None and samples is None else (samples or s.num_samples)
    if gpus > 0:
        gpus_per_trial = min(s.gpus_per_trial, 1.0)
        concurrency = max(1, math.floor(gpus / gpus_per_trial + 1e-9))
        cpus_per_trial = max(1, math.floor(cluster_cpus / concurrency))
        mmacs = s.max_mmacs_gpu
    else:
        gpus_per_trial = 0.0
        # A trial that asks for more CPUs than any one node has is never scheduled: Tune waits forever.
        cpus_per_trial = s.cpus_per_trial or max(1, min(CPU_THREADS_PER_TRIAL, int(node_cpus)))
        if cluster_cpus < cpus_per_trial:
            raise UserError(f"study {study.name} needs {cpus_per_trial} CPUs per trial, the cluster has "
                            f"{cluster_cpus:g}; pass --cpus {cpus_per_trial} or more")
        if node_cpus < cpus_per_trial:
            raise UserError(f"study {study.name} needs {cpus_per_trial} CPUs per trial, the largest node has "
                            f"{node_cpus:g}; add a node with {cpus_per_trial} CPUs or more")
        concurrency = max(1, math.floor(cluster_cpus / cpus_per_trial))
        mmacs = s.max_mmacs_cpu
    if max_mmacs is not None:
        mmacs = max_mmacs
    return Plan(
        num_samples=num_samples, max_epochs=max_epochs or s.max_epochs, cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial, concurrency=min(concurrency, num_samples),
        max_macs=None if mmacs is None else int(mmacs * 1e6),
        time_budget_s=None if budget_min is None else budget_min * 60.0, seed=seed,
        precision=precision,
    )


class GridSearcher(Searcher):
    """Runs an explicit list of configurations, each once, in order. Tune's own grid is a
    cartesian product over keys; a study's grid may have per-layer keys that exist only at
    some depths, so it is given as the points themselves."""

    def __init__(self, points: list[dict], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.points = points
        self.next = 0

    def suggest(self, trial_id: str):
        if self.next >= len(self.points):
            return Searcher.FINISHED
        self.next += 1
        return dict(self.points[self.next - 1])

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass

    def get_state(self) -> dict:
        return {"points": self.points, "next": self.next}

    def set_state(self, state: dict) -> None:
        self.points, self.next = state["points"], state["next"]

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))


def make_searcher(study: Study, plan: Plan, data: TrainingData, store: Store, backbone: Backbone | None = None,
                  warm_trials: list[optuna.trial.FrozenTrial] | None = None, scheduler_state: str = ""):
    """`store`: where the Optuna study is kept (search.tune.searcher); `warm_trials`: earlier trials TPE
    starts from (search.tune.warm). A grid has neither: it runs its points in order. Under
    pause-and-promote (`scheduler_state`: its state file) new trials are proposed only when a
    worker would otherwise idle (search.tune.asha.PacedSearch)."""
    if study.grid is not None:
        searcher = GridSearcher(study.grid_points()[: plan.num_samples], study.settings.metric, study.settings.mode)
        return _limited(study, plan, searcher, scheduler_state)
    ctx = SpaceContext(data.input_shape, data.num_classes, plan.max_macs,
                       backbone.body_layers if backbone is not None else 0)
    start_points = not_yet_evaluated([dict(p) for p in study.start_points if _within_cap(p, ctx, backbone)],
                                     warm_trials or [])
    sampler = make_sampler(plan.sampler, plan.seed, study.settings.n_startup_trials)
    searcher = StoredSearch(
        store=store, max_epochs=plan.max_epochs, warm_trials=warm_trials,
        space=functools.partial(study.define, ctx=ctx), metric=study.settings.metric,
        mode=study.settings.mode, sampler=sampler, points_to_evaluate=start_points or None,
    )
    return _limited(study, plan, searcher, scheduler_state)


def _limited(study: Study, plan: Plan, searcher: Searcher, scheduler_state: str) -> Searcher:
    """At most `plan.concurrency` trials running at once (paused ones, under pause-and-promote, not counted)."""
    if study.settings.scheduler == "promotion":
        return PacedSearch(searcher, plan.concurrency, scheduler_state)
    return ConcurrencyLimiter(searcher, max_concurrent=plan.concurrency)


COST_PROBES = 32  # networks sampled to tell a space that fits the cost cap from one that cannot


def check_cost_cap(study: Study, plan: Plan, data: TrainingData, image_folder: bool = False,
                   user_cap: bool = False) -> None:
    """Refuse a search whose every network exceeds the cost cap on these images (large images on
    a CPU, or a user's cap, `user_cap`, set below the study's smallest networks): the capped
    widths are already at their lowest, so every trial would run over the cap.
    A random sample of the space stands in for all of it (a cap that some networks meet is met
    by some of 32 samples, short of a sliver of the space)."""
    if plan.max_macs is None or study.define is None:
        return
    ctx = SpaceContext(data.input_shape, data.num_classes, plan.max_macs)
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    smallest = math.inf
    for _ in range(COST_PROBES):
        trial = probe.ask()
        constants = study.define(trial, ctx) or {}
        params = {**trial.params, **constants}
        macs = model_macs(NetConfig.from_flat(params), ctx.input_shape, ctx.num_classes)
        if macs <= plan.max_macs:
            return
        smallest = min(smallest, macs)
    c, h, w = ctx.input_shape
    if user_cap:
        raise UserError(f"every network of {study.name} needs more than the cap of {plan.max_macs / 1e6:g} million "
                        f"multiply-adds per image on {c}x{h}x{w} images", option="max_mmacs",
                        fix=f"a larger cap (the smallest sampled network: {smallest / 1e6:.2f})")
    problem = (f"every network of {study.name} needs more than its CPU cost cap of {plan.max_macs / 1e6:g} million "
               f"multiply-adds per image on {c}x{h}x{w} images (the smallest sampled: {smallest / 1e6:.1f} million)")
    if image_folder:
        raise UserError(problem, option="image_size", fix=f"smaller H,W (e.g. {max(8, h // 2)},{max(8, w // 2)})")
    raise UserError(f"{problem}; run it on a GPU (no cap) or choose a study built for larger images")


def _within_cap(params, ctx: SpaceContext, backbone: Backbone | None) -> bool:
    return ctx.max_macs is None or \
        model_macs(NetConfig.from_flat(params), ctx.input_shape, ctx.num_classes, backbone) <= ctx.max_macs


# ASHA compares trials by how far they have trained, in epochs (fractions included), which
# every report carries; Tune's own training_iteration would count quarter-epoch reports as steps.
TIME_ATTR = "epochs_seen"


def asha_rungs(study: Study, plan: Plan) -> list[float]:
    """Every rung of every bracket, in epochs (search.tune.rungs: as Ray's ASHA computes them)."""
    s = study.settings
    if s.scheduler == "fifo":
        return []
    grace = min(s.grace_period, plan.max_epochs)
    return sorted({m for b in range(s.brackets) for m in milestones(grace, s.reduction_factor, plan.max_epochs, b)})


def scheduler_state_file(storage: Path | None) -> str:
    """Where ASHA saves its rungs: beside Tune's state in the study folder `storage`."""
    return str((storage or Path(tempfile.mkdtemp(prefix="hpsearch-asha-"))) / TUNE_DIR / ASHA_STATE)


def make_scheduler(study: Study, plan: Plan, storage: Path | None = None, state_file: str | None = None):
    """ASHA, pause-and-promote or stopping (its rungs saved beside Tune's state in `storage`, so a
    resume keeps them), or FIFO."""
    s = study.settings
    if s.scheduler == "fifo":
        return FIFOScheduler()
    state_file = state_file or scheduler_state_file(storage)
    if s.scheduler == "promotion":
        return PromotingASHA(time_attr=TIME_ATTR, max_t=plan.max_epochs,
                             grace_period=min(s.grace_period, plan.max_epochs), reduction_factor=s.reduction_factor,
                             brackets=s.brackets, state_file=state_file)
    return PersistentASHA(
        time_attr=TIME_ATTR, max_t=plan.max_epochs, grace_period=min(s.grace_period, plan.max_epochs),
        reduction_factor=s.reduction_factor, brackets=s.brackets, state_file=state_file,
    )


def trial_settings(plan: Plan, backbone: Backbone | None = None, rungs: tuple[float, ...] = ()) -> TrialSettings:
    """What every trial runs with; trials report inside an epoch only at the rungs that fall there."""
    return TrialSettings(max_epochs=plan.max_epochs, seed=plan.seed, threads=plan.cpus_per_trial,
                         backbone=backbone, precision=plan.precision,
                         report_points=tuple(r for r in rungs if r != int(r)))


def ledger_name(plan: Plan, storage: Path) -> str | None:
    """CPU searches that run trials side by side share freed cores at the end (search.tune.cores);
    one trial at a time already has them all, and GPU trials do not need them."""
    return f"hpsearch-cores-{storage.name}" if plan.gpus_per_trial == 0 and plan.concurrency > 1 else None


def make_trainable(plan: Plan, data: TrainingData, backbone: Backbone | None = None, rungs: tuple[float, ...] = (),
                   core_ledger: str | None = None):
    # Under cross-validation a trial reports whole epochs only: k networks have no common
    # point inside an epoch to report (ASHA then judges a quarter-epoch rung at epoch 1).
    settings = trial_settings(plan, backbone, rungs if data.folds is None else ())
    # with_parameters puts the data into the object store once; every trial on a node maps it.
    trainable = tune.with_parameters(tune_trial, settings=settings, data=data, core_ledger=core_ledger)
    return tune.with_resources(trainable, trial_resources(plan))


def trial_resources(plan: Plan) -> dict[str, float]:
    """What Ray reserves for each trial (the scale benchmark's simulated trials ask the same)."""
    return {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial}


def stoppers(study: Study, logger: TrialLogger, budget: BudgetPlan | None, storage: Path | None = None):
    """Too many failures end the search; so does the study's time budget (search.tune.budget)."""
    failures = FailureBudget(logger)
    if budget is None:
        return failures
    record = str(storage / TUNE_DIR / BUDGET_FILE) if storage is not None else None
    return CombinedStopper(failures, StudyBudget(budget, study.settings.metric, study.settings.mode, record))


# Ray's documented switch: Tune adds no logger callbacks of its own (it would add a TensorBoard
# writer, which costs the driver a write per result and a thread per trial: `python -m search.bench
# scale`). MLflow is this service's record of the trials; Tune's own CSV and JSON results, which
# resume, the ResultGrid and the trials table read, are asked for by name (result_loggers). Tune
# reads the switch when a search starts or is restored, so the CLIs set it too (search.run, search.bench).
AUTO_LOGGERS_OFF = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


def result_loggers() -> list[tune.Callback]:
    """Tune's CSV and JSON loggers, with the switch set that keeps Tune from adding its others."""
    os.environ[AUTO_LOGGERS_OFF] = "1"
    return [CSVLoggerCallback(), JsonLoggerCallback()]


@dataclass(frozen=True)
class BenchHooks:
    """The one seam the benchmarks have into the search, unused by every command: the scale
    benchmark (search.bench.scale) runs `trainable` instead of search.tune.trial's (simulated
    trials, which need no data) and wraps the searcher to time its proposals
    (`wrap_searcher`); everything else (searcher, store, scheduler, callbacks, checkpoints)
    stays the service's own, so what it measures is what users run."""

    trainable: Any = None  # a Tune trainable with its resources
    wrap_searcher: Callable[[Searcher], Searcher] | None = None


def build_tuner(study: Study, plan: Plan, data: TrainingData, storage: Path, logger: TrialLogger,
                backbone: Backbone | None = None, budget: BudgetPlan | None = None, store: Store | None = None,
                warm_trials: Sequence[optuna.trial.FrozenTrial] = (), hooks: BenchHooks | None = None) -> tune.Tuner:
    """`budget`: how the study's time budget is spent (search.tune.budget), so it leaves the final
    phase its room. `store`: the Optuna store (default: the SQLite file in `storage`, the study
    folder). `hooks`: the benchmarks' (BenchHooks); None for every command."""
    store = store or Store.in_study_folder(storage, storage.name)
    resuming_in(None)  # a new search: no pickled path is mapped to a folder resumed earlier in this process
    hooks = hooks or BenchHooks()
    trainable, wrap_searcher = hooks.trainable, hooks.wrap_searcher
    ledger = ledger_name(plan, storage) if trainable is None else None
    callbacks: list[tune.Callback] = [logger, *result_loggers()]
    if ledger is not None:
        start_ledger(ledger)
        callbacks.append(CoreSharing(ledger, plan.num_samples))
    state_file = scheduler_state_file(storage)
    searcher = make_searcher(study, plan, data, store, backbone, list(warm_trials), state_file)
    return tune.Tuner(
        trainable or make_trainable(plan, data, backbone, tuple(asha_rungs(study, plan)), ledger),
        tune_config=tune.TuneConfig(
            metric=study.settings.metric,
            mode=study.settings.mode,
            search_alg=wrap_searcher(searcher) if wrap_searcher is not None else searcher,
            scheduler=make_scheduler(study, plan, storage, state_file),
            num_samples=plan.num_samples,
            max_concurrent_trials=plan.concurrency,
            # Trials have identical resources: one worker process serves many trials, saving
            # the process start, imports and data attach each time.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(storage),
            callbacks=callbacks,
            stop=stoppers(study, logger, budget, storage),
            verbose=2 if verbosity() >= Verbosity.VERBOSE else 0,
            # The best epoch's checkpoint (for the final model) and, always, the latest (to resume).
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=study.settings.metric,
                checkpoint_score_order=study.settings.mode,
            ),
            # Retries cover worker processes that die (OOM, a lost node); exceptions in the
            # training code are caught in the trainable and recorded, not retried.
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )


def best_checkpoint(results, trial_id: str, metric: str, mode: str) -> Path | None:
    """The folder of a trial's best-scoring checkpoint (Tune keeps it beside the latest), or None."""
    for result in results:
        if str((result.metrics or {}).get("trial_id")) == trial_id or Path(result.path).name == trial_id:
            checkpoint = result.get_best_checkpoint(metric, mode) if result.best_checkpoints else None
            return Path(checkpoint.path) if checkpoint is not None else None
    return None


def restore_tuner(study: Study, plan: Plan, data: TrainingData, storage: Path,
                  backbone: Backbone | None = None, hooks: BenchHooks | None = None) -> tune.Tuner:
    """Continue a saved search: finished trials are kept, unfinished ones continue from their
    last epoch checkpoint, and the searcher and scheduler come back with their state.
    `hooks`: as for build_tuner (the scale benchmark's simulated trials)."""
    trainable = (hooks or BenchHooks()).trainable
    ledger = ledger_name(plan, storage) if trainable is None else None
    resuming_in(storage)  # the restored searcher's store is in this folder, wherever it was before
    if ledger is not None:
        start_ledger(ledger)  # the restored CoreSharing callback finds it by this name
    trainable = trainable or make_trainable(plan, data, backbone, tuple(asha_rungs(study, plan)), ledger)
    return tune.Tuner.restore(str(storage / TUNE_DIR), trainable=trainable,
                              resume_unfinished=True, resume_errored=True)
