"""Command line of the benchmarks: `hpsearch bench` and `python -m search.bench`; what they
measure is in search/bench/__init__.py, whose docstring is their --help."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import search.bench
from search.bench import common
from search.bench.common import FULL, QUICK, Bench, default_out, quiet
from search.cli import Parser, describe, entry_prog, run_cli
from trainables.errors import UserError

PARTS = ("numerics", "overhead", "datapath", "efficiency", "scaling", "peer", "warmstart", "scale")
# The parts that search in a local 2-CPU Ray session (search.bench.common.local_ray): --quick runs
# them one after another in one session.
SHARED_RAY = ("efficiency", "scaling", "warmstart")


PROG = "python -m search.bench"


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(prog=prog, description=describe(search.bench.__doc__))
    p.add_argument("parts", nargs="*", default=["all"], metavar="PART",
                   help=f"all (default) or any of: {', '.join(PARTS)} (memory is measured during overhead)")
    p.add_argument("--output", "-o", default=None, metavar="DIR",
                   help="output folder (default: RESULTS_DIR/bench/DATE-TIME, RESULTS_DIR being "
                        "$HPSEARCH_RESULTS_DIR or ~/hpsearch-results)")
    # The name it had before the commands agreed on --output: still taken, no longer shown.
    p.add_argument("--out", dest="output", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", default=None, help="dataset root holding FashionMNIST/raw/ and "
                   "cifar10/cifar10-subset.npz (default: $HPSEARCH_DATA_DIR, else ../shared/datasets)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test); figures mean nothing")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the benchmarks' samplers, data slices and training (default 0)")
    p.add_argument("--size", action="append", default=[], metavar="NAME=N",
                   help="override one of the sizes in search/bench/common.py: Sizes, e.g. efficiency_train=6000 "
                        "(repeatable; 'all' for the whole training set)")
    return p


def sizes(base, overrides: list[str]):
    """`base` with NAME=N overrides; a bad name or value is a one-line error."""
    fields = {f.name: f for f in dataclasses.fields(base)}
    changes = {}
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in fields or not value:
            raise UserError(f"--size {item!r}: expected NAME=N with NAME one of {', '.join(fields)}")
        if value == "all" and "None" in str(fields[name].type):
            changes[name] = None
            continue
        try:
            changes[name] = int(value)
        except ValueError:
            raise UserError(f"--size {item!r}: {value!r} is not a whole number") from None
        if changes[name] < 1:
            raise UserError(f"--size {item!r}: must be 1 or more")
    return dataclasses.replace(base, **changes)


def data_root(arg: str | None) -> Path:
    root = Path(
        arg or os.environ.get("HPSEARCH_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "datasets"
    )
    if not (root / "FashionMNIST").is_dir():
        raise UserError(f"no FashionMNIST/ under {root}; pass --data-dir DIR holding FashionMNIST/raw/ "
                        "and cifar10/cifar10-subset.npz")
    return root.expanduser().resolve()


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    parts = list(PARTS) if "all" in args.parts else args.parts
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise UserError(f"unknown benchmark(s) {', '.join(unknown)}; choose from all, {', '.join(PARTS)}")
    root = data_root(args.data_dir)
    out = Path(args.output).expanduser().resolve() if args.output else default_out()
    out.mkdir(parents=True, exist_ok=True)
    quiet()
    bench = Bench(out, str(root), sizes(QUICK if args.quick else FULL, args.size), args.seed,
                  quick=args.quick)
    if args.quick:
        parts.sort(key=lambda part: part in SHARED_RAY)  # stable: otherwise in the order asked for
    print(f"benchmarks {', '.join(parts)} -> {out}", flush=True)
    timings = {}
    for part in parts:
        common.KEEP_RAY = args.quick and part in SHARED_RAY
        if not common.KEEP_RAY:
            common.release_ray()  # the others start Ray their own way (peer's DIY search, overhead's 1 CPU)
        started = time.perf_counter()
        module = __import__(f"search.bench.{part}", fromlist=["run"])
        result = module.run(bench, root) if part == "datapath" else module.run(bench)
        timings[part] = time.perf_counter() - started
        print(f"{part}: {time.perf_counter() - started:.0f} s; {headline(part, result)}", flush=True)
    common.release_ray()
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"results: {out}")
    return 0


def headline(part: str, r: dict) -> str:
    if part == "numerics":
        p = r["plans"]
        return (f"auto chooses {r['auto_choice']} (native bf16: {r['native_bf16']}); 2 trials x 1 thread give "
                f"{p['ratio_two_trials_over_one']:.2f}x the epochs/hour of 1 trial x 2 threads")
    if part == "overhead":
        return (
            f"bare {r['bare_s_per_epoch']:.2f} s/epoch, service {r['service_s_per_trial_epoch']:.2f} s/trial-epoch, "
            f"ratio {r['ratio']:.3f}"
        )
    if part == "datapath":
        f, a = r["fashion"], r["cifar_augmentation"]
        return (
            f"epoch {f['service_epoch_s']:.2f} s vs torchvision {f['torchvision_epoch_s']:.2f} s "
            f"({f['speedup']:.2f}x); augmentation {a['batched_epoch_s']:.2f} s "
            f"vs {a['torchvision_per_sample_epoch_s']:.2f} s"
        )
    if part == "efficiency":
        return (f"grid best {r['grid_best_val_accuracy']:.4f} in {r['grid_trial_epochs']} trial-epochs; TPE+ASHA "
                f"matches it in {r['summary']['tpe_asha']['fraction_of_grid']} of them")
    if part == "warmstart":
        return (f"warm-started B reaches the first study's best in {r['warm_reached']} seeds (fractions of its "
                f"trial-epochs {r['warm_fraction_of_a']}), cold C in {r['cold_reached']} ({r['cold_fraction_of_a']})")
    if part == "scaling":
        nodes = "skipped" if r["cluster_ratio"] is None else f"{r['cluster_ratio']:.2f}x"
        return (f"{r['one_worker_trials_per_hour']:.0f} vs {r['two_workers_trials_per_hour']:.0f} trials/h "
                f"({r['ratio']:.2f}x); 2 nodes {nodes}")
    if part == "peer":
        return (f"hpsearch {r['hpsearch']['wall_s']:.0f} s (test {r['hpsearch']['test_accuracy']:.4f}) vs DIY "
                f"{r['diy']['wall_s']:.0f} s (test {r['diy']['test_accuracy']:.4f}): {r['speedup']:.2f}x")
    if part == "scale":
        big = r["runs"][-1]
        resume = r["resume"] or {}
        return (f"{big['workers']} workers, {big['trials']} trials: {big['results_per_s']:.1f} results/s, proposal "
                f"p95 {big['proposal_ms']['p95']:.0f} ms, MLflow delay p95 {big['mlflow_delay_s']['p95'] or 0:.1f} s, "
                f"driver {big['driver_cpu_pct_of_one_core']['mean']:.0f}% of a core; resume "
                f"{resume.get('total_s', 0):.0f} s")
    return ""


def cli() -> None:
    run_cli(lambda: main(prog=entry_prog("search.bench")))


if __name__ == "__main__":
    cli()
