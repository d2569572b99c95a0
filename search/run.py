"""Search a study, retrain its best configuration and test it once.

STUDY is one of hpsearch's studies (see --list), a Python file of yours that calls register_study
(./my_study.py, or ./my_study.py:NAME where the file registers several) or a module path
(my_package.my_module:study); `hpsearch check STUDY` tries one out in a minute. The results go to
a folder of their own in the results directory (best.yaml, the trials tables, model.pt and
report.html), every trial to MLflow. Also `python -m search.run`.
"""

from __future__ import annotations

import time

# A time budget covers the whole command: its clock starts here, before the imports.
COMMAND_STARTED = time.time()

import datetime as dt  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from search.cli import Parser, describe, entry_prog, run_cli, show_notes  # noqa: E402
from search.data_args import DataChoice, add_data_arguments, choice_from_args, dataset_asked  # noqa: E402
from search.results.disk import study_writes  # noqa: E402
from search.results.request import SMOKE_EPOCHS, SMOKE_SAMPLES, SMOKE_TRAIN, Resources, StudyRequest, StudyState  # noqa: E402
from search.results.resuming import restore_failures  # noqa: E402
from search.results.study_fields import FINAL_MODES  # noqa: E402
from search.study.claim import claim, release_if_unused  # noqa: E402
from search.tune.cluster import check_local_resources, check_reachable  # noqa: E402
from search.util.credentials import adopt_credentials, redact  # noqa: E402
from trainables.errors import UserError  # noqa: E402

# Spelled out here, not imported, so that `--help` and argument errors need no torch import;
# tests check they match trainables.numerics.PRECISIONS.
PRECISIONS = ("auto", "bf16", "fp32")
SCHEDULERS = ("promotion", "stopping", "fifo")


PROG = "python -m search.run"
STUDY_HELP = "the study: a registered name (see --list), ./my_study.py or my_package.my_module:study"


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=describe(__doc__))
    p.add_argument("space", nargs="?", metavar="STUDY", help=STUDY_HELP)
    p.add_argument("--list", action="store_true", help="list the registered studies and exit")
    p.add_argument("--gpus", type=int, default=None, help="GPUs to use (default: all the cluster has)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs to use (default: all the cluster has)")
    p.add_argument("--samples", type=int, default=None, help="number of trials (default: the study's)")
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per trial at most (default: the study's)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="minutes for the search and the final model together: the search stops when the time "
                        "left is what the final phase needs (default: the study's CPU budget, if any)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sampler, of every trial's training and of the data's split (validation "
                        "images, the --smoke slice, the folds of --cv); default 0")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto' or HOST:PORT)")
    p.add_argument("--name", default=None,
                   help="the study's name: its folder in --results-dir (default: STUDY-DATE-TIME)")
    p.add_argument("--resume", action="store_true",
                   help="continue the study --name after a crash or Ctrl-C (its settings come from its study.json)")
    p.add_argument("--results-dir", default=None,
                   help="where the study's folder goes (default: $HPSEARCH_RESULTS_DIR or ~/hpsearch-results)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///RESULTS_DIR/mlflow.db)")
    p.add_argument("--optuna-storage", default=None, metavar="URL",
                   help="database for the study's Optuna trials, e.g. postgresql://user@host/optuna (default: "
                        "SQLite file optuna.db in the study folder; optuna-dashboard reads either)")
    p.add_argument("--warm-start", nargs="+", default=None, metavar="SOURCE",
                   help="start TPE from earlier searches, without running them again: study folders or names in "
                        "--results-dir (of this space or one whose parameters overlap) and scikit-learn "
                        "GridSearchCV cv_results_ saved as CSV")
    p.add_argument("--warm-start-map", default=None, metavar="FILE",
                   help="YAML mapping a grid CSV's parameter names (and values) onto this space's; "
                        "see docs/warm-starts.md")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="numerics of training and evaluation: auto (bf16 where the hardware has it, else fp32; "
                        "channels-last always), bf16 or fp32; weights are saved as fp32 either way")
    p.add_argument("--final", choices=FINAL_MODES, default="continue",
                   help="the final model: continue (default: the best trial's own weights trained on, on all "
                        "training images, for the time the budget leaves, its learning-rate schedule stretched to "
                        "that length, so its search epochs count; without a time budget, as retrain), stretch (the "
                        "same, but the best configuration trained afresh), retrain (on all training images, "
                        "following the best trial's schedule to its best epoch) or checkpoint (the best trial's "
                        "own weights at its best epoch)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None,
                   help="how trials are cut short (default: the study's, promotion): promotion pauses a trial at "
                        "each rung and resumes the best, stopping (Ray's ASHA) stops poor trials at a rung for "
                        "good, fifo runs every trial to --max-epochs")
    p.add_argument("--cv", type=int, default=None, metavar="K",
                   help="score each trial by K-fold stratified cross-validation on the training data (the mean "
                        "over folds, its spread recorded) instead of one validation split: K times the compute "
                        "per trial, for small data whose validation split would be a handful of examples; "
                        "every class needs K examples or more")
    p.add_argument("--max-mmacs", type=float, default=None, metavar="N",
                   help="networks of at most N million multiply-adds per image (replaces the study's CPU/GPU "
                        "cost cap): only such networks are proposed")
    p.add_argument("--max-latency-ms", type=float, default=None, metavar="MS",
                   help="the best trial must answer one image in at most MS milliseconds (batch 1, measured "
                        "on the device that trained it); slower trials are marked fits=false and never chosen")
    p.add_argument("--register-model", default=None, metavar="NAME",
                   help="register the final model in the MLflow model registry under NAME (a new version each study)")
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("--quiet", "-q", action="store_true",
                      help="print only errors and the final summary (best configuration, test accuracy, results)")
    talk.add_argument("--verbose", "-v", action="store_true",
                      help="also print every epoch and Ray/Tune's own output")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny first try: {SMOKE_TRAIN} training images, 2 trials, 1 epoch")
    add_data_arguments(p)
    return p


