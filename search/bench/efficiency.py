"""Benchmark 3: anytime curves, best validation accuracy so far against trial-epochs consumed,
for TPE+ASHA, random search+ASHA and TPE without early stopping (all COLD: the study's hand-
picked start points removed), and the original 96-point grid, on a stratified subset of the
training images with an epoch cap. Every search goes through the service's own path."""

from __future__ import annotations

import dataclasses

import numpy as np

from search.bench.common import Bench, local_ray, pyplot, run_service
from spaces.registry import get_study

# tpe_asha is the service's default (fashion_space's rungs); the two after it are the rung
# choices it was picked against: ASHA's first rung at a whole epoch (the earlier default), and
# two Hyperband brackets (half the trials get their first rung one reduction factor later).
METHODS = ("tpe_asha", "tpe_asha_grace1", "tpe_hyperband", "random_asha", "tpe_fifo", "grid")


def cold(name: str, scheduler: str, **settings):
    base = get_study("fashion_space")
    return dataclasses.replace(base, name=f"bench_{name}", start_points=(),
                               settings=dataclasses.replace(base.settings, scheduler=scheduler, **settings))


def anytime(events: list[dict]) -> list[tuple[float, float]]:
    """(trial-epochs consumed, best validation accuracy so far), in the order results arrived;
    a report at a rung inside an epoch counts the fraction of the epoch it cost."""
    curve, best, spent, seen = [], 0.0, 0.0, {}
    for e in sorted((e for e in events if e["kind"] == "result"), key=lambda e: e["t"]):
        now = float(e.get("epochs_seen") or e["epoch"])
        spent += max(now - seen.get(e["trial"], 0.0), 0.0)
        seen[e["trial"]] = now
        best = max(best, e["val_accuracy"] or 0.0)
        curve.append((round(spent, 4), best))
    return curve


def epochs_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((n for n, acc in curve if acc >= target - 1e-12), None)


def run(bench: Bench) -> dict:
    s = bench.sizes
    ds = bench.subset(s.efficiency_train)
    data = ds.for_search(0.1, bench.seed)
    scratch = bench.scratch("efficiency")
    uri = bench.tracking_uri
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    plans = {"tpe_asha": (cold("tpe_asha", "asha"), "tpe", s.efficiency_tpe_samples),
             "tpe_asha_grace1": (cold("tpe_asha_grace1", "asha", grace_period=1.0), "tpe", s.efficiency_tpe_samples),
             "tpe_hyperband": (cold("tpe_hyperband", "asha", brackets=2), "tpe", s.efficiency_tpe_samples),
             "random_asha": (cold("random_asha", "asha"), "random", s.efficiency_random_samples),
             "tpe_fifo": (cold("tpe_fifo", "fifo"), "tpe", s.efficiency_fifo_samples)}
    grid = get_study("fashion_grid")
    grid_points = s.efficiency_grid_points or len(grid.grid)
    with local_ray(2):
        service = run_service(grid, data, scratch / "grid", uri, cluster_cpus=2, samples=grid_points,
                              max_epochs=s.efficiency_epochs, seed=bench.seed)
        runs["grid"].append({"seed": bench.seed, "wall_s": service.wall_s, "curve": anytime(service.events)})
        for seed in range(bench.seed, bench.seed + s.efficiency_seeds):
            for method, (study, sampler, samples) in plans.items():
                service = run_service(study, data, scratch / f"{method}-{seed}", uri, cluster_cpus=2,
                                      samples=samples, max_epochs=s.efficiency_epochs, seed=seed, sampler=sampler)
                runs[method].append({"seed": seed, "wall_s": service.wall_s, "curve": anytime(service.events)})
                print(f"efficiency: {method} seed {seed}: {len(service.epochs)} trial-epochs, best "
                      f"{runs[method][-1]['curve'][-1][1]:.4f}, {service.wall_s:.0f} s", flush=True)
    grid_curve = runs["grid"][0]["curve"]
    grid_best, grid_epochs = grid_curve[-1][1], grid_curve[-1][0]
    summary = {}
    for method in METHODS:
        reach = [epochs_to_reach(r["curve"], grid_best) for r in runs[method]]
        summary[method] = {
            "best_val_accuracy": [r["curve"][-1][1] for r in runs[method]],
            "trial_epochs": [r["curve"][-1][0] for r in runs[method]],
            "trial_epochs_to_match_grid": reach,
            "fraction_of_grid": [None if n is None else n / grid_epochs for n in reach],
            "wall_s": [r["wall_s"] for r in runs[method]],
        }
    fractions = summary["tpe_asha"]["fraction_of_grid"]
    reached = [f for f in fractions if f is not None]
    result = {
        "train_images": len(data.train), "val_images": len(data.val), "epoch_cap": s.efficiency_epochs,
        "cold_start": "TPE and random run without the study's start points",
        "grid_points": grid_points, "grid_trial_epochs": grid_epochs, "grid_best_val_accuracy": grid_best,
        "tpe_asha_fraction_median": float(np.median(fractions)) if len(reached) == len(fractions) else None,
        "tpe_asha_seeds_matching_grid": f"{len(reached)}/{len(fractions)}",
        "target_fraction": 0.15,
        "target_met": len(reached) == len(fractions) and max(reached) <= 0.15,
        "summary": summary, "runs": runs,
    }
    bench.write("efficiency", result)
    plot(bench, runs, grid_best, grid_epochs, len(data.train), s.efficiency_epochs)
    return result


def plot(bench: Bench, runs: dict, grid_best: float, grid_epochs: int, n_train: int, cap: int) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = {"tpe_asha": "#4c72b0", "tpe_asha_grace1": "#8172b3", "tpe_hyperband": "#64b5cd",
              "random_asha": "#dd8452", "tpe_fifo": "#55a868", "grid": "#7f7f7f"}
    labels = {
        "tpe_asha": "TPE + ASHA, first rung 1/4 epoch (cold)",
        "tpe_asha_grace1": "TPE + ASHA, first rung 1 epoch",
        "tpe_hyperband": "TPE + ASHA, 2 brackets",
        "random_asha": "random + ASHA",
        "tpe_fifo": "TPE, no early stop (cold)",
        "grid": "96-point grid",
    }
    for method, seeds in runs.items():
        # On a common grid of trial-epochs; a finished run keeps its best.
        x = np.unique(np.concatenate([[c[0] for c in r["curve"]] for r in seeds]))
        ys = np.array([[max([c[1] for c in r["curve"] if c[0] <= t] or [0.0]) for t in x] for r in seeds])
        ax.plot(x, np.median(ys, axis=0), color=colors[method], label=f"{labels[method]} ({len(seeds)} seed(s))")
        if len(seeds) > 1:
            ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=colors[method], alpha=0.2)
    ax.axhline(grid_best, color="k", ls=":", lw=1, label=f"grid best {grid_best:.4f}")
    ax.axvline(0.15 * grid_epochs, color="r", ls="--", lw=1, label="15% of the grid's trial-epochs")
    ax.set_xscale("log")
    ax.set_xlabel("trial-epochs consumed")
    ax.set_ylabel("best validation accuracy so far")
    low = min(
        min(c[1] for c in r["curve"][len(r["curve"]) // 4 :] or r["curve"]) for seeds in runs.values() for r in seeds
    )
    ax.set_ylim(max(low - 0.01, 0.0), min(1.0, grid_best + 0.03))
    ax.set_title(f"Anytime curves: {n_train} training images, cap {cap} epochs (median, min-max band)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(bench.out / "efficiency.png", dpi=110)
    plt.close(fig)
