"""One study from start to finish: data, tracking, Ray, the search, the trials table, the final
model and best.yaml. The CLI (`search.run`) only parses and validates arguments.

A study folder holds `study.json` (what was asked, the MLflow parent run, the phase reached),
so `--resume` continues a study whose driver was killed: the search from Tune's saved state,
or just the final retrain if the search had finished.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from search.cluster import start_ray
from search.credentials import redact
from search.data_args import DataChoice, choice_from_args, load_choice
from search.export import (
    BestConfig,
    atomic_write_text,
    git_commit,
    package_versions,
    trials_table,
    write_history,
    write_table,
)
from search.final import FinalSpec, from_checkpoint, log_final, retrain, save_model
from search.progress import Verbosity, say, verbosity
from search.records import TrialRecord, too_many_failures, trial_records
from search.run import SMOKE_TEST, SMOKE_TRAIN
from search.tracking import Tracker, TrialLogger, default_tracking_uri, reconcile
from search.tuner import TUNE_DIR, Plan, best_checkpoint, build_tuner, make_plan, restore_tuner
from spaces import Study
from trainables.errors import UserError
from trainables.model import NetConfig

TOP_COLUMNS = ["trial", "status", "epochs_seen", "best_epoch", "val_accuracy", "mmacs", "family", "conv_layers",
               "kernel_size", "activation", "batch_norm", "optimizer", "lr", "batch_size"]
STATE_FILE = "study.json"
MAX_FAILED_FRACTION = 0.5
TRACKING_WAIT_MIN = 10


class CtrlC:
    """The first Ctrl-C asks Tune to stop the way it stops on SIGUSR1: no new trials, the
    experiment state saved, running trials left resumable. A second Ctrl-C stops at once."""

    def __init__(self):
        self.pressed = False

    def _handler(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        print("\nstopping: saving the search state (Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)

    def __enter__(self) -> "CtrlC":
        # Tune's own SIGINT handler is off (TUNE_DISABLE_SIGINT_HANDLER, set by the CLI) so
        # that this one can tell an interruption from a search that ended by itself.
        self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)


@dataclass
class StudyState:
    """What a study was asked to do and how far it got; written atomically at each phase."""

    space: str
    name: str
    samples: int | None
    max_epochs: int | None
    seed: int
    smoke: bool
    time_budget: float | None
    data: dict  # search.data_args.DataChoice: dataset, files, backbone
    tracking_uri: str
    register_model: str | None = None
    precision: str = "auto"  # trainables.numerics
    final: str = "retrain"  # search.final.FINAL_MODES
    parent_run_id: str = ""
    phase: str = "search"  # search -> final -> done
    created: str = ""

    def save(self, folder: Path) -> None:
        atomic_write_text(folder / STATE_FILE, json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "StudyState":
        try:
            return cls(**json.loads((folder / STATE_FILE).read_text()))
        except FileNotFoundError:
            raise UserError(f"{folder} has no {STATE_FILE}: it is not a study hpsearch can resume") from None
        except (json.JSONDecodeError, TypeError) as e:
            raise UserError(f"{folder / STATE_FILE} is damaged ({e}); start a new study with another --name") from None


class StudyRun:
    def __init__(self, study: Study, args, root: Path, study_dir: Path, name: str):
        self.study, self.args, self.root, self.dir, self.name = study, args, root, study_dir, name
        self.settings = study.settings

    def _state(self) -> StudyState:
        a, s = self.args, self.settings
        if a.resume:
            state = StudyState.load(self.dir)
            if state.space != self.study.name:
                raise UserError(f"study {self.name!r} searched {state.space!r}, not {self.study.name!r}")
            # Files may have moved since: options given now override the saved ones.
            choice = choice_from_args(a, s.dataset, s.needs_backbone, DataChoice.from_dict(state.data))
            return dataclasses.replace(state, data=choice.to_dict())
        choice = choice_from_args(a, s.dataset, s.needs_backbone)
        return StudyState(space=self.study.name, name=self.name, samples=a.samples, max_epochs=a.max_epochs,
                          seed=a.seed, smoke=a.smoke, time_budget=a.time_budget, data=choice.to_dict(),
                          tracking_uri=a.tracking_uri or default_tracking_uri(self.root),
                          register_model=a.register_model, precision=a.precision, final=a.final,
                          created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def execute(self) -> int:
        args, s = self.args, self.settings
        state = self._state()
        if state.phase == "done":
            print(f"study {self.name} is already complete: {self.dir / 'best.yaml'}")
            return 0
        # Everything that can fail on bad input is checked before any training starts.
        dataset, backbone = load_choice(DataChoice.from_dict(state.data))
        if state.smoke:
            dataset = dataset.sliced(SMOKE_TRAIN, SMOKE_TEST, state.seed)
        search_data = dataset.for_search(s.val_fraction, state.seed)
        tracker = Tracker(state.tracking_uri, self.study.name,
                          self.root / "mlartifacts" if state.tracking_uri == default_tracking_uri(self.root) else None)
        cluster = start_ray(args.address, args.cpus, args.gpus)
        try:
            gpus = int(cluster.gpus) if args.gpus is None else args.gpus
            plan = make_plan(self.study, cluster_cpus=args.cpus or cluster.cpus, node_cpus=cluster.max_node_cpus,
                             cluster_gpus=cluster.gpus,
                             gpus=gpus, samples=state.samples, max_epochs=state.max_epochs,
                             time_budget_min=state.time_budget, seed=state.seed, precision=state.precision)
            if not args.resume:
                self.dir.mkdir(parents=True)
                state.save(self.dir)  # first, so that even a driver killed right now can --resume
            if not state.parent_run_id:
                state.parent_run_id = tracker.start_run(self.name, self._run_params(plan, dataset.source, state.data, state.final), {
                    "hpsearch.space": self.study.name, "hpsearch.kind": "study",
                    "hpsearch.git_commit": git_commit(),
                    **{f"hpsearch.version.{k}": v for k, v in package_versions().items()},
                })
                state.save(self.dir)
            parent = state.parent_run_id
            verb = "resuming" if args.resume else "study"
            budget = f" within {plan.time_budget_s / 60:g} min, final model included" if plan.time_budget_s else ""
            say(f"{verb} {self.name}: {plan.num_samples} trials x up to {plan.max_epochs} epochs{budget}, "
                f"{plan.concurrency} at a time ({plan.cpus_per_trial} CPU"
                f"{f', {plan.gpus_per_trial:g} GPU' if plan.gpus_per_trial else ''} each); "
                f"{len(search_data.train)} train / {len(search_data.val)} validation images")
            say(f"tracking: {state.tracking_uri} (experiment {self.study.name!r}, run {parent})", flush=True)

            if (self.dir / TUNE_DIR / "tuner.pkl").exists():
                tuner = restore_tuner(self.study, plan, search_data, self.dir, backbone)
            else:
                logger = TrialLogger(state.tracking_uri, self.study.name, parent, plan.max_epochs, plan.num_samples,
                                     s.metric, s.mode, MAX_FAILED_FRACTION)
                # A retrain trains on all training images; the checkpoint final trains nothing.
                final_scale = len(dataset.train) / len(search_data.train) if state.final == "retrain" else 0.0
                tuner = build_tuner(self.study, plan, search_data, self.dir, logger, backbone, final_scale)
            with CtrlC() as ctrl_c:
                results = tuner.fit()
            records = trial_records(results, plan.max_epochs)
            if not tracker.available():
                print(f"tracking store {state.tracking_uri} is unreachable; waiting up to "
                      f"{TRACKING_WAIT_MIN} min for it (the results are safe in {self.dir})", file=sys.stderr, flush=True)
                if not tracker.wait_available(TRACKING_WAIT_MIN * 60):
                    print(f"tracking store still unreachable: nothing is lost; when it is back, run\n  "
                          f"{self._resume_command()}", file=sys.stderr)
                    return 1
            self._reconcile(tracker, parent, records)
            table = trials_table(records, s.metric, s.mode, search_data.input_shape, search_data.num_classes, backbone)
            parquet, csv = write_table(table, self.dir)
            write_history(records, self.dir)
            tracker.log_artifact(parent, csv)

            if ctrl_c.pressed:
                self._interrupted()
                return 130
            failed = sum(r.status == "failed" for r in records)
            if too_many_failures(failed, len(records), MAX_FAILED_FRACTION):
                return self._too_many_failures(tracker, parent, records, csv)
            # Only trials with a whole epoch can be final models (best_epoch 0: stopped inside the first).
            scored = table[(table["status"] != "failed") & (table.get("best_epoch", 0) >= 1)].dropna(
                subset=[s.metric]) if s.metric in table else table[:0]
            if scored.empty:
                return self._too_many_failures(tracker, parent, records, csv)
            state.phase = "final"
            state.save(self.dir)
            best = scored.iloc[0]
            self._final(state, tracker, dataset, backbone, search_data, table, best, records, cluster, gpus,
                        parquet, plan, best_checkpoint(results, str(best["trial_id"]), s.metric, s.mode))
            state.phase = "done"
            state.save(self.dir)
            return 0
        finally:
            if cluster.started_here:
                import ray

                ray.shutdown()

    def _reconcile(self, tracker: Tracker, parent: str, records: list[TrialRecord]) -> None:
        try:
            filled = reconcile(tracker, parent, records)
        except Exception as e:  # noqa: BLE001 - the results are safe on disk; say so and go on
            print(f"warning: could not bring MLflow up to date ({type(e).__name__}: {str(e).splitlines()[0]}); "
                  f"every result is in {self.dir}; `--resume` later delivers them", file=sys.stderr)
            return
        if filled:
            say(f"tracking: delivered {filled} epoch results that had not reached MLflow during the search")

    def _resume_command(self) -> str:
        command = f"python -m search.run {self.study.name} --name {self.name} --resume"
        return command + (f" --results-dir {self.args.results_dir}" if self.args.results_dir else "")

    def _interrupted(self) -> None:
        print(f"\ninterrupted: the search state is saved in {self.dir}. Resume with:\n  {self._resume_command()}",
              file=sys.stderr)

    def _too_many_failures(self, tracker: Tracker, parent: str, records: list[TrialRecord], csv: Path) -> int:
        failed = [r for r in records if r.status == "failed"]
        tracker.set_tags(parent, {"hpsearch.status": "failed"})
        tracker.end_run(parent, failed=True)
        print(f"\nsearch stopped: {len(failed)} of {len(records)} trials failed (the limit is "
              f"{MAX_FAILED_FRACTION:.0%}). Errors:", file=sys.stderr)
        for record in failed[:5]:
            last = record.error.strip().splitlines()[-1] if record.error.strip() else "(no message)"
            print(f"  {record.name}: {last}", file=sys.stderr)
        print(f"full table: {csv}; MLflow run {parent}", file=sys.stderr)
        return 1

    def _final(self, state: StudyState, tracker: Tracker, dataset, backbone, search_data, table: pd.DataFrame,
               best: pd.Series, records: list[TrialRecord], cluster, gpus: int, parquet: Path, plan: Plan,
               checkpoint: Path | None) -> None:
        s = self.settings
        record = next(r for r in records if r.trial_id == best["trial_id"])
        params = NetConfig.from_flat(record.config).to_flat()
        parent = state.parent_run_id
        tracker.set_tags(parent, {"hpsearch.best_trial": record.name})
        children = tracker.child_runs(parent)
        if record.trial_id in children:
            tracker.set_tags(children[record.trial_id].run_id, {"hpsearch.best": "true"})
        mode = state.final if checkpoint is not None else "retrain"
        spec = FinalSpec(params, epochs=int(best["best_epoch"]), seed=state.seed,
                         # Nothing else runs now: the final phase takes every core of a node.
                         threads=int(max(1, min(cluster.max_node_cpus, self.args.cpus or cluster.max_node_cpus))),
                         use_gpu=gpus > 0, schedule_epochs=plan.max_epochs, precision=state.precision, mode=mode)
        if mode == "checkpoint":
            say(f"testing {record.name}'s own weights from epoch {spec.epochs} (chosen on validation) once on "
                f"{len(dataset.test)} images", flush=True)
            final = from_checkpoint(spec, checkpoint, search_data, dataset, backbone)
            # Tune keeps one best checkpoint; on a tie in score it names the epoch.
            spec = dataclasses.replace(spec, epochs=final["epoch"])
        else:
            say(f"retraining {record.name} on all {len(dataset.train)} training images for {spec.epochs} epochs "
                f"of its {plan.max_epochs}-epoch schedule, then testing once on {len(dataset.test)} images", flush=True)
            final = retrain(spec, dataset, on_ray=True, backbone=backbone)
        save_model(final, spec, dataset, self.study.name, self.dir, backbone)
        registered = log_final(tracker, parent, final, spec, dataset, self.dir, backbone, state.register_model)
        choice = DataChoice.from_dict(state.data)
        export = BestConfig(
            space=self.study.name, dataset=choice.spec.dataset, hyperparameters=params, epochs=spec.epochs,
            schedule_epochs=plan.max_epochs, final=spec.describe(final["numerics"]),
            data=choice.to_dict(), classes=list(dataset.info.classes),
            seed=state.seed, val_fraction=s.val_fraction,
            metrics={s.metric: float(best[s.metric]), "val_loss": float(best["val_loss"]),
                     "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"]},
            per_class_accuracy=final["per_class_accuracy"],
            search={"name": self.name, "best_trial": record.name, "trials": int(len(table)),
                    "trial_epochs": round(float(table["epochs_seen"].sum()), 2), "smoke": bool(state.smoke),
                    "train_images": len(search_data.train), "results_dir": str(self.dir)},
            mlflow={"tracking_uri": state.tracking_uri, "experiment_id": tracker.experiment_id,
                    "parent_run_id": parent,
                    "trial_run_id": children[record.trial_id].run_id if record.trial_id in children else ""},
            versions=package_versions(), git_commit=git_commit(),
        )
        export.save(self.dir / "best.yaml")
        tracker.log_artifact(parent, self.dir / "best.yaml")
        report = self._report(tracker, parent)
        tracker.set_tags(parent, {"hpsearch.status": "completed"})
        tracker.end_run(parent)
        self._summary(table, params, final, parquet, report, spec.mode)
        if registered:
            print(f"registered model: {registered} (MLflow model registry at {state.tracking_uri})")

    def _report(self, tracker: Tracker, parent: str) -> Path | None:
        """report.html and its figures, also on the parent run (the page at the artifact root,
        the PNGs under report/, so its relative links hold there too)."""
        try:
            from search.report import REPORT_DIR, write_report

            report = write_report(self.dir)
        except Exception as e:  # noqa: BLE001 - the study's results are complete; the report can be redone
            print(f"warning: could not write the report ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                  f"run `python -m search.report {self.dir}` to retry", file=sys.stderr)
            return None
        tracker.log_artifact(parent, report.html)
        for figure in report.figures.values():
            tracker.log_artifact(parent, figure, REPORT_DIR)
        return report.html

    def _run_params(self, plan, data_source: str, data: dict, final: str) -> dict:
        a = self.args
        return {
            "space": self.study.name, "samples": plan.num_samples, "max_epochs": plan.max_epochs,
            "seed": a.seed, "gpus": a.gpus, "cpus": a.cpus, "time_budget_min": a.time_budget,
            "address": a.address, "smoke": a.smoke, "data_source": data_source,
            "concurrency": plan.concurrency, "cpus_per_trial": plan.cpus_per_trial,
            "gpus_per_trial": plan.gpus_per_trial, "max_mmacs": None if plan.max_macs is None else plan.max_macs / 1e6,
            "scheduler": self.settings.scheduler, "command": redact(" ".join(sys.argv)),
            "precision": plan.precision, "final": final,
            **{f"data.{k}": v for k, v in data.items()},
        }

    def _summary(self, table: pd.DataFrame, params: dict, final: dict, parquet: Path, report: Path | None,
                 mode: str) -> None:
        columns = [c for c in TOP_COLUMNS if c in table]
        if verbosity() >= Verbosity.NORMAL:
            print("\ntop 5 trials (by validation accuracy):")
            print(table[columns].head(5).to_string(index=False, float_format=lambda v: f"{v:.4g}") + "\n")
        else:  # --quiet: the best configuration in one line instead of the table
            best = table.iloc[0]
            print(f"best: {best['trial']} ({self.settings.metric} {best[self.settings.metric]:.4f}): "
                  + " ".join(f"{k}={v}" for k, v in params.items()))
        what = "best trial's own weights" if mode == "checkpoint" else "retrained best configuration"
        print(f"test accuracy of the {what}: {final['test_accuracy']:.4f} "
              f"(measured once, on images the search never saw)")
        print(f"results: {self.dir / 'best.yaml'}, {parquet}, {parquet.with_suffix('.csv')}, {self.dir / 'model.pt'}")
        if report is not None:
            print(f"report: {report} (open it in a browser)")
