"""Retrain an exported configuration (best.yaml) and test it once.

CONFIG is a best.yaml (written by `hpsearch run` or `hpsearch export`) or a study, by name or
folder, whose best.yaml is retrained. The training is the search's own and the final model's, so
the test accuracy it prints is comparable with the one in best.yaml. Also `python -m search.train`
and `hpsearch-train`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

from search.cli import Parser, describe, entry_prog, run_cli
from search.data_args import DataChoice, add_data_arguments, choice_from_args, load_choice
from search.results.files import BEST_FILE
from search.results.request import SMOKE_TEST, SMOKE_TRAIN
from search.run import PRECISIONS, check_name, check_positive, check_seed, results_root
from search.tune.cluster import check_local_resources
from search.util.credentials import adopt_credentials
from trainables.errors import UserError

PROG = "python -m search.train"


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=describe(__doc__))
    p.add_argument("config", metavar="CONFIG",
                   help="a best.yaml, or a study (its name in --results-dir, or its folder) whose best.yaml to use")
    p.add_argument("--epochs", type=int, default=None, help="override the epoch count in the file")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="instead of a number of epochs: train for as many as fit in MIN minutes (the whole "
                        "command: loading, training, testing, saving), the learning-rate schedule stretched "
                        "to them")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the training and of the --smoke slice (default: the seed in the file)")
    p.add_argument("--cpus", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="numerics: auto (bf16 where the hardware has it, else fp32), bf16 or fp32")
    p.add_argument("--gpus", type=int, default=None, help="0 to stay on the CPU (default: a GPU if there is one)")
    p.add_argument("--name", default=None, help="output folder name (default: SPACE-retrain-DATE-TIME)")
    p.add_argument("--results-dir", default=None,
                   help="where the retrained model's folder goes, and where CONFIG is found by name (default: "
                        "$HPSEARCH_RESULTS_DIR or ~/hpsearch-results)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///RESULTS_DIR/mlflow.db)")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny run on a slice ({SMOKE_TRAIN} training, {SMOKE_TEST} test images)")
    add_data_arguments(p)  # each overrides what best.yaml says (e.g. files that have moved)
    return p


def config_file(given: str, results_dir: str | None) -> Path:
    """A best.yaml as given, or the one of a study given by name or folder (search.results.locate)."""
    path = Path(given).expanduser()
    if path.is_file() or path.suffix.lower() in (".yaml", ".yml", ".json"):
        return path  # a missing one is BestConfig.load's one line
    from search.results.locate import find_study

    folder = find_study(given, results_dir)
    if not (folder / BEST_FILE).is_file():
        raise UserError(f"study {folder.name} has no {BEST_FILE} yet (its final phase has not run); resume it, "
                        "or give a best.yaml from `hpsearch export`")
    return folder / BEST_FILE


def study_of(space: str, config: Path):
    """The study best.yaml was searched in: a registered one, or the user's file or module that
    its study folder's study.json names (`hpsearch run ./my_study.py` keeps it there)."""
    import json

    from search.results.files import STATE_FILE
    from spaces.loading import load_study_source

    source = None
    try:
        source = json.loads((config.parent / STATE_FILE).read_text()).get("study_source")
    except (OSError, ValueError, AttributeError):  # no study folder around it (an export): by name
        pass
    study = load_study_source(source if isinstance(source, str) and source else space)
    if study.name != space:
        raise UserError(f"{config} was searched in study {space!r}, but {source} now registers {study.name!r}; "
                        "give the best.yaml of a study of that file, or restore the file")
    return study


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    check_positive(args, ("epochs", "cpus", "time_budget"))
    if args.epochs is not None and args.time_budget is not None:
        raise UserError("--epochs and --time-budget both set the training's length; pass one")
    check_name(args.name)
    check_seed(args.seed)
    check_local_resources(args.cpus, args.gpus)
    from search.results.best_config import BestConfig
    from search.util.provenance import git_commit, package_versions
    from trainables.model import NetConfig

    args.config = str(config_file(args.config, args.results_dir))
    best = BestConfig.load(Path(args.config))
    study = study_of(best.space, Path(args.config))  # its dataset and settings define the run
    saved = DataChoice.from_dict(best.data) if best.data else None
    choice = choice_from_args(args, best.dataset, study.settings.needs_backbone, saved)
    root = results_root(args.results_dir)
    name = args.name or f"{best.space}-retrain-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out_dir = root / name
    if out_dir.exists():
        raise UserError(f"{out_dir} already exists; pass another --name")

    import torch

    from search.study.final import FinalSpec, log_final, retrain, save_model
    from search.tracking.tracker import Tracker, artifact_root, default_tracking_uri
    dataset, backbone = load_choice(choice)
    if best.classes and list(dataset.info.classes) != list(best.classes):
        raise UserError(f"the data's classes ({', '.join(dataset.info.classes)}) are not the ones {args.config} was "
                        f"searched on ({', '.join(best.classes)}); pass the same data")
    seed = best.seed if args.seed is None else args.seed
    if args.smoke:
        dataset = dataset.sliced(SMOKE_TRAIN, SMOKE_TEST, seed)
    epochs = args.epochs or best.epochs
    # The exported trial's schedule, unless --epochs (or --time-budget) asks for a run of another length.
    schedule = best.schedule_epochs if args.epochs is None and args.time_budget is None else None
    deadline = None
    if args.time_budget is not None:
        from search.tune.budget import AFTER_FINAL_S
        from search.util.clock import command_started

        # The first plan, until the first epochs measure the pace (trainables.train.Deadline).
        deadline = command_started() + args.time_budget * 60 - AFTER_FINAL_S
    args.tracking_uri = adopt_credentials(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None)
    uri = args.tracking_uri or default_tracking_uri(root)
    tracker = Tracker(uri, best.space, artifact_root(uri))
    threads = args.cpus or os.cpu_count() or 1
    spec = FinalSpec(NetConfig.from_flat(best.hyperparameters), epochs=epochs, seed=seed, threads=threads,
                     use_gpu=torch.cuda.is_available() and args.gpus != 0, schedule_epochs=schedule,
                     precision=args.precision, mode="stretch" if deadline else "retrain", deadline=deadline)
    out_dir.mkdir(parents=True)
    run_id = tracker.start_run(name, {"config_file": str(Path(args.config).resolve()), "epochs": epochs, "seed": seed,
                                      "smoke": args.smoke, "data_source": dataset.source, **best.hyperparameters},
                               {"hpsearch.space": best.space, "hpsearch.kind": "retrain"})
    length = f"{args.time_budget:g} min (the schedule stretched to the epochs that fit)" if deadline else \
        f"{epochs} epochs"
    print(f"retraining {args.config} ({best.space}) on {len(dataset.train)} images for {length}, "
          f"then testing once on {len(dataset.test)} images", flush=True)
    final = retrain(spec, dataset, on_ray=False, backbone=backbone)
    if deadline:
        epochs = schedule = len(final.history)
        spec = dataclasses.replace(spec, epochs=epochs, schedule_epochs=epochs)
    save_model(final, spec, dataset, best.space, out_dir, backbone)
    log_final(tracker, run_id, final, spec, dataset, out_dir, backbone)
    result = dataclasses.replace(
        best, epochs=epochs, seed=seed, created="", schedule_epochs=schedule, final=spec.describe(final.numerics),
        data=choice.to_dict(), classes=list(dataset.info.classes), versions=package_versions(), git_commit=git_commit(),
        metrics={**best.metrics, "test_accuracy": final.test_accuracy, "test_loss": final.test_loss},
        per_class_accuracy=final.per_class_accuracy,
        mlflow={"tracking_uri": uri, "experiment_id": tracker.experiment_id, "retrain_run_id": run_id},
    )
    result.save(out_dir / BEST_FILE)
    tracker.end_run(run_id)
    # A configuration written by hand (or one whose study never tested) has no earlier figure to set beside.
    earlier = best.metrics.get("test_accuracy")
    reported = f" (search reported {earlier:.4f})" if earlier is not None else ""
    print(f"test accuracy: {final.test_accuracy:.4f}{reported}; results in {out_dir}")
    return 0


def cli() -> None:
    """`python -m search.train` and the hpsearch-train script; `hpsearch train` is search.main's."""
    run_cli(lambda: main(prog=entry_prog("search.train")))


if __name__ == "__main__":
    cli()
