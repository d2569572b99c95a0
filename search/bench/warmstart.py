"""Benchmark: what a warm start is worth. On fashion_space (cold: the study's start points removed,
so only TPE's knowledge differs), per seed: study A runs; then study B, warm-started from A's
Optuna store, and study C, cold, both with another seed. The figure: the trial-epochs B and C
spend before their best validation accuracy reaches A's, as a fraction of A's trial-epochs.
Every search goes through the service's own path (search.study.phases.search), B's warm trials through
search.tune.warm as `--warm-start` hands them over."""

from __future__ import annotations

import numpy as np

from search.bench.common import Bench, local_ray, pyplot, run_service
from search.bench.efficiency import anytime, cold, epochs_to_reach
from search.results.optuna_store import Store
from search.tune.distributions import space_distributions
from search.tune.warm import from_store
from spaces.study import SpaceContext


def run(bench: Bench) -> dict:
    s = bench.sizes
    ds = bench.subset(s.warm_train)
    data = ds.for_search(0.1, bench.seed)
    scratch = bench.scratch("warmstart")
    study = cold("warmstart", "asha")
    uri = bench.tracking_uri
    runs = []
    with local_ray(2):
        for seed in range(bench.seed, bench.seed + s.warm_seeds):
            common = dict(cluster_cpus=2, samples=s.warm_samples, max_epochs=s.warm_epochs)
            a = run_service(study, data, scratch / f"a-{seed}", uri, seed=seed, **common)
            ctx = SpaceContext(data.input_shape, data.num_classes, a.plan.max_macs)
            earlier = from_store(Store.in_study_folder(scratch / f"a-{seed}", f"a-{seed}").load().trials,
                                 f"a-{seed}", scratch / f"a-{seed}", space_distributions(study.define, ctx))
            b = run_service(study, data, scratch / f"b-{seed}", uri, seed=seed + 1000, warm_trials=list(earlier.trials),
                            **common)
            c = run_service(study, data, scratch / f"c-{seed}", uri, seed=seed + 1000, **common)
            curves = {name: anytime(r.events) for name, r in (("a", a), ("b", b), ("c", c))}
            target, spent = curves["a"][-1][1], curves["a"][-1][0]
            row = {"seed": seed, "a_best": target, "a_trial_epochs": spent, "warm_trials": len(earlier.trials),
                   "curves": curves}
            for name in ("b", "c"):
                reach = epochs_to_reach(curves[name], target)
                row[f"{name}_best"] = curves[name][-1][1]
                row[f"{name}_trial_epochs_to_reach_a"] = reach
                row[f"{name}_fraction_of_a"] = None if reach is None else reach / spent
            runs.append(row)
            print(f"warmstart seed {seed}: A best {target:.4f} in {spent:g} trial-epochs; warm B reaches it "
                  f"{_fraction(row['b_fraction_of_a'])}, cold C {_fraction(row['c_fraction_of_a'])}", flush=True)
    result = {
        "train_images": len(data.train), "val_images": len(data.val), "epoch_cap": s.warm_epochs,
        "trials_per_study": s.warm_samples, "cold_start": "start points removed from every study",
        "warm_fraction_of_a": [r["b_fraction_of_a"] for r in runs],
        "cold_fraction_of_a": [r["c_fraction_of_a"] for r in runs],
        "warm_reached": f"{sum(r['b_fraction_of_a'] is not None for r in runs)}/{len(runs)}",
        "cold_reached": f"{sum(r['c_fraction_of_a'] is not None for r in runs)}/{len(runs)}",
        "warm_fraction_median": _median([r["b_fraction_of_a"] for r in runs]),
        "cold_fraction_median": _median([r["c_fraction_of_a"] for r in runs]),
        "runs": runs,
    }
    bench.write("warmstart", result)
    plot(bench, runs, len(data.train), s.warm_epochs)
    return result


def _fraction(f: float | None) -> str:
    return "never" if f is None else f"at {f:.0%} of A's trial-epochs"


def _median(values: list[float | None]) -> float | None:
    """The median over seeds, a seed that never reached A's best counting as the worst (so a
    median of 'never' is None)."""
    ordered = sorted(values, key=lambda v: np.inf if v is None else v)
    return ordered[(len(ordered) - 1) // 2] if ordered else None


def plot(bench: Bench, runs: list[dict], n_train: int, cap: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4), squeeze=False)
    styles = {"a": ("first study A", "0.4", "--"), "b": ("B, warm-started from A", "#4c72b0", "-"),
              "c": ("C, cold (same seed as B)", "#dd8452", "-")}
    for ax, row in zip(axes[0], runs):
        for name, (label, colour, ls) in styles.items():
            curve = row["curves"][name]
            ax.step([c[0] for c in curve], [c[1] for c in curve], where="post", color=colour, ls=ls, label=label)
        ax.axhline(row["a_best"], color="k", lw=0.8, ls=":")
        ax.set_title(f"seed {row['seed']}")
        ax.set_xlabel("trial-epochs")
        low = min(c[1] for curve in row["curves"].values() for c in curve[len(curve) // 3:] or curve)
        high = max(c[1] for curve in row["curves"].values() for c in curve)
        ax.set_ylim(max(0.0, low - 0.02), min(1.0, high + 0.01))
    axes[0][0].set_ylabel("best validation accuracy so far")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Warm start on fashion_space: {n_train} training images, cap {cap} epochs (dotted: A's best)")
    fig.tight_layout()
    fig.savefig(bench.out / "warmstart.png", dpi=110)
    plt.close(fig)
