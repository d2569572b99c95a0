from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from spaces.fashion_space import GRID_WINNER
from trainables.datasets import Split, TrainingData
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
    out = retrain_and_test(CFG, data, test, TrialSettings(max_epochs=2, seed=0, threads=1))
    assert len(out.history) == 2 and "val_loss" not in out.history[0]
    confusion = np.asarray(out.confusion)
    assert confusion.sum() == len(test)
    assert out.test_accuracy == pytest.approx(np.trace(confusion) / len(test))
    assert set(out.per_class_accuracy) == set(data.classes)


def test_batches_standardise_float_features_without_touching_the_data():
    from trainables.train import Batches, input_norm

    rng = np.random.default_rng(0)
    x = (rng.normal(500.0, 40.0, (50, 3, 1, 1))).astype(np.float32)
    split = Split(x.copy(), np.arange(50) % 2)
    data = TrainingData(split, None, ("a", "b"), tuple(x.mean(axis=(0, 2, 3))), tuple(x.std(axis=(0, 2, 3))))
    batches = Batches(split, torch.device("cpu"))
    norm = input_norm(data)  # the network's first layer standardises what the batches carry
    first = norm(torch.cat([xb for xb, _ in batches.in_order(16)]))
    second = norm(torch.cat([xb for xb, _ in batches.in_order(16)]))
    torch.testing.assert_close(first, second)
    assert abs(first.mean().item()) < 1e-3 and abs(first.std().item() - 1) < 0.05
    assert np.array_equal(split.x, x)


def test_reports_inside_the_first_epoch_at_the_rungs_without_adding_epochs():
    partials, epochs = [], []
    result = fit(CFG, toy_data(), epochs=2, seed=0, device=torch.device("cpu"),
                 report_points=(0.25, 0.5, 1.5), on_partial=partials.append,
                 on_epoch=lambda metrics, snapshot: epochs.append(metrics))
    assert [(p["epoch"], p["epochs_seen"], p["partial"]) for p in partials] == [(0, 0.25, 1.0), (0, 0.5, 1.0),
                                                                                  (1, 1.5, 1.0)]
    assert all(0.0 <= p["val_accuracy"] <= 1.0 and p["train_loss"] > 0 for p in partials)
    assert [h["epoch"] for h in result.history] == [1, 2] and [e["epochs_seen"] for e in epochs] == [1.0, 2.0]
    # Reporting changes nothing in what is trained: same weights as without the early reports.
    plain = fit(CFG, toy_data(), epochs=2, seed=0, device=torch.device("cpu"))
    for a, b in zip(result.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b)


def test_a_retrain_to_the_best_epoch_follows_the_trials_schedule():
    cfg = NetConfig.from_flat({**GRID_WINNER, "batch_size": 32, "lr_schedule": "cosine"})
    data = toy_data()
    trial = fit(cfg, data, epochs=4, seed=3, device=torch.device("cpu"))
    stopped = []

    class Stop(Exception):
        pass

    def after_two(metrics, snapshot):
        if metrics["epoch"] == 2:
            stopped.append(snapshot())
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, data, epochs=4, seed=3, device=torch.device("cpu"), on_epoch=after_two)
    retrain = fit(cfg, data, epochs=2, seed=3, device=torch.device("cpu"), schedule_epochs=4)
    short = fit(cfg, data, epochs=2, seed=3, device=torch.device("cpu"))
    assert retrain.history[-1]["val_loss"] == pytest.approx(trial.history[1]["val_loss"], rel=1e-5)
    assert short.history[-1]["val_loss"] != pytest.approx(trial.history[1]["val_loss"], rel=1e-5)
    for a, (name, b) in zip(retrain.model.state_dict().values(), stopped[0]["model"].items()):
        torch.testing.assert_close(a, b, msg=name)


