"""One study from start to finish: data, tracking, Ray, the search, the trials table, the final
model and best.yaml. The CLI (`search.run`) only parses and validates arguments."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from search.errors import UserError
from search.export import BestConfig, git_commit, package_versions, trials_table, write_table
from search.final import FinalSpec, log_final, retrain, save_model
from search.progress import Progress
from search.cluster import start_ray
from search.run import SMOKE_TEST, SMOKE_TRAIN
from search.tracking import Tracker, TrialLogger, default_tracking_uri
from search.tuner import build_tuner, make_plan
from spaces import Study
from trainables.data import load_dataset
from trainables.model import CNNConfig

TOP_COLUMNS = ["trial", "status", "epochs", "best_epoch", "val_accuracy", "mmacs", "conv_layers",
               "kernel_size", "activation", "batch_norm", "optimizer", "lr", "batch_size"]


class StudyRun:
    def __init__(self, study: Study, args, root: Path, study_dir: Path, name: str):
        self.study, self.args, self.root, self.dir, self.name = study, args, root, study_dir, name
        self.settings = study.settings

    def execute(self) -> int:
        args, s = self.args, self.settings
        # Everything that can fail on bad input is checked before any training starts.
        dataset = load_dataset(s.dataset, args.data_dir)
        if args.smoke:
            dataset = dataset.sliced(SMOKE_TRAIN, SMOKE_TEST, args.seed)
        search_data = dataset.for_search(s.val_fraction, args.seed)
        uri = args.tracking_uri or default_tracking_uri(self.root)
        tracker = Tracker(uri, self.study.name, None if args.tracking_uri else self.root / "mlartifacts")
        cluster = start_ray(args.address, args.cpus, args.gpus)
        try:
            gpus = int(cluster.gpus) if args.gpus is None else args.gpus
            plan = make_plan(self.study, cluster_cpus=args.cpus or cluster.cpus, cluster_gpus=cluster.gpus,
                             gpus=gpus, samples=args.samples, max_epochs=args.max_epochs,
                             time_budget_min=args.time_budget, seed=args.seed)
            self.dir.mkdir(parents=True)
            parent = tracker.start_run(self.name, self._run_params(plan, dataset.source), {
                "hpsearch.space": self.study.name, "hpsearch.kind": "study",
                "hpsearch.git_commit": git_commit(),
                **{f"hpsearch.version.{k}": v for k, v in package_versions().items()},
            })
            print(f"study {self.name}: {plan.num_samples} trials x up to {plan.max_epochs} epochs, "
                  f"{plan.concurrency} at a time ({plan.cpus_per_trial} CPU"
                  f"{f', {plan.gpus_per_trial:g} GPU' if plan.gpus_per_trial else ''} each); "
                  f"{len(search_data.train)} train / {len(search_data.val)} validation images")
            print(f"tracking: {uri} (experiment {self.study.name!r}, run {parent})", flush=True)
            progress = Progress(plan.num_samples, s.metric, s.mode)
            callback = TrialLogger(tracker, parent, plan.max_epochs, progress)
            results = build_tuner(self.study, plan, search_data, self.dir, [callback]).fit()

            table = trials_table(results, callback.names, s.metric, s.mode, plan.max_epochs,
                                 search_data.input_shape, search_data.num_classes)
            parquet, csv = write_table(table, self.dir)
            tracker.log_artifact(parent, csv)
            scored = table[table["status"] != "failed"].dropna(subset=[s.metric]) if s.metric in table else table[:0]
            if scored.empty:
                tracker.set_tags(parent, {"hpsearch.status": "failed"})
                tracker.end_run(parent, failed=True)
                print(f"no trial finished an epoch; errors are in {csv} and {self.dir / 'tune'}", file=sys.stderr)
                return 1
            best = scored.iloc[0]
            params = CNNConfig.from_flat(_hyperparameters(best, results)).to_flat()
            tracker.set_tags(parent, {"hpsearch.best_trial": str(best["trial"])})
            if best["trial_id"] in callback.run_ids:
                tracker.set_tags(callback.run_ids[best["trial_id"]], {"hpsearch.best": "true"})

            spec = FinalSpec(params, epochs=int(best["best_epoch"]), seed=args.seed,
                             threads=int(max(1, min(cluster.max_node_cpus, args.cpus or cluster.max_node_cpus))),
                             use_gpu=gpus > 0)
            print(f"retraining {best['trial']} on all {len(dataset.train)} training images for "
                  f"{spec.epochs} epochs, then testing once on {len(dataset.test)} images", flush=True)
            final = retrain(spec, dataset, on_ray=True)
            save_model(final, spec, dataset, self.study.name, self.dir)
            log_final(tracker, parent, final, spec, dataset, self.dir)
            export = BestConfig(
                space=self.study.name, dataset=s.dataset, hyperparameters=params, epochs=spec.epochs,
                seed=args.seed, val_fraction=s.val_fraction,
                metrics={s.metric: float(best[s.metric]), "val_loss": float(best["val_loss"]),
                         "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"]},
                per_class_accuracy=final["per_class_accuracy"],
                search={"name": self.name, "best_trial": str(best["trial"]), "trials": int(len(table)),
                        "trial_epochs": int(table["epochs"].sum()), "smoke": bool(args.smoke),
                        "train_images": len(search_data.train), "results_dir": str(self.dir)},
                mlflow={"tracking_uri": uri, "experiment_id": tracker.experiment_id, "parent_run_id": parent,
                        "trial_run_id": callback.run_ids.get(best["trial_id"], "")},
                versions=package_versions(), git_commit=git_commit(),
            )
            export.save(self.dir / "best.yaml")
            tracker.log_artifact(parent, self.dir / "best.yaml")
            tracker.set_tags(parent, {"hpsearch.status": "completed"})
            tracker.end_run(parent)
            self._summary(table, final, parquet)
            return 0
        finally:
            if cluster.started_here:
                import ray

                ray.shutdown()

    def _run_params(self, plan, data_source: str) -> dict:
        a = self.args
        return {
            "space": self.study.name, "samples": plan.num_samples, "max_epochs": plan.max_epochs,
            "seed": a.seed, "gpus": a.gpus, "cpus": a.cpus, "time_budget_min": a.time_budget,
            "address": a.address, "smoke": a.smoke, "data_source": data_source,
            "concurrency": plan.concurrency, "cpus_per_trial": plan.cpus_per_trial,
            "gpus_per_trial": plan.gpus_per_trial, "max_mmacs": None if plan.max_macs is None else plan.max_macs / 1e6,
            "scheduler": self.settings.scheduler, "command": " ".join(sys.argv),
        }

    def _summary(self, table: pd.DataFrame, final: dict, parquet: Path) -> None:
        columns = [c for c in TOP_COLUMNS if c in table]
        print("\ntop 5 trials (by validation accuracy):")
        print(table[columns].head(5).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"\ntest accuracy of the retrained best configuration: {final['test_accuracy']:.4f} "
              f"(measured once, on images the search never saw)")
        print(f"results: {self.dir / 'best.yaml'}, {parquet}, {parquet.with_suffix('.csv')}, {self.dir / 'model.pt'}")


def _hyperparameters(best: pd.Series, results) -> dict:
    """The best trial's config exactly as Tune ran it (the table has NaN for absent layers)."""
    for result in results:
        if result.metrics and result.metrics.get("trial_id") == best["trial_id"]:
            return dict(result.config)
    raise UserError(f"best trial {best['trial_id']} not found in the results")  # pragma: no cover
