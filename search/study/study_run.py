"""One study from start to finish: the phases of search/study/phases.py in order, with what lies
around them: the study folder and its study.json, the MLflow parent run, Ray, delivering every
result to MLflow, the trials tables, the failure policy, Ctrl-C and resume.

study.json (search.results.request.StudyState) holds what was asked and the phase reached, so `--resume`
continues a study whose driver was killed: the search from Tune's saved state, or just the final
phase if the search had finished.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pandas as pd

from search.results.files import BEST_FILE, REPORT_DIR, TRIALS_CSV, TUNE_DIR
from search.results.front import counted
from search.results.optuna_store import check_new_store
from search.results.records import TrialRecord, too_many_failures
from search.results.request import Resources, StudyState
from search.results.trials_table import (
    CONFIG_PREFIX,
    config_columns,
    short_names,
    trials_table,
    write_history,
    write_table,
)
from search.study.phases import (
    Finished,
    Prepared,
    SearchContext,
    SearchOutcome,
    StudyContext,
    choose,
    finalize,
    prepare,
    search,
    start_point_noise,
)
from search.tracking.delivery import reconcile
from search.tracking.tracker import Tracker, artifact_root
from search.tracking.trial_logger import TrialLogger
from search.tune.budget import BudgetPlan
from search.tune.cluster import Cluster, start_ray
from search.tune.tuner import Plan, check_cost_cap, make_plan
from search.tune.warm import WarmSource, load_sources, trials_of
from search.util import faults
from search.util.credentials import redact
from search.util.progress import Verbosity, say, verbosity
from search.util.provenance import git_commit, package_versions
from spaces.study import SpaceContext, Study
from trainables.datasets import IMAGE_FOLDER, TrainingData
from trainables.errors import UserError

TOP_COLUMNS = ["trial", "status", "epochs_seen", "best_epoch", "val_accuracy", "val_accuracy_std", "mmacs",
               "latency_ms_b1", "fits",
               *(CONFIG_PREFIX + name for name in ("family", "conv_layers", "kernel_size", "activation", "batch_norm",
                                                   "optimizer", "lr", "batch_size"))]
MAX_FAILED_FRACTION = 0.5
TRACKING_WAIT_MIN = 10


def split_words(data: TrainingData) -> str:
    """How the search's data is split, for the line that says what runs."""
    if data.folds is not None:
        return f"{len(data.train)} training images in {data.folds.k} cross-validation folds"
    return f"{len(data.train)} train / {len(data.val)} validation images"