def check_positive(args, flags=("samples", "max_epochs", "cpus", "time_budget")) -> None:
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and not math.isfinite(value):
            raise UserError(f"--{flag.replace('_', '-')} must be a finite number, got {value}")
        if value is not None and value <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, got {value}")
    if getattr(args, "gpus", None) is not None and args.gpus < 0:
        raise UserError(f"--gpus must be 0 or more, got {args.gpus}")


NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")


def check_name(name: str | None) -> None:
    """A study's folder name stays inside the results folder: no separators, no '.' or '..'."""
    if name is not None and (not NAME_PATTERN.fullmatch(name) or name in (".", "..")):
        raise UserError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only (a folder name inside "
                        "--results-dir), e.g. --name fashion-run1")


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed < 2 ** 32:
        raise UserError(f"--seed must be between 0 and {2 ** 32 - 1}, got {seed}")


def check_cv(k: int | None, final: str) -> None:
    if k is None:
        return
    from trainables.crossval import check_k

    check_k(k)
    if final == "checkpoint":
        raise UserError(f"--final checkpoint takes a trial's own weights, and under --cv {k} a trial has {k} "
                        "networks, none trained on all the training data; use --final retrain")


def results_root(arg: str | None) -> Path:
    """The results directory (search.results.locate.results_dir), made if need be and checked writable."""
    from search.results.locate import results_dir

    root = results_dir(arg).resolve()
    for place in (root, *root.parents):
        if place.exists() and not place.is_dir():
            what = "is a file" if place == root else f"is inside {place}, which is a file"
            fix = "set HPSEARCH_RESULTS_DIR to" if not arg and os.environ.get("HPSEARCH_RESULTS_DIR") else \
                "pass --results-dir"
            raise UserError(f"results directory {root} {what}, not a folder; {fix} a folder (new or existing)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        # A name of its own: two searches started at once into one root must not unlink each other's probe.
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"results directory {root} is not writable ({e.strerror}); pass --results-dir") from None
    return root


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    from spaces.loading import lasting_source, load_installed, load_study_source
    from spaces.registry import get_study, list_studies

    if args.list:
        load_installed()  # installed packages' studies (the hpsearch.studies entry points) too
        for name in list_studies():
            study = get_study(name)
            s = study.settings
            budget = f"{len(study.grid) if study.grid is not None else s.num_samples} trials x {s.max_epochs} epochs"
            folders = "folders" if s.takes_images else ""
            print(f"{name:<18} {s.dataset:<14} {folders:<8} {budget:<22} {study.description}")
        print("\nfolders: the study also takes a folder of your own images (--data-dir DIR, one sub-folder per "
              "class; see --image-size, --channels, --invert)")
        return 0
    if not args.space:
        raise UserError(f"name a study to run, e.g. `{prog} fashion_space` (see --list)")
    check_positive(args)
    check_name(args.name)
    check_seed(args.seed)
    check_cv(args.cv, args.final)
    from search.results.front import DeviceLimits

    DeviceLimits(args.max_mmacs, args.max_latency_ms)  # refuses a limit that is not a positive number
    # The cluster configs point drivers at the head's MLflow server this way.
    # Credentials in the URI go to MLflow's basic-auth variables; only the bare URI is kept.
    args.tracking_uri = adopt_credentials(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None)
    if args.register_model is not None and not args.register_model.strip():
        raise UserError("--register-model needs a model name, e.g. --register-model fashion-cnn")
    study = load_study_source(args.space)
    # What loads the study again on --resume, from any folder: None for a registered name.
    args.study_source = None if args.space.strip() == study.name else lasting_source(args.space)
    if args.address:
        check_reachable(args.address)
    else:
        check_local_resources(args.cpus, args.gpus)
    if args.smoke:
        args.samples = args.samples or SMOKE_SAMPLES
        args.max_epochs = args.max_epochs or SMOKE_EPOCHS
    root = results_root(args.results_dir)
    import optuna

    # Before the first Optuna study (a warm start's sources are read through one): its INFO line
    # per study created, and its experimental and deprecation warnings, are not the user's.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warm = check_warm_start(args, study, root)
    if args.optuna_storage:
        from search.results.optuna_store import check_url

        check_url(args.optuna_storage)
    if args.resume and not args.name:
        raise UserError("--resume needs the --name of the study to continue")
    name = args.name or f"{study.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    study_dir = root / name
    if args.resume and not study_dir.is_dir():
        raise UserError(f"no study {name!r} in {root} to resume; check --name and --results-dir")
    if study_dir.exists() and not args.resume:
        raise UserError(f"results for {name!r} already exist in {study_dir}; pass --resume to continue "
                        "that study or another --name")

    from search.util.progress import Verbosity, set_verbosity

    set_verbosity(Verbosity.QUIET if args.quiet else Verbosity.VERBOSE if args.verbose else Verbosity.NORMAL)
    show_notes(quiet=args.quiet)
    # Tune's console tables would bury the progress bar (--verbose turns them on); failures
    # still reach the summary.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # see search.study.phases.CtrlC
    # No TensorBoard files: Tune reads this when a search starts or resumes (search.tune.tuner.result_loggers).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # The delivery queue retries an unreachable tracking server itself, without blocking; MLflow's
    # own retries would stall each call for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # On a tracking server MLflow prints two "View run" lines for every run it ends, after one more
    # request to fetch the run: for a 1,000-trial study 2,000 lines and 1,000 requests in the
    # delivery queue's way (python -m search.bench scale).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from search.study.study_run import StudyRun
    from search.util.clock import mark_command_start

    mark_command_start(COMMAND_STARTED)
    if args.resume:
        state = resumed_state(args, study, study_dir)
        with study_writes(state), restore_failures():  # a full disk; a searcher Tune could not restore
            return StudyRun(study, state, Resources(args.address, args.cpus, args.gpus), resuming=True).execute()
    claim(study_dir)  # before the data loads and Ray starts: of two studies of one name, one gets it
    try:
        state = StudyState(new_request(args, study, root, name, warm))
        with study_writes(state):
            return StudyRun(study, state, Resources(args.address, args.cpus, args.gpus), resuming=False).execute()
    except BaseException:
        release_if_unused(study_dir)  # refused before it began: nothing is left behind
        raise


