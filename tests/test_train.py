from __future__ import annotations

import numpy as np
import pytest
import torch

from spaces.fashion_space import GRID_WINNER
from trainables.data import Split, TrainingData
from trainables.model import NetConfig
from trainables.train import TrialSettings, fit, retrain_and_test


def toy_data(n=240, seed=0, with_val=True) -> TrainingData:
    """Learnable toy images: the class sets the brightness of one band."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 60, (n, 1, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 0, 2 * c:2 * c + 3, :] = 250
    train = Split(x[: n * 3 // 4], y[: n * 3 // 4].astype(np.int64))
    val = Split(x[n * 3 // 4:], y[n * 3 // 4:].astype(np.int64)) if with_val else None
    return TrainingData(train, val, tuple(str(c) for c in range(10)), (0.2,), (0.3,))


CFG = NetConfig.from_flat({**GRID_WINNER, "batch_size": 32})


def test_fit_learns_and_reports_every_epoch():
    seen = []
    fit(CFG, toy_data(), epochs=3, seed=0, device=torch.device("cpu"),
                 on_epoch=lambda metrics, snapshot: seen.append(metrics))
    assert [m["epoch"] for m in seen] == [1, 2, 3]
    assert set(seen[0]) >= {"train_loss", "val_loss", "val_accuracy", "epoch_seconds"}
    assert seen[-1]["val_accuracy"] > 0.5  # chance is 0.1


def test_resuming_from_a_checkpoint_continues_exactly():
    data = toy_data()
    straight = fit(CFG, data, epochs=3, seed=5, device=torch.device("cpu"))
    snapshots = []

    class Interrupted(Exception):
        pass

    def crash_after_first_epoch(metrics, snapshot):
        snapshots.append(snapshot())
        raise Interrupted

    with pytest.raises(Interrupted):
        fit(CFG, data, epochs=3, seed=5, device=torch.device("cpu"), on_epoch=crash_after_first_epoch)
    state = snapshots[-1]
    assert state["epoch"] == 1 and state["config"] == CFG.to_flat()
    resumed = fit(CFG, data, epochs=3, seed=5, device=torch.device("cpu"), state=state)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(straight.history, resumed.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    for pa, pb in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(pa, pb)


def test_same_seed_same_result_other_seed_differs():
    data = toy_data()
    a = fit(CFG, data, 1, seed=1, device=torch.device("cpu")).history[0]["val_loss"]
    b = fit(CFG, data, 1, seed=1, device=torch.device("cpu")).history[0]["val_loss"]
    c = fit(CFG, data, 1, seed=2, device=torch.device("cpu")).history[0]["val_loss"]
    assert a == b and a != c


def test_divergence_stops_training_and_is_flagged():
    cfg = NetConfig.from_flat({**GRID_WINNER, "optimizer": "sgd", "lr": 10.0, "momentum": 0.99,
                               "activation": "elu", "batch_size": 16})
    result = fit(cfg, toy_data(), epochs=5, seed=0, device=torch.device("cpu"))
    assert result.diverged
    assert len(result.history) < 5 and result.history[-1]["diverged"] == 1.0


def test_final_retrain_tests_once_on_the_held_out_split():
    data = toy_data(with_val=False)
    test = toy_data(n=100, seed=9).train
    out = retrain_and_test(CFG.to_flat(), data, test, TrialSettings(max_epochs=2, seed=0, threads=1))
    assert len(out["history"]) == 2 and "val_loss" not in out["history"][0]
    confusion = np.asarray(out["confusion"])
    assert confusion.sum() == len(test)
    assert out["test_accuracy"] == pytest.approx(np.trace(confusion) / len(test))
    assert set(out["per_class_accuracy"]) == set(data.classes)


def test_batches_standardise_float_features_without_touching_the_data():
    from trainables.train import Batches

    rng = np.random.default_rng(0)
    x = (rng.normal(500.0, 40.0, (50, 3, 1, 1))).astype(np.float32)
    split = Split(x.copy(), np.arange(50) % 2)
    data = TrainingData(split, None, ("a", "b"), tuple(x.mean(axis=(0, 2, 3))), tuple(x.std(axis=(0, 2, 3))))
    batches = Batches(split, data, torch.device("cpu"))
    first = torch.cat([xb for xb, _ in batches.in_order(16)])
    second = torch.cat([xb for xb, _ in batches.in_order(16)])
    torch.testing.assert_close(first, second)
    assert abs(first.mean().item()) < 1e-3 and abs(first.std().item() - 1) < 0.05
    assert np.array_equal(split.x, x)
