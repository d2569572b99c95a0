"""The scheduler replay: searches run against recorded learning curves (search.bench.curves)
instead of training, so that every scheduler default is chosen over many seeds at no training
cost. Each simulated search makes the decisions the service makes — the same pause-and-promote
and stop rules (search.tune.rungs), the same fidelity-aware TPE (search.tune.sampler) over the same space
(spaces.fashion_space) — and spends simulated time read from the recorded seconds.

    python -m search.bench.schedulers [--curves FILE] [--seeds 20] [--out DIR]

What a search "finds" is the configuration it would choose (the best validation score of a
trial with at least one whole epoch, as search.study.phases.choose does), and its worth is that
configuration's test accuracy after its full 10-epoch schedule, recorded once per curve: the
quality of the choice, whatever the final phase then does with it. Also reported: how well the
ranking at each fidelity predicts the ranking at the end (Spearman), which is what a cheap search
followed by a long final training relies on.

Time: a curve's seconds are one-thread CPU seconds on the recorded subset; a trial in a search
here runs on all 54,000 training images with two threads, so seconds are scaled by the images
(54,000 / the subset's) and by the measured ratio of a two-thread epoch's wall time to a
one-thread epoch's CPU time (TWO_THREADS). Budgets are given in seconds of such a search on this
2-core machine: the default study's search phase is about 330 s (12 minutes, half for the search,
less start-up), on a machine with native bf16 about 2.5x that many trial-epochs fit.
What a table cannot show is added as measured constants: starting a trial (a worker, the model)
and resuming a paused one (its checkpoint restored; a trial paused at a rung inside an epoch
has no checkpoint there and redoes that part of the epoch, as in the service).

Proposals by TPE are snapped to the nearest recorded configuration not yet used (parameters
scaled to their ranges, log scales where the space has them); random search draws unused
configurations uniformly (they were sampled uniformly from the space).
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from search.bench.curves import load
from search.tune.rungs import CONTINUE, PAUSE, STOP, PromotionRule, StopRule, milestones

CURVES = Path(__file__).parent / "data" / "fashion_curves.jsonl.gz"
FULL_TRAIN = 54000
# Wall seconds of a 2-thread epoch per CPU second of a 1-thread one: the textbook CNN on this
# machine, fp32 channels-last (docs/benchmarks.md, *Speed*: 2.67 s against 4.73 s per 5,400 images).
TWO_THREADS = 2.67 / 4.73
NEW_TRIAL_S = 3.0  # a new trial: its worker (reused between trials), model, first batches
RESUME_S = 4.0  # a paused trial resumed: a worker, its checkpoint restored
MAX_T = 10

LOG_SCALE = {"lr": (1e-4, 1e-1), "weight_decay": (1e-6, 1e-2), "batch_size": (32, 512)}
LINEAR = {"dropout": (0.0, 0.5), "conv_layers": (1, 4), "dense_layers": (1, 2), "kernel_size": (3, 7)}


def _scaled(key: str, value) -> float | str:
    if key.startswith(("filters_", "dense_nodes_")) or key in LOG_SCALE:
        low, high = LOG_SCALE.get(key, (8, 512))
        return math.log(float(value)) / math.log(high / low)
    if key in LINEAR:
        low, high = LINEAR[key]
        return float(value) / (high - low)
    return str(value)


def distance(a: dict, b: dict) -> float:
    """Squared distance between two configurations, each parameter scaled to its range; a
    categorical that differs, or a parameter only one of them has (a layer the other lacks),
    counts 1."""
    total = 0.0
    for key in set(a) | set(b):
        if key not in a or key not in b:
            total += 1.0
            continue
        x, y = _scaled(key, a[key]), _scaled(key, b[key])
        total += (x != y) * 1.0 if isinstance(x, str) or isinstance(y, str) else (x - y) ** 2
    return total


@dataclass(frozen=True)
class Curve:
    index: int
    params: dict
    epochs: tuple[float, ...]  # the fidelities recorded: 0.25, 0.5, 1, 2, ..., 10
    val: tuple[float, ...]
    seconds: tuple[float, ...]  # from the trial's start, scaled to a search's seconds
    test: float  # test accuracy after the full schedule

    def at(self, fidelity: float) -> tuple[float, float]:
        """(validation score, seconds from the start) at a recorded fidelity."""
        i = self.epochs.index(fidelity)
        return self.val[i], self.seconds[i]

    def seconds_between(self, start: float, end: float) -> float:
        return self.at(end)[1] - (self.at(start)[1] if start > 0 else 0.0)


def curves_from(table: dict, scale: float) -> list[Curve]:
    out = []
    for row in table["curves"]:
        points = sorted(row["points"], key=lambda p: p["epochs"])
        out.append(Curve(row["index"], row["params"], tuple(p["epochs"] for p in points),
                         tuple(float(p["val_accuracy"]) for p in points),
                         tuple(p["cpu_s"] * scale for p in points), float(row["test_accuracy_at_end"])))
    return out


@dataclass(frozen=True)
class Method:
    """One way to search: the scheduler and its rungs, the sampler, whether the study's start
    points go first."""

    scheduler: str = "promotion"  # promotion | stopping | fifo
    grace: float = 0.25
    eta: float = 4
    brackets: int = 1
    sampler: str = "tpe"  # tpe | random
    start_points: bool = True
    n_startup: int = 6
    samples: int | None = None  # a cap on trials (the study's num_samples), None: the budget decides

    @property
    def label(self) -> str:
        extra = f" brackets {self.brackets}" if self.brackets > 1 else ""
        rungs = "" if self.scheduler == "fifo" else f" grace {self.grace:g} eta {self.eta:g}{extra}"
        cap = f" {self.samples} trials" if self.samples else ""
        return f"{self.scheduler}{rungs} {self.sampler}{'' if self.start_points else ' cold'}{cap}"


@dataclass
class SimTrial:
    curve: Curve
    number: int
    reached: float = 0.0  # the highest fidelity reported
    checkpoint: float = 0.0  # the last whole epoch (where a resumed trial continues)
    reports: list[tuple[float, float]] = field(default_factory=list)  # (fidelity, score)
    optuna_trial: object = None
    promotions: int = 0
    status: str = "running"


@dataclass
class Outcome:
    chosen: int | None  # the curve chosen, None if no trial trained a whole epoch
    test: float | None
    best_test_possible: float
    trials: int
    promotions: int
    trial_epochs: float
    completed: int


class Search:
    """One simulated search: `workers` trials at a time until `budget_s` of simulated time."""

    def __init__(self, curves: list[Curve], method: Method, seed: int, budget_s: float, workers: int = 1):
        self.curves, self.method, self.budget_s, self.workers = curves, method, budget_s, workers
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.used: set[int] = set()
        self.trials: list[SimTrial] = []
        self.milestones = [] if method.scheduler == "fifo" else sorted(
            {m for b in range(method.brackets) for m in milestones(method.grace, method.eta, MAX_T, b)})
        if method.scheduler == "promotion":
            self.rule = PromotionRule(method.grace, method.eta, MAX_T, method.brackets)
        elif method.scheduler == "stopping":
            self.rule = StopRule(method.grace, method.eta, MAX_T, method.brackets)
        else:
            self.rule = None
        self.study = self._optuna_study() if method.sampler == "tpe" else None

    # --- proposals ----------------------------------------------------------------------------

    def _optuna_study(self):
        import optuna

        from search.tune.sampler import make_sampler

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(direction="maximize",
                                   sampler=make_sampler("tpe", self.seed, self.method.n_startup))

    def _define(self, trial) -> dict:
        from spaces.fashion_space import fashion_space
        from spaces.study import SpaceContext

        ctx = SpaceContext((1, 28, 28), 10, int(fashion_space.settings.max_mmacs_cpu * 1e6))
        return {**trial.params, **(fashion_space.define(trial, ctx) or {})}

    def propose(self) -> SimTrial | None:
        free = [c for c in self.curves if c.index not in self.used]
        if not free:
            return None
        starts = [c for c in free if c.index < 2] if self.method.start_points else []
        if not self.method.start_points:
            free = [c for c in free if c.index >= 2] or free
        optuna_trial = None
        if starts:
            curve = starts[0]
        elif self.study is None:
            curve = free[int(self.rng.integers(len(free)))]
        else:
            from optuna.trial import TrialState

            asked = self.study.ask()
            proposal = self._define(asked)
            self.study.tell(asked, state=TrialState.FAIL)  # TPE ignores it; the snapped one stands in
            curve = min(free, key=lambda c: distance(proposal, c.params))
        if self.study is not None:
            self.study.enqueue_trial(curve.params, skip_if_exists=False)
            optuna_trial = self.study.ask()
            self._define(optuna_trial)
        self.used.add(curve.index)
        trial = SimTrial(curve, len(self.trials), optuna_trial=optuna_trial)
        self.trials.append(trial)
        if self.rule is not None:
            self.rule.add(str(trial.number))
        return trial

    # --- the search ---------------------------------------------------------------------------

    def _report(self, trial: SimTrial, fidelity: float) -> float:
        score, _ = trial.curve.at(fidelity)
        trial.reports.append((fidelity, score))
        trial.reached = max(trial.reached, fidelity)
        if fidelity == int(fidelity):
            trial.checkpoint = fidelity
        if trial.optuna_trial is not None:
            trial.optuna_trial.report(score, round(fidelity * 100))
        return score

    def _points(self, trial: SimTrial, start: float) -> list[float]:
        """The fidelities the trial reports from `start` on: whole epochs, and rungs inside one."""
        return [f for f in trial.curve.epochs if f > start + 1e-9 and (f == int(f) or f in self.milestones)]

    def run(self) -> Outcome:
        """Events in time order: a worker free (it takes the next trial or promotion), or a trial's
        report landing (the scheduler decides). A trial paused, stopped or finished frees its worker
        and drops its later reports; a worker with nothing to do waits for the next decision. The
        search ends at the budget, or when nothing runs and nothing is left to run."""
        events: list[tuple] = [(0.0, w, "free", w) for w in range(self.workers)]
        heapq.heapify(events)
        seq = self.workers
        idle: list[int] = []
        segment: dict[int, int] = {}  # trial number -> its current segment's id
        busy = 0
        while events and events[0][0] < self.budget_s:
            now, _, kind, payload = heapq.heappop(events)
            if kind == "report":
                worker, trial, fidelity, seg = payload
                if segment.get(trial.number) != seg or fidelity <= trial.reached:
                    continue  # a segment that ended; or a point redone on the way up after a resume
                decision = self._decide(trial, fidelity, self._report(trial, fidelity))
                if decision == CONTINUE and fidelity < MAX_T:
                    continue
                trial.status = {PAUSE: "paused", STOP: "stopped"}.get(decision, "completed")
                if trial.status != "paused":
                    self._finish(trial)
                segment.pop(trial.number)
                busy -= 1
                for w in [worker, *idle]:  # this worker, and any waiting for a decision like this one
                    heapq.heappush(events, (now, seq, "free", w))
                    seq += 1
                idle = []
                continue
            worker = payload
            trial, start, cost = self._next(final=busy == 0)
            if trial is None:
                if busy == 0:
                    break  # nothing runs, nothing is left to run
                idle.append(worker)
                continue
            busy += 1
            segment[trial.number] = seq
            t = now + cost
            for fidelity in self._points(trial, start):
                heapq.heappush(events, (t + trial.curve.seconds_between(start, fidelity), seq + 1, "report",
                                        (worker, trial, fidelity, segment[trial.number])))
            seq += 2
        return self._outcome()

    def _next(self, final: bool = False) -> tuple[SimTrial | None, float, float]:
        """What a free worker runs: (trial, the fidelity it starts from, seconds before it trains).
        `final`: nothing else runs (when no new trial can come, the best paused ones go on, as in
        search.tune.asha.PromotingASHA)."""
        rule = self.rule if isinstance(self.rule, PromotionRule) else None
        promoted = rule.next_promotion() if rule is not None else None
        if promoted is None:
            capped = self.method.samples is not None and len(self.trials) >= self.method.samples
            trial = None if capped else self.propose()
            if trial is not None:
                return trial, 0.0, NEW_TRIAL_S
            if rule is None or not final:
                return None, 0.0, 0.0
            promoted = rule.next_promotion(final=True)
            if promoted is None:
                return None, 0.0, 0.0
        rule.resumed(promoted)
        trial = self.trials[int(promoted)]
        trial.status, trial.promotions = "running", trial.promotions + 1
        # A rung inside an epoch has no checkpoint: the trial goes on from its last whole epoch.
        return trial, trial.checkpoint, RESUME_S

    def _decide(self, trial: SimTrial, fidelity: float, score: float) -> str:
        if self.rule is None or fidelity >= MAX_T or fidelity not in self.milestones:
            return CONTINUE
        return self.rule.on_result(str(trial.number), fidelity, score)

    def _finish(self, trial: SimTrial) -> None:
        if self.rule is not None and isinstance(self.rule, PromotionRule):
            self.rule.ended(str(trial.number))
        if trial.optuna_trial is not None:
            from optuna.trial import TrialState

            best = max(s for _, s in trial.reports)
            if trial.reached >= MAX_T:
                self.study.tell(trial.optuna_trial, best)
            else:
                self.study.tell(trial.optuna_trial, state=TrialState.PRUNED)

    def _outcome(self) -> Outcome:
        whole = [(max(s for f, s in t.reports if f >= 1), t) for t in self.trials if t.reached >= 1]
        chosen = max(whole, key=lambda p: p[0])[1] if whole else None
        return Outcome(
            chosen=chosen.curve.index if chosen else None, test=chosen.curve.test if chosen else None,
            best_test_possible=max(c.test for c in self.curves), trials=len(self.trials),
            promotions=sum(t.promotions for t in self.trials),
            trial_epochs=round(sum(t.reached for t in self.trials), 2),
            completed=sum(t.reached >= MAX_T for t in self.trials))


# --- what low fidelities predict ------------------------------------------------------------------

def rank_correlations(curves: list[Curve]) -> dict[str, float]:
    """Spearman's rho between the validation score at each fidelity and the test accuracy after
    the full schedule, over every recorded configuration."""
    from scipy.stats import spearmanr

    end = [c.test for c in curves]
    out = {}
    for fidelity in curves[0].epochs:
        rho = spearmanr([c.at(fidelity)[0] for c in curves], end).statistic
        out[f"{fidelity:g}"] = round(float(rho), 3)
    return out


# --- the comparison --------------------------------------------------------------------------------

def methods() -> dict[str, Method]:
    """The service's default and every alternative each default was chosen against, one change
    at a time."""
    base = Method()
    return {
        "default": base,
        "stopping": dataclasses.replace(base, scheduler="stopping"),
        "fifo": dataclasses.replace(base, scheduler="fifo"),
        "grace 0.5": dataclasses.replace(base, grace=0.5),
        "grace 1": dataclasses.replace(base, grace=1.0),
        "eta 3": dataclasses.replace(base, eta=3),
        "brackets 2": dataclasses.replace(base, brackets=2),
        "random": dataclasses.replace(base, sampler="random"),
        "stopping, random": dataclasses.replace(base, scheduler="stopping", sampler="random"),
        "20 trials": dataclasses.replace(base, samples=20),
        "cold": dataclasses.replace(base, start_points=False),
    }


def compare(curves: list[Curve], chosen: dict[str, Method], budgets: list[float], workers: list[int],
            seeds: int) -> list[dict]:
    rows = []
    for w in workers:
        for budget in budgets:
            for name, method in chosen.items():
                outcomes = [Search(curves, method, seed, budget, w).run() for seed in range(seeds)]
                tests = [o.test for o in outcomes if o.test is not None]
                rows.append({
                    "method": name, "label": method.label, "workers": w, "budget_s": budget, "seeds": seeds,
                    "test_median": float(np.median(tests)) if tests else None,
                    "test_q25": float(np.percentile(tests, 25)) if tests else None,
                    "test_q75": float(np.percentile(tests, 75)) if tests else None,
                    "no_choice": sum(o.test is None for o in outcomes),
                    "regret_median": float(np.median([o.best_test_possible - o.test for o in outcomes
                                                      if o.test is not None])) if tests else None,
                    "trials_median": float(np.median([o.trials for o in outcomes])),
                    "promotions_median": float(np.median([o.promotions for o in outcomes])),
                    "completed_median": float(np.median([o.completed for o in outcomes])),
                    "trial_epochs_median": float(np.median([o.trial_epochs for o in outcomes])),
                    "tests": tests,
                })
                print(f"{name:<18} workers {w} budget {budget:>5.0f} s: test median {rows[-1]['test_median']} "
                      f"trials {rows[-1]['trials_median']:g} promotions {rows[-1]['promotions_median']:g}",
                      flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| workers | search budget | method | test accuracy of the choice, median [IQR] | trials | "
             "promotions | trained to the end |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        test = "no choice" if r["test_median"] is None else \
            f"{100 * r['test_median']:.2f}% [{100 * r['test_q25']:.2f}-{100 * r['test_q75']:.2f}]"
        lines.append(f"| {r['workers']} | {r['budget_s']:.0f} s | {r['method']} ({r['label']}) | {test} | "
                     f"{r['trials_median']:g} | {r['promotions_median']:g} | {r['completed_median']:g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.bench.schedulers", description=__doc__.split("\n\n")[0])
    p.add_argument("--curves", default=str(CURVES), help="the recorded curves (search.bench.curves)")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--budgets", default="330,830,2000", help="search seconds, comma-separated")
    p.add_argument("--workers", default="1,4", help="trials at a time, comma-separated")
    p.add_argument("--methods", default="", help="comma-separated names (default: all)")
    p.add_argument("--out", default=None, help="folder for schedulers.json and schedulers.md")
    args = p.parse_args(argv)
    table = load(Path(args.curves))
    subset = table["meta"].get("subset", 15000) * (1 - table["meta"].get("val_fraction", 0.2))
    curves = curves_from(table, FULL_TRAIN / subset * TWO_THREADS)
    chosen = methods()
    if args.methods:
        chosen = {k: v for k, v in chosen.items() if k in args.methods.split(",")}
    started = time.perf_counter()
    rows = compare(curves, chosen, [float(b) for b in args.budgets.split(",")],
                   [int(w) for w in args.workers.split(",")], args.seeds)
    result = {"benchmark": "schedulers", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "curves": {"file": args.curves, "count": len(curves), **table["meta"]},
              "constants": {"two_threads": TWO_THREADS, "new_trial_s": NEW_TRIAL_S, "resume_s": RESUME_S,
                            "seconds_scale": FULL_TRAIN / subset * TWO_THREADS},
              "rank_correlation_with_test_at_end": rank_correlations(curves),
              "rows": rows, "seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "schedulers.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "schedulers.md").write_text(markdown(rows) + "\n")
    print(markdown(rows))
    print("rank correlation with the test accuracy at the end:", result["rank_correlation_with_test_at_end"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
