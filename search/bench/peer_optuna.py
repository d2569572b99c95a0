"""COMPARATOR, deliberately separate from the service: the search a user writes who skips Ray,
with Optuna alone in one process (its tutorial's shape: `study.optimize(objective, timeout=...)`,
TPE, MedianPruner on per-epoch reports, torchvision FashionMNIST + DataLoader), then tests the
best trial's own weights once. It shares hpsearch's search space, start points, sampler settings
and model builder, so that only the way the search is run differs. Used by the value benchmark
(search.bench.value, part d) at the same wall time as hpsearch's default study."""

from __future__ import annotations

import copy
import time

import torch
from torch.nn import functional as F

from spaces.fashion_space import GRID_WINNER, TEXTBOOK_CNN, fashion_space
from spaces.study import SpaceContext
from trainables.model import NetConfig, build_model, lr_factor, make_optimizer

MEAN, STD = (0.2860,), (0.3530,)


def _datasets(root: str):
    from torch.utils.data import random_split
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    full = datasets.FashionMNIST(root, train=True, download=False, transform=transform)
    train, val = random_split(full, [0.9, 0.1], generator=torch.Generator().manual_seed(0))
    test = datasets.FashionMNIST(root, train=False, download=False, transform=transform)
    return train, val, test


def _accuracy(model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def run_optuna(root: str, budget_s: float, seed: int, threads: int = 2, max_epochs: int = 10) -> dict:
    """The whole search and the test of its best trial within `budget_s` seconds of wall time
    (the search's timeout leaves the test its few seconds)."""
    import optuna
    from torch.utils.data import DataLoader

    started = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train, val, test = _datasets(root)
    s = fashion_space.settings
    ctx = SpaceContext((1, 28, 28), 10, int(s.max_mmacs_cpu * 1e6))
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials, multivariate=True,
                                           group=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    for point in (TEXTBOOK_CNN, GRID_WINNER):
        study.enqueue_trial({k: v for k, v in point.items() if k != "lr_schedule"})
    best = {"accuracy": -1.0, "state": None, "config": None}

    # A user's timeout lets the running trial finish (up to 10 epochs more); at equal wall time
    # the search must end on time, so every trial stops at the deadline, leaving the test its seconds.
    deadline = started + budget_s - 15

    def objective(trial) -> float:
        constants = fashion_space.define(trial, ctx) or {}
        params = {**trial.params, **constants}
        cfg = NetConfig.from_flat(params)
        model = build_model(cfg, (1, 28, 28), 10)
        optimizer = make_optimizer(cfg, model)
        loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True)
        steps = len(loader)
        accuracy = 0.0
        for epoch in range(max_epochs):
            model.train()
            for i, (x, y) in enumerate(loader):
                if i % 50 == 0 and time.perf_counter() > deadline:
                    study.stop()
                    raise optuna.TrialPruned()
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(cfg, epoch * steps + i, max_epochs * steps)
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            accuracy = _accuracy(model, DataLoader(val, batch_size=1000))
            if accuracy > best["accuracy"]:
                best.update(accuracy=accuracy, state=copy.deepcopy(model.state_dict()), config=params)
            trial.report(accuracy, epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    study.optimize(objective, timeout=max(deadline - time.perf_counter(), 1), catch=(RuntimeError,))
    search_s = time.perf_counter() - started
    model = build_model(NetConfig.from_flat(best["config"]), (1, 28, 28), 10)
    model.load_state_dict(best["state"])
    test_accuracy = _accuracy(model, DataLoader(test, batch_size=1000))
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return {"wall_s": time.perf_counter() - started, "search_s": search_s, "test_accuracy": test_accuracy,
            "best_val_accuracy": best["accuracy"], "trials": len(study.trials), "pruned": pruned,
            "best_config": best["config"]}