class StudyRun:
    """`state`: a new study's request (phase "search", no MLflow run yet) or a saved one's."""

    def __init__(self, study: Study, state: StudyState, resources: Resources, resuming: bool):
        self.state, self.resources, self.resuming = state, resources, resuming
        self.request = state.request
        if self.request.scheduler:  # --scheduler: the study as it is, cut short another way
            study = dataclasses.replace(study, settings=dataclasses.replace(study.settings,
                                                                            scheduler=self.request.scheduler))
        self.study = study
        self.dir = self.request.folder

    def execute(self) -> int:
        if self.state.phase == "done" and self.state.delivered:
            print(f"study {self.request.name} is already complete: {self.dir / BEST_FILE}")
            return 0
        prepared = prepare(self.study, self.request)  # every bad-input check before training
        tracker = self._tracker()
        cluster = start_ray(self.resources.address, self.resources.cpus, self.resources.gpus)
        try:
            plan = self._plan(cluster)
            if prepared.backbone is None:  # a backbone's cost is what it is: its input size is fixed
                check_cost_cap(self.study, plan, prepared.search_data, prepared.dataset.info.name == IMAGE_FOLDER,
                               user_cap=self.request.max_mmacs is not None)
            warm = self._warm_sources(plan, prepared)  # bad sources refused before the study folder exists
            parent = self._start(tracker, plan, prepared)
            budget = self._budget(plan, prepared)
            logger = TrialLogger(self.request.tracking_uri, self.study.name, parent, plan.max_epochs,
                                 plan.num_samples, self.study.settings.metric, self.study.settings.mode,
                                 MAX_FAILED_FRACTION, study_folder=str(self.dir),
                                 budget_min=plan.time_budget_s / 60 if plan.time_budget_s else None)
            outcome = search(SearchContext(self.study, plan, prepared.search_data, self.dir, logger, prepared.backbone,
                                           budget, self.request.store, tuple(trials_of(warm))),
                             finished=self.state.phase != "search")
            if not self._deliver(tracker, parent, outcome.records):
                return 1
            if self.state.phase == "done":  # finished earlier but for MLflow, which is now up to date
                print(f"study {self.request.name} is complete and MLflow now holds all its results: "
                      f"{self.dir / BEST_FILE}")
                return 0
            table = self._tables(tracker, parent, outcome, prepared)
            if outcome.interrupted:
                print(f"\ninterrupted: the search state is saved in {self.dir}. Resume with:\n  "
                      f"{self.request.resume_command()}", file=sys.stderr)
                return 130
            failed = sum(r.status == "failed" for r in outcome.records)
            too_many = too_many_failures(failed, len(outcome.records), MAX_FAILED_FRACTION)
            best = None if too_many else choose(self.study, table, outcome,
                                                start_point_noise(self.study, self.request, prepared, budget))
            if best is None and not too_many and self.request.limits.any and \
                    not counted(table, self.study.settings.metric).empty:
                return self._nothing_fits(tracker, parent, table)
            if best is None and not too_many and outcome.budget is not None:
                return self._nothing_scored(tracker, parent, float(outcome.budget["budget_s"]) / 60)
            if best is None:
                return self._too_many_failures(tracker, parent, outcome.records)
            self._phase("final")
            threads = int(max(1, min(cluster.max_node_cpus, self.resources.cpus or cluster.max_node_cpus)))
            finished = finalize(StudyContext(self.study, self.request, prepared, plan, tracker, parent, threads,
                                             budget), best, table)
            self._report(tracker, parent)  # its page is among the files the summary lists
            tracker.set_tags(parent, {"hpsearch.status": "completed"})
            tracker.end_run(parent)
            self._phase("done")
            self._summary(table, finished)
            return 0
        finally:
            if cluster.started_here:
                import ray

                ray.shutdown()

    # --- around the phases ----------------------------------------------------------------

    def _tracker(self) -> Tracker:
        return Tracker(self.request.tracking_uri, self.study.name, artifact_root(self.request.tracking_uri))

    def _plan(self, cluster: Cluster) -> Plan:
        r, request = self.resources, self.request
        return make_plan(self.study, cluster_cpus=r.cpus or cluster.cpus, node_cpus=cluster.max_node_cpus,
                         cluster_gpus=cluster.gpus, gpus=int(cluster.gpus) if r.gpus is None else r.gpus,
                         samples=request.samples, max_epochs=request.max_epochs,
                         time_budget_min=request.time_budget, seed=request.seed, precision=request.precision,
                         max_mmacs=request.max_mmacs)

    def _phase(self, phase: str) -> None:
        self.state.phase = phase
        self.state.save()

    def _start(self, tracker: Tracker, plan: Plan, prepared: Prepared) -> str:
        """The study folder and its MLflow run (both already there on a resume); says what runs."""
        if not self.resuming:
            check_new_store(self.request.store)
            self.dir.mkdir(parents=True, exist_ok=True)  # claimed (empty) by search.run before anything ran
            self.state.save()  # first, so that even a driver killed right now can --resume
        if self.state.parent_run_id and not tracker.has_run(self.state.parent_run_id):
            say(f"tracking store {self.request.tracking_uri} has no run {self.state.parent_run_id}: the study gets "
                "a new one there, and every trial's results are delivered to it")
            self.state.parent_run_id = ""
            self.state.delivered = False
        if not self.state.parent_run_id:
            self.state.parent_run_id = tracker.start_run(self.request.name, self._run_params(plan, prepared), {
                "hpsearch.space": self.study.name, "hpsearch.kind": "study", "hpsearch.git_commit": git_commit(),
                **({"hpsearch.warm_start": "; ".join(self.request.warm_start)} if self.request.warm_start else {}),
                **{f"hpsearch.version.{k}": v for k, v in package_versions().items()},
            })
            self.state.save()
        # A fact to a line, the long ones indented under it: each stays within a terminal's width.
        data = prepared.search_data
        budget = f" within {plan.time_budget_s / 60:g} min (final model included)" if plan.time_budget_s else ""
        say(f"{'resuming' if self.resuming else 'study'} {self.request.name}: {plan.num_samples} trials x up to "
            f"{plan.max_epochs} epochs{budget}")
        say(f"  {plan.concurrency} at a time ({plan.cpus_per_trial} CPU"
            f"{f', {plan.gpus_per_trial:g} GPU' if plan.gpus_per_trial else ''} each) on "
            f"{split_words(data)}")
        say(f"tracking: {redact(self.request.tracking_uri)}")
        say(f"  MLflow experiment {self.study.name!r}, run {self.state.parent_run_id}", flush=True)
        return self.state.parent_run_id

    def _warm_sources(self, plan: Plan, prepared: Prepared) -> list[WarmSource]:
        """The earlier trials TPE starts from; none on a resume (they are in the store already)."""
        request = self.request
        if not request.warm_start or (self.dir / TUNE_DIR / "tuner.pkl").exists():
            return []
        data, s = prepared.search_data, self.study.settings
        ctx = SpaceContext(data.input_shape, data.num_classes, plan.max_macs,
                           prepared.backbone.body_layers if prepared.backbone is not None else 0)
        sources = load_sources([Path(p) for p in request.warm_start], self.study.define, ctx, s.metric, s.mode,
                               plan.max_epochs, Path(request.warm_start_map) if request.warm_start_map else None)
        for source in sources:
            if not source.trials:
                raise UserError(f"--warm-start {source.path}: none of its trials fits {self.study.name}'s space "
                                f"({source.describe()}); map a grid's names with --warm-start-map, or start cold")
        say("warm start: TPE starts from " + "; ".join(s.describe() for s in sources))
        return sources

    def _budget(self, plan: Plan, prepared: Prepared) -> BudgetPlan | None:
        """How the study's time budget is spent (search.tune.budget), or None without one. The final
        training's pace is the best trial's per image: it trains on all training images."""
        if plan.time_budget_s is None:
            return None
        data = prepared.search_data
        # Under cross-validation a trial's epoch trains k networks, each on k-1 of the k folds.
        trained = len(data.train) * (data.folds.k - 1) if data.folds is not None else len(data.train)
        return BudgetPlan(plan.time_budget_s, final=self.request.final, scale=len(prepared.dataset.train) / trained)

    def _deliver(self, tracker: Tracker, parent: str, records: list[TrialRecord]) -> bool:
        """Every result into MLflow, waiting out a store that is down; False when it stays down
        (nothing is lost: `--resume` delivers later)."""
        if not tracker.available():
            print(f"tracking store {self.request.tracking_uri} is unreachable; waiting up to {TRACKING_WAIT_MIN} "
                  f"min for it (the results are safe in {self.dir})", file=sys.stderr, flush=True)
            if not tracker.wait_available(TRACKING_WAIT_MIN * 60):
                print(f"tracking store still unreachable: nothing is lost; when it is back, run\n  "
                      f"{self.request.resume_command()}", file=sys.stderr)
                return False
        try:
            faults.in_driver("reconcile")
            filled = reconcile(tracker, parent, records)
        except Exception as e:  # noqa: BLE001 - the results are safe on disk; say so and go on
            print(f"warning: could not bring MLflow up to date ({type(e).__name__}: {str(e).splitlines()[0]}); "
                  f"every result is in {self.dir}; when the store works again, run\n  "
                  f"{self.request.resume_command()}", file=sys.stderr)
            self.state.delivered = False  # so that --resume delivers, even once the study is done
            self.state.save()
            return True
        if filled:
            say(f"tracking: delivered {filled} epoch results that had not reached MLflow during the search")
        if not self.state.delivered:
            self.state.delivered = True
            self.state.save()
        return True

    def _tables(self, tracker: Tracker, parent: str, outcome: SearchOutcome, prepared: Prepared) -> pd.DataFrame:
        s, data = self.study.settings, prepared.search_data
        table = trials_table(outcome.records, s.metric, s.mode, data.input_shape, data.num_classes, prepared.backbone,
                             self.request.limits)
        _, csv = write_table(table, self.dir)
        write_history(outcome.records, self.dir)
        tracker.log_artifact(parent, csv)
        return table

    def _too_many_failures(self, tracker: Tracker, parent: str, records: list[TrialRecord]) -> int:
        failed = [r for r in records if r.status == "failed"]
        tracker.set_tags(parent, {"hpsearch.status": "failed"})
        tracker.end_run(parent, failed=True)
        print(f"\nsearch stopped: {len(failed)} of {len(records)} trials failed (the limit is "
              f"{MAX_FAILED_FRACTION:.0%}). Errors:", file=sys.stderr)
        for record in failed[:5]:
            last = record.error.strip().splitlines()[-1] if record.error.strip() else "(no message)"
            print(f"  {record.name}: {last}", file=sys.stderr)
        print(f"full table: {self.dir / TRIALS_CSV}; MLflow run {parent}", file=sys.stderr)
        return 1

    def _nothing_scored(self, tracker: Tracker, parent: str, budget_min: float) -> int:
        """The time budget ended the search before any trial reported a score (no trial failed)."""
        tracker.set_tags(parent, {"hpsearch.status": "failed"})
        tracker.end_run(parent, failed=True)
        print(f"\nthe time budget ended the search before any trial reported a score; nothing was chosen or "
              f"trained. Give it more time (--time-budget, now {budget_min:g} min) or a faster "
              f"study. Every trial is in {self.dir / TRIALS_CSV}", file=sys.stderr)
        return 1

    def _nothing_fits(self, tracker: Tracker, parent: str, table: pd.DataFrame) -> int:
        """Trials trained, but none within the user's limits: say how close the nearest came."""
        tracker.set_tags(parent, {"hpsearch.status": "failed"})
        tracker.end_run(parent, failed=True)
        rows = counted(table, self.study.settings.metric)
        nearest = []
        if "mmacs" in rows and rows["mmacs"].notna().any():
            nearest.append(f"the smallest has {rows['mmacs'].min():.3g} million multiply-adds")
        if "latency_ms_b1" in rows and rows["latency_ms_b1"].notna().any():
            nearest.append(f"the fastest takes {rows['latency_ms_b1'].min():.3g} ms at batch 1")
        print(f"\nno trial fits {self.request.limits.describe()}"
              f"{' (' + '; '.join(nearest) + ')' if nearest else ''}; nothing was chosen or retrained. "
              f"Every trial is in {self.dir / TRIALS_CSV} (column fits)", file=sys.stderr)
        return 1

    def _report(self, tracker: Tracker, parent: str) -> Path | None:
        """report.html and its figures, also on the parent run (the page at the artifact root,
        the PNGs under report/, so its relative links hold there too)."""
        try:
            from search.reporting.page import write_report

            report = write_report(self.dir)
        except Exception as e:  # noqa: BLE001 - the study's results are complete; the report can be redone
            why = str(e).splitlines()[0] if str(e) else ""
            print(f"warning: could not write the report ({type(e).__name__}: {why}); "
                  f"run `hpsearch report {self.dir}` to retry", file=sys.stderr)
            return None
        tracker.log_artifact(parent, report.html)
        for figure in report.figures.values():
            tracker.log_artifact(parent, figure, REPORT_DIR)
        return report.html

    def _run_params(self, plan: Plan, prepared: Prepared) -> dict:
        """The study's MLflow run parameters: how it was asked and planned, never hyperparameters."""
        request, r = self.request, self.resources
        return {
            "space": self.study.name, "samples": plan.num_samples, "max_epochs": plan.max_epochs,
            "seed": request.seed, "gpus": r.gpus, "cpus": r.cpus, "time_budget_min": request.time_budget,
            "address": r.address, "smoke": request.smoke, "data_source": prepared.dataset.source,
            "concurrency": plan.concurrency, "cpus_per_trial": plan.cpus_per_trial,
            "gpus_per_trial": plan.gpus_per_trial, "max_mmacs": None if plan.max_macs is None else plan.max_macs / 1e6,
            "scheduler": self.study.settings.scheduler, "command": request.command,
            "precision": plan.precision, "final": request.final, "max_latency_ms": request.max_latency_ms,
            "optuna_storage": redact(request.store.url),
            **({"warm_start": ", ".join(Path(p).name for p in request.warm_start)} if request.warm_start else {}),
            **({"cv": request.cv} if request.cv else {}),
            **{f"data.{k}": v for k, v in request.data.items()},
        }

    def _summary(self, table: pd.DataFrame, finished: Finished) -> None:
        """The end of the command's output: search.study.summary formats it."""
        from search.results.locate import results_dir
        from search.study.summary import TOP, Summary, result_files

        metric = self.study.settings.metric
        quiet = verbosity() < Verbosity.NORMAL
        root = Path(self.request.results_root).resolve()
        # The chosen trial: under device limits (or with a top trial stopped inside its first
        # epoch) it need not be the table's first row.
        chosen = finished.best
        summary = Summary(
            name=self.request.name, folder=self.dir, metric=metric, test_accuracy=finished.final.test_accuracy,
            what={"checkpoint": "best trial's own weights",
                  "continue": "best trial trained on"}.get(finished.spec.mode, "retrained best configuration"),
            tracking_uri=self.request.tracking_uri,
            results_dir=None if root == results_dir(None).resolve() else root,
            top=None if quiet else short_names(table.head(TOP)), columns=self._top_columns(table.head(TOP)),
            best=(f"best: {chosen.search['best_trial']} ({metric} {chosen.metrics[metric]:.4f}): "
                  + " ".join(f"{k}={v}" for k, v in chosen.hyperparameters.items())) if quiet else None,
            chosen=(f"chosen: {chosen.search['best_trial']}, the best trial that fits "
                    f"{self.request.limits.describe()}") if self.request.limits.any and not quiet else None,
            files=result_files(self.dir), registered=finished.registered)
        print(summary.text())

    def _top_columns(self, top: pd.DataFrame) -> list[str]:
        """The columns of the `top` trials' table, most important first, in short names (`lr`,
        not `config/lr`): the scores and costs, then the hyperparameters in which the top trials
        differ (those they share tell nothing apart), the usual ones first."""
        usual = [c for c in TOP_COLUMNS if not c.startswith(CONFIG_PREFIX) and (c != "fits" or self.request.limits.any)]
        params = [c for c in TOP_COLUMNS if c.startswith(CONFIG_PREFIX)]
        params += [c for c in config_columns(top) if c not in params]
        varying = [c for c in params if c in top and top[c].astype(str).nunique() > 1]
        return [c for c in usual if c in top] + [c.removeprefix(CONFIG_PREFIX) for c in varying]