def check_warm_start(args, study, root: Path) -> tuple[str, ...]:
    """The --warm-start sources as resolved paths, checked before anything starts."""
    if args.warm_start_map and not args.warm_start:
        raise UserError("--warm-start-map maps a grid CSV given with --warm-start; pass --warm-start GRID.csv too")
    if args.warm_start_map and not Path(args.warm_start_map).expanduser().is_file():
        raise UserError(f"--warm-start-map {args.warm_start_map}: no such file")
    if not args.warm_start:
        return ()
    if args.resume:
        raise UserError("--warm-start starts a new study; a resumed study keeps the trials it started from "
                        "(drop --warm-start)")
    if study.grid is not None:
        raise UserError(f"{study.name} runs a fixed grid, which learns nothing from earlier trials; "
                        "warm-start a TPE study such as fashion_space")
    from search.tune.warm import check_sources, resolve
    from spaces.study import SpaceContext

    paths = resolve(args.warm_start, root)
    s = study.settings
    # The space uncapped (its example input, every backbone layer): what the capped space the
    # study searches holds, it holds too. Read again once the data and the cluster are known.
    ctx = SpaceContext(s.example_input, s.example_classes, None, 10 ** 6)
    check_sources(paths, study.define, ctx, s.metric, s.mode, args.max_epochs or s.max_epochs,
                  Path(args.warm_start_map).expanduser() if args.warm_start_map else None,
                  dataset_asked(args, s.dataset))
    return tuple(str(p) for p in paths)


