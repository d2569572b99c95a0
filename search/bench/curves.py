"""Recorded learning curves of `fashion_space` configurations: the table the scheduler replay
(search.bench.schedulers) runs against. Every configuration is trained once with the service's own
training function (trainables.train.fit) on a fixed data subset, for the study's full 10-epoch
cosine schedule, and its validation score is recorded at every point a scheduler may look at
(a quarter and a half epoch, then every whole epoch) with the seconds it took to get there.

    python -m search.bench.curves OUT.jsonl --configs 200 --workers 2    # resumable: rerun to continue

Why a table and not real searches: a scheduler's quality is a distribution over seeds, and a
real search costs minutes to hours here; against a table a search costs milliseconds, so every
default can be chosen over 20+ seeds (the way the field compares schedulers: tabular benchmarks
such as NAS-Bench-201 and LCBench). What a table cannot show (the cost of pausing and resuming a
trial, the driver's own time) the replay adds as measured constants.

Seconds are the worker's CPU seconds (`time.process_time`) with one torch thread: a trial's own
work, which other processes on the machine do not inflate as they inflate wall time. The replay
turns them into a 2-thread trial's wall seconds with one measured factor.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

# The subset: stratified 15,000 of the 60,000 training images, 12,000 to train on and 3,000 to
# validate (so a score's noise is about +-0.5 points, not the +-1.3 of 600 images), and the full
# 10,000 test images for the one test at the end. Full data would cost 4-5x more per curve.
SUBSET = 15000
VAL_FRACTION = 0.2
EPOCHS = 10
POINTS = (0.25, 0.5)  # inside the first epoch: every rung a scheduler here may use
DATA_SEED = 0


def configurations(n: int, seed: int) -> list[dict]:
    """The study's two start points, then `n` configurations sampled uniformly from its space
    under the CPU cost cap (as a search on a CPU proposes them)."""
    import optuna

    from spaces.fashion_space import GRID_WINNER, TEXTBOOK_CNN, fashion_space
    from spaces.study import SpaceContext

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ctx = SpaceContext((1, 28, 28), 10, int(fashion_space.settings.max_mmacs_cpu * 1e6))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = [dict(TEXTBOOK_CNN), dict(GRID_WINNER)]
    for _ in range(n):
        trial = study.ask()
        constants = fashion_space.define(trial, ctx) or {}
        out.append({**trial.params, **constants})
    return out


def _data(data_dir: str | None):
    from trainables.readers import load_dataset

    ds = load_dataset("fashion_mnist", data_dir).sliced(SUBSET, 10000, DATA_SEED)
    return ds, ds.for_search(VAL_FRACTION, DATA_SEED)


def record_one(index: int, params: dict, data, test, seed: int) -> dict:
    import torch

    from trainables.model import NetConfig, model_macs
    from trainables.numerics import accelerator
    from trainables.train import Batches, evaluate, fit

    cfg = NetConfig.from_flat(params)
    device = torch.device("cpu")
    accel = accelerator(device, "auto")
    points: list[dict] = []
    clock = {"cpu": time.process_time(), "wall": time.perf_counter()}

    def mark(metrics: dict) -> None:
        points.append({"epochs": round(float(metrics["epochs_seen"]), 4),
                       "val_accuracy": round(float(metrics.get("val_accuracy", 0.0)), 5),
                       "val_loss": None if metrics.get("val_loss") != metrics.get("val_loss")
                       else round(float(metrics.get("val_loss", float("nan"))), 5),
                       "cpu_s": round(time.process_time() - clock["cpu"], 3),
                       "wall_s": round(time.perf_counter() - clock["wall"], 3)})

    result = fit(cfg, data, EPOCHS, seed, device, on_epoch=lambda m, _snap: mark(m), accel=accel,
                 report_points=POINTS, on_partial=mark)
    scores = evaluate(result.model, Batches(test, device, accel), data.num_classes)
    mmacs = model_macs(cfg, data.input_shape, data.num_classes) / 1e6
    return {"index": index, "params": params, "mmacs": round(mmacs, 4),
            "diverged": result.diverged, "numerics": accel.name, "test_accuracy_at_end": round(scores.accuracy, 5),
            "points": points}


def _worker(worker: int, queue, data_dir: str | None, out: str, seed: int) -> None:
    import torch

    torch.set_num_threads(1)
    ds, data = _data(data_dir)
    # One shared queue: configurations differ 20x in cost, so a fixed share per worker would idle one.
    for index, params in iter(queue.get, None):
        row = record_one(index, params, data, ds.test, seed)
        row["worker"] = worker
        with open(out, "a") as f:  # one line per curve, appended whole: a killed run keeps the rest
            f.write(json.dumps(row) + "\n")
        print(f"curve {index}: val {row['points'][-1]['val_accuracy']:.4f} "
              f"{row['points'][-1]['cpu_s']:.0f} cpu-s", flush=True)


def done(out: Path) -> set[int]:
    if not out.exists():
        return set()
    seen = set()
    for line in out.read_text().splitlines():
        try:
            seen.add(json.loads(line)["index"])
        except (json.JSONDecodeError, KeyError):
            continue  # a line cut short by a kill: recorded again
    return seen


def load(path: Path) -> dict:
    """The recorded table: {"meta": ..., "curves": [...]} from a .jsonl(.gz) of curves (its first
    line may be the meta record)."""
    opener = gzip.open if path.suffix == ".gz" else open
    meta, curves = {}, []
    with opener(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            if "meta" in row:
                meta = row["meta"]
            else:
                curves.append(row)
    curves.sort(key=lambda r: r["index"])
    return {"meta": meta, "curves": curves}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.bench.curves", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the .jsonl file curves are appended to (rerun to continue)")
    p.add_argument("--configs", type=int, default=200, help="sampled configurations besides the two start points")
    p.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling of configurations and every trial")
    p.add_argument("--data-dir", default=os.environ.get("HPSEARCH_DATA_DIR", "../shared/datasets"))
    args = p.parse_args(argv)
    out = Path(args.out)
    if not out.exists():
        import torch

        meta = {"made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "subset": SUBSET,
                "val_fraction": VAL_FRACTION, "epochs": EPOCHS, "points": POINTS, "data_seed": DATA_SEED,
                "seed": args.seed, "threads_per_worker": 1, "workers": args.workers,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "native_bf16": bool(torch.cpu._is_avx512_bf16_supported()), "torch": torch.__version__,
                "platform": platform.platform(), "cpus": os.cpu_count(),
                "command": f"python -m search.bench.curves {args.out} --configs {args.configs} "
                           f"--workers {args.workers} --seed {args.seed}"}
        out.write_text(json.dumps({"meta": meta}) + "\n")
    skip = done(out)
    todo = [(i, c) for i, c in enumerate(configurations(args.configs, args.seed)) if i not in skip]
    print(f"{len(todo)} curves to record -> {out}", flush=True)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for item in todo:
        queue.put(item)
    for _ in range(args.workers):
        queue.put(None)
    procs = [ctx.Process(target=_worker, args=(w, queue, args.data_dir, str(out), args.seed))
             for w in range(args.workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return max((proc.exitcode or 0) for proc in procs)


if __name__ == "__main__":
    raise SystemExit(main())
