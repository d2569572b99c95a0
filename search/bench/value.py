"""Proof of value: does searching beat not searching, on this machine, at the same wall time?
Full Fashion-MNIST, each result tested once on the 10,000 test images:

    a  hpsearch's default study (`python -m search.run fashion_space`, the study's own budget);
    b  no search: the study's best start point, the textbook CNN, trained once on all 60,000
       images for as many epochs as the same wall time allows, cosine schedule stretched to them
       (`python -m search.train textbook.yaml --time-budget MIN`): what a user who does not
       search gets;
    c  the do-it-yourself Ray Tune search of the Ray docs (search.bench.peer_diy), at full size
       (20 trials x up to 10 epochs), its best checkpoint tested;
    d  Optuna alone in one process with its MedianPruner, no Ray (search.bench.peer_optuna), at
       (a)'s wall time.

and, for the choice of the final phase (issue 19, item 3), (a) with its other final modes at the
same budget:

    a_stretch     the winner's configuration trained afresh on all training images for the time left;
    a_continue    the winner's own checkpoint trained on, on all training images, for the time left;
    a_retrain     the winner retrained on all training images for its trial's own epochs;
    a_checkpoint  the best trial's own weights tested, no final training.

    python -m search.bench.value --out DIR                      # every part not yet in DIR
    python -m search.bench.value --out DIR --parts a,b --seeds 0,1,2 --budgets 12,36
    python -m search.bench.value --out DIR --combine            # the table of what DIR holds

Hours on 2 cores, so every (part, budget, seed) is a separate command writing its own JSON into
DIR (a part already there is skipped), and the table combines whatever is there: it can be built
up over several sittings. Every part records the machine's CPU capability and its load before
and after, since a loaded machine trains fewer epochs in the same minutes. Budgets are minutes
of the whole command, a and b alike (b's `--time-budget` counts from its start as a's does).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PARTS = {"a": "hpsearch default study", "b": "no search (textbook CNN, all the time)",
         "c": "DIY Ray Tune (Ray docs)", "d": "Optuna alone, MedianPruner",
         "a_stretch": "hpsearch, --final stretch", "a_continue": "hpsearch, --final continue",
         "a_retrain": "hpsearch, --final retrain", "a_checkpoint": "hpsearch, --final checkpoint"}
DEFAULT_BUDGET_MIN = 12.0  # fashion_space's own CPU budget (spaces/fashion_space.py)


def machine() -> dict:
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": bool(torch.cpu._is_avx512_bf16_supported()), "cpus": os.cpu_count(),
            "platform": platform.platform(), "torch": torch.__version__, "load_avg_1m": os.getloadavg()[0]}


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}; see {log}")
    return wall


def part_a(out: Path, data: Path, seed: int, budget_min: float, final: str | None = None) -> dict:
    import pandas as pd
    import yaml

    name = f"a{'_' + final if final else ''}-{budget_min:g}min-seed{seed}"
    command = [sys.executable, "-m", "search.run", "fashion_space", "--data-dir", str(data), "--seed", str(seed),
               "--results-dir", str(out / "runs"), "--name", name]
    if final:
        command += ["--final", final]
    if budget_min != DEFAULT_BUDGET_MIN:
        command += ["--time-budget", f"{budget_min:g}"]
    wall = _run(command, out / "logs" / f"{name}.log")
    folder = out / "runs" / name
    best = yaml.safe_load((folder / "best.yaml").read_text())
    table = pd.read_csv(folder / "trials.csv")
    stopped = folder / "tune" / "budget.json"
    return {"wall_s": wall, "test_accuracy": best["metrics"]["test_accuracy"],
            "best_val_accuracy": best["metrics"].get("val_accuracy"), "best_trial": best["search"]["best_trial"],
            "chosen": best["search"].get("chosen", ""),
            "trials": int(len(table)), "promotions": int(table.get("promotions", pd.Series([0])).sum()),
            "promoted_past_first_rung": int((table.get("promotions", pd.Series([0])) > 0).sum()),
            "trial_epochs": best["search"]["trial_epochs"], "final": best["final"],
            "statuses": table["status"].value_counts().to_dict(),
            "search_stopped": json.loads(stopped.read_text()) if stopped.exists() else None,
            "command": " ".join(command[1:])}


def textbook_yaml(out: Path, seed: int) -> Path:
    """The textbook start point as a best.yaml that search.train retrains."""
    from search.results.best_config import BestConfig
    from spaces.fashion_space import TEXTBOOK_CNN

    path = out / f"textbook-seed{seed}.yaml"
    BestConfig(space="fashion_space", dataset="fashion_mnist", hyperparameters=dict(TEXTBOOK_CNN), epochs=10,
               seed=seed, data={"dataset": "fashion_mnist"}).save(path)
    return path


def part_b(out: Path, data: Path, seed: int, budget_min: float) -> dict:
    import yaml

    name = f"b-{budget_min:g}min-seed{seed}"
    command = [sys.executable, "-m", "search.train", str(textbook_yaml(out, seed)), "--time-budget", f"{budget_min:g}",
               "--data-dir", str(data), "--results-dir", str(out / "runs"), "--name", name]
    wall = _run(command, out / "logs" / f"{name}.log")
    best = yaml.safe_load((out / "runs" / name / "best.yaml").read_text())
    return {"wall_s": wall, "test_accuracy": best["metrics"]["test_accuracy"], "epochs": best["epochs"],
            "final": best["final"], "command": " ".join(command[1:])}


def _idx_copy(data: Path) -> Path:
    """torchvision reads uncompressed IDX files; a copy of the full data laid out for it."""
    from search.bench.common import write_idx_layout
    from trainables.readers import load_dataset

    return write_idx_layout(load_dataset("fashion_mnist", str(data)), Path(tempfile.mkdtemp(prefix="hpsearch-value-")))


def part_c(out: Path, data: Path, seed: int, budget_min: float) -> dict:
    from search.bench.common import tracking_uri
    from search.bench.peer_diy import run_diy

    scratch = out / "runs" / f"c-seed{seed}"
    scratch.mkdir(parents=True, exist_ok=True)
    result = run_diy(str(_idx_copy(data)), scratch, tracking_uri(scratch), trials=20, epochs=10, cpus=2, seed=seed)
    return {**result, "trials": 20, "max_epochs": 10}


def part_d(out: Path, data: Path, seed: int, budget_min: float) -> dict:
    from search.bench.peer_optuna import run_optuna

    return run_optuna(str(_idx_copy(data)), budget_min * 60, seed)


RUNNERS = {"a": part_a, "b": part_b, "c": part_c, "d": part_d,
           "a_stretch": lambda *args: part_a(*args, final="stretch"),
           "a_continue": lambda *args: part_a(*args, final="continue"),
           "a_retrain": lambda *args: part_a(*args, final="retrain"),
           "a_checkpoint": lambda *args: part_a(*args, final="checkpoint")}


def result_file(out: Path, part: str, budget_min: float, seed: int) -> Path:
    # c has no budget: the docs' search runs its 20 trials; it is filed under the default budget.
    return out / f"{part}-{budget_min:g}min-seed{seed}.json"


def run_one(out: Path, data: Path, part: str, seed: int, budget_min: float) -> dict:
    (out / "logs").mkdir(parents=True, exist_ok=True)
    before = machine()
    started = time.time()
    result = RUNNERS[part](out, data, seed, budget_min)
    payload = {"part": part, "what": PARTS[part], "seed": seed, "budget_min": budget_min,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), "git_commit": _git_commit(),
               "machine": before, "load_avg_1m_after": os.getloadavg()[0], **result}
    result_file(out, part, budget_min, seed).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return payload


def combine(out: Path) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for path in sorted(out.glob("*-seed*.json")):
        r = json.loads(path.read_text())
        groups.setdefault((r["budget_min"], r["part"]), []).append(r)
    rows = []
    for (budget, part), results in sorted(groups.items()):
        tests = [r["test_accuracy"] for r in results]
        walls = [r["wall_s"] for r in results]
        rows.append({"budget_min": budget, "part": part, "what": PARTS[part], "seeds": [r["seed"] for r in results],
                     "test_median": float(np.median(tests)), "test_min": min(tests), "test_max": max(tests),
                     "wall_median_s": float(np.median(walls)), "wall_min_s": min(walls), "wall_max_s": max(walls),
                     "machines": sorted({f"{r['machine']['cpu_capability']}, native bf16 "
                                         f"{r['machine']['native_bf16']}" for r in results}),
                     "load_max": max(max(r["machine"]["load_avg_1m"], r["load_avg_1m_after"]) for r in results)})
    (out / "value.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| budget | part | seeds | test accuracy, median [min-max] | wall time, median [min-max] | machine |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['budget_min']:g} min | {r['part']}: {r['what']} | {len(r['seeds'])} | "
                     f"{100 * r['test_median']:.2f}% [{100 * r['test_min']:.2f}-{100 * r['test_max']:.2f}] | "
                     f"{r['wall_median_s'] / 60:.1f} min [{r['wall_min_s'] / 60:.1f}-{r['wall_max_s'] / 60:.1f}] | "
                     f"{'; '.join(r['machines'])}, load up to {r['load_max']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.bench.value", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the results folder (parts already in it are skipped)")
    p.add_argument("--data-dir",
                   default=os.environ.get("HPSEARCH_DATA_DIR") or str(REPO.parent / "shared" / "datasets"))
    p.add_argument("--parts", default="a,b,c,d", help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budgets", default=f"{DEFAULT_BUDGET_MIN:g}", help="minutes, comma-separated (c runs at the "
                   "first only: it has no budget)")
    p.add_argument("--combine", action="store_true", help="only combine what --out holds")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # PART:SEED:BUDGET, in a fresh process
    args = p.parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data_dir).expanduser().resolve()
    unknown = [part for part in args.parts.split(",") if part not in PARTS]
    if unknown:
        print(f"value: unknown part {unknown[0]!r}; the parts are {', '.join(PARTS)}", file=sys.stderr)
        return 2
    if args.one:
        part, seed, budget = args.one.split(":")
        run_one(out, data, part, int(seed), float(budget))
        return 0
    if not args.combine:
        budgets = [float(b) for b in args.budgets.split(",")]
        for budget in budgets:
            for seed in [int(s) for s in args.seeds.split(",")]:
                for part in args.parts.split(","):
                    if part == "c" and budget != budgets[0]:
                        continue
                    if result_file(out, part, budget, seed).exists():
                        continue
                    print(f"value: part {part} ({PARTS[part]}), {budget:g} min, seed {seed}", flush=True)
                    # A fresh process per part: nothing of one (threads, Ray, memory) reaches the next.
                    subprocess.run([sys.executable, "-m", "search.bench.value", "--out", str(out), "--data-dir",
                                    str(data), "--one", f"{part}:{seed}:{budget:g}"], cwd=REPO, check=True)
    rows = combine(out)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