def test_a_checkpoint_is_tested_as_saved_and_loads_without_pickle(tmp_path):
    from trainables.train import evaluate_checkpoint

    data, test = toy_data(), toy_data(n=100, seed=9).train
    snapshots = []
    fit(
        CFG,
        data,
        epochs=2,
        seed=0,
        device=torch.device("cpu"),
        on_epoch=lambda m, snapshot: snapshots.append(snapshot()),
    )
    torch.save(snapshots[0], tmp_path / "checkpoint.pt")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # tensors and plain types only
    out = evaluate_checkpoint(state, data, test)
    assert out.epoch == 1 and out.history == snapshots[0]["history"]
    assert np.asarray(out.confusion).sum() == len(test)
    assert list(out.mean) == list(data.mean)
    assert all(v.dtype == torch.float32 or not v.is_floating_point() for v in out.state_dict.values())
    assert all(v.is_contiguous() for v in out.state_dict.values())


def test_a_final_model_continues_a_trials_checkpoint_on_all_the_data():
    """`--final continue`: the trial's checkpoint trains on, on the final data (no validation
    split), its epochs counted; the network keeps the input statistics it first trained with."""
    trial_data, final_data = toy_data(), toy_data(n=320, seed=4, with_val=False)
    snapshots = []
    fit(CFG, trial_data, epochs=2, seed=3, device=torch.device("cpu"),
        on_epoch=lambda metrics, snapshot: snapshots.append(snapshot()))
    state = snapshots[-1]
    test = toy_data(n=100, seed=9).train
    out = retrain_and_test(CFG, final_data, test, TrialSettings(max_epochs=4, seed=3), schedule_epochs=4,
                           state=state)
    assert [h["epoch"] for h in out.history] == [1, 2, 3, 4]
    assert out.history[:2] == state["history"] and "val_loss" not in out.history[2]
    assert out.mean == tuple(trial_data.mean) and out.state_dict  # not the final data's statistics
    fresh = retrain_and_test(CFG, final_data, test, TrialSettings(max_epochs=4, seed=3), schedule_epochs=4)
    assert len(fresh.history) == 4
    assert any(not torch.equal(a, b) for a, b in zip(out.state_dict.values(), fresh.state_dict.values()))


def test_a_continued_training_plans_its_deadline_from_its_own_epochs_only():
    """A continued trial's epochs ran elsewhere (one thread, the search's split): the deadline's
    plan counts and times only the epochs trained after the checkpoint."""
    from trainables.train import Deadline

    snapshots = []
    fit(CFG, toy_data(), epochs=2, seed=0, device=torch.device("cpu"),
        on_epoch=lambda metrics, snapshot: snapshots.append(snapshot()))
    state = snapshots[-1]
    for h in state["history"]:
        h["epoch_seconds"] = 1000.0  # slow trial epochs that must not enter the plan
    calls = []

    class Recorded(Deadline):
        def epochs(self, done, seconds, planned):
            calls.append((done, list(seconds), planned))
            return 3  # three more epochs, whatever the clock says

    result = fit(CFG, toy_data(with_val=False), epochs=4, seed=0, device=torch.device("cpu"), state=state,
                 deadline=Recorded(at=time.time() + 3600))
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    assert [c[0] for c in calls] == [1, 2, 3] and all(1000.0 not in c[1] for c in calls)
    assert [len(c[1]) for c in calls] == [1, 2, 3] and calls[0][2] == 2


def test_past_its_first_epochs_a_deadline_ends_training_mid_epoch():
    """Whole epochs of 40-60 s cannot land a 12-minute command within 5% of its budget: once the
    deadline has allowed its minimum, the epoch running at the deadline ends there."""
    from trainables.train import Deadline

    class AlwaysThree(Deadline):
        def epochs(self, done, seconds, planned):
            return 3  # the plan says three epochs; the clock (a deadline already past) says stop

    data = toy_data()
    result = fit(CFG, data, epochs=3, seed=0, device=torch.device("cpu"), deadline=AlwaysThree(at=time.time() - 1))
    assert [h["epoch"] for h in result.history] == [1, 2]
    first, cut = result.history
    assert first["epochs_seen"] == 1.0  # the minimum: one whole epoch, whatever the clock
    assert 1.0 < cut["epochs_seen"] < 2.0 and cut["epochs_seen"] == 1 + CFG.batch_size / len(data.train)
    # Without a deadline nothing is cut, even where the last batch of one is left out.
    plain = fit(CFG, toy_data(n=241), epochs=2, seed=0, device=torch.device("cpu"))
    assert [h["epochs_seen"] for h in plain.history] == [1.0, 2.0]
