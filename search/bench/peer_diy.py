"""COMPARATOR, deliberately separate from the service: a search written the way Ray Tune's
documentation shows it (Tuner + OptunaSearch + ASHA, a torchvision FashionMNIST + DataLoader
built inside every trial, a checkpoint per epoch, flat MLflowLoggerCallback runs), used only by
the peer benchmark as the do-it-yourself yardstick. It shares hpsearch's search space, start
points, sampler settings and model builder, so that only the pipeline differs."""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from spaces.registry import get_study
from spaces.study import SpaceContext
from trainables.model import NetConfig, build_model, lr_factor, make_optimizer


def _loaders(root: str, batch_size: int):
    from torch.utils.data import DataLoader, random_split
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    full = datasets.FashionMNIST(root, train=True, download=False, transform=transform)
    train, val = random_split(full, [0.9, 0.1], generator=torch.Generator().manual_seed(0))
    return (DataLoader(train, batch_size=batch_size, shuffle=True),
            DataLoader(val, batch_size=1000))


def _accuracy(model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def train_fashion(config: dict, root: str, max_epochs: int) -> None:
    from ray import tune

    cfg = NetConfig.from_flat(config)
    train_loader, val_loader = _loaders(root, cfg.batch_size)
    model = build_model(cfg, (1, 28, 28), 10)
    optimizer = make_optimizer(cfg, model)
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, "checkpoint.pt"), weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = state["epoch"]
    steps = len(train_loader)
    for epoch in range(start, max_epochs):
        model.train()
        for i, (x, y) in enumerate(train_loader):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg, epoch * steps + i, max_epochs * steps)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1},
                       os.path.join(folder, "checkpoint.pt"))
            tune.report({"val_accuracy": _accuracy(model, val_loader), "epoch": epoch + 1},
                        checkpoint=tune.Checkpoint.from_directory(folder))


def run_diy(root: str, storage: Path, tracking_uri: str, trials: int, epochs: int, cpus: int, seed: int) -> dict:
    """The whole DIY search plus the docs' last step: test the best checkpoint. Returns wall
    time (Ray start to test accuracy) and the best trial's test accuracy."""
    import optuna
    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    started = time.perf_counter()
    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name("diy") is None:  # artifacts beside the store, not in the cwd
        client.create_experiment("diy", artifact_location=(storage / "mlartifacts").resolve().as_uri())
    study = get_study("fashion_space")
    s = study.settings
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        ctx = SpaceContext((1, 28, 28), 10, int(s.max_mmacs_cpu * 1e6) if s.max_mmacs_cpu else None)
        searcher = OptunaSearch(
            space=functools.partial(study.define, ctx=ctx), metric="val_accuracy", mode="max",
            points_to_evaluate=[dict(p) for p in study.start_points],
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials,
                                               multivariate=True, group=True, constant_liar=True))
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(train_fashion, root=root, max_epochs=epochs), {"cpu": 1}),
            tune_config=tune.TuneConfig(
                metric="val_accuracy", mode="max", search_alg=searcher, num_samples=trials,
                # Ray's docs report once per epoch: the first rung is a whole epoch.
                scheduler=ASHAScheduler(max_t=epochs, grace_period=1,
                                        reduction_factor=s.reduction_factor),
                max_concurrent_trials=cpus),
            run_config=tune.RunConfig(
                name="diy", storage_path=str(storage), verbose=0,
                callbacks=[MLflowLoggerCallback(tracking_uri=tracking_uri,
                                                experiment_name="diy", save_artifact=False)]),
        )
        # Tune's defaults, its CSV, JSON and TensorBoard loggers, although hpsearch turns them off
        # in this process (search.tune.tuner.result_loggers): the yardstick is the documented setup.
        switch = os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        try:
            results = tuner.fit()
        finally:
            if switch is not None:
                os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = switch
        search_s = time.perf_counter() - started
        best = results.get_best_result("val_accuracy", "max", scope="all")
        cfg = NetConfig.from_flat(best.config)
        model = build_model(cfg, (1, 28, 28), 10)
        checkpoint = max(best.best_checkpoints, key=lambda c: c[1]["val_accuracy"])[0]
        with checkpoint.as_directory() as folder:
            model.load_state_dict(torch.load(os.path.join(folder, "checkpoint.pt"), weights_only=False)["model"])
        test = datasets.FashionMNIST(root, train=False, download=False, transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))]))
        test_accuracy = _accuracy(model, DataLoader(test, batch_size=1000))
        trial_epochs = sum(len(r.metrics_dataframe) for r in results if r.metrics_dataframe is not None)
    finally:
        ray.shutdown()
    return {"wall_s": time.perf_counter() - started, "search_s": search_s, "test_accuracy": test_accuracy,
            "best_val_accuracy": best.metrics["val_accuracy"], "trial_epochs": trial_epochs,
            "best_config": best.config}