def new_request(args, study, root: Path, name: str, warm: tuple[str, ...] = ()) -> StudyRequest:
    from search.tracking.tracker import default_tracking_uri

    s = study.settings
    return StudyRequest(
        space=study.name, study_source=args.study_source, name=name, results_root=str(root),
        data=choice_from_args(args, s.dataset, s.needs_backbone).to_dict(),
        tracking_uri=args.tracking_uri or default_tracking_uri(root), samples=args.samples,
        max_epochs=args.max_epochs, seed=args.seed, smoke=args.smoke, time_budget=args.time_budget,
        register_model=args.register_model, precision=args.precision, final=args.final, cv=args.cv,
        scheduler=args.scheduler,
        max_mmacs=args.max_mmacs, max_latency_ms=args.max_latency_ms, optuna_storage=args.optuna_storage,
        warm_start=warm,
        warm_start_map=str(Path(args.warm_start_map).expanduser().resolve()) if args.warm_start_map else None,
        command=redact(" ".join(sys.argv)), created=StudyRequest.now(),
    )


def resumed_state(args, study, study_dir: Path) -> StudyState:
    """The saved request is the study; what may change is where its data files are (files move)
    and the tracking store (a store lost with a cluster's head, or a server that moved): given
    again, they replace the saved ones. Where it runs (Resources) is this command's."""
    import dataclasses

    from search.results.resuming import check_store, own_run
    from search.util.progress import say

    state = StudyState.load(study_dir)
    if state.request.space != study.name:
        raise UserError(f"study {state.request.name!r} searched {state.request.space!r}, not {study.name!r}")
    own_run(state, say)  # a copy of a study still in its original place: a run of its own
    check_store(study_dir, tpe=study.grid is None)  # before the data loads and Ray starts
    s = study.settings
    choice = choice_from_args(args, s.dataset, s.needs_backbone, DataChoice.from_dict(state.request.data))
    uri = args.tracking_uri or state.request.tracking_uri
    if uri != state.request.tracking_uri:
        say(f"tracking store: {uri} (was {state.request.tracking_uri})")
    state.request = dataclasses.replace(state.request, data=choice.to_dict(), tracking_uri=uri)
    return state


def cli() -> None:
    """`python -m search.run`; `hpsearch run` is search.main's."""
    run_cli(lambda: main(prog=entry_prog("search.run")))


if __name__ == "__main__":
    cli()
