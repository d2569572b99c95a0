"""The numerics choice per device (trainables/numerics.py) and what runs under it."""

from __future__ import annotations

import pytest
import torch

from tests.test_train import CFG, toy_data
from trainables.numerics import PRECISIONS, Accel, accelerator, check_precision
from trainables.train import Batches, evaluate, fit


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_auto_uses_bf16_only_where_the_hardware_has_it(device: str) -> None:
    dev = torch.device(device)
    assert accelerator(dev, "auto", bf16_supported=True) == Accel(torch.bfloat16, True)
    # Emulated bf16 measured 4-8x slower here: channels-last fp32 instead.
    assert accelerator(dev, "auto", bf16_supported=False) == Accel(None, True)


def test_forced_precision_wins_over_detection() -> None:
    cpu = torch.device("cpu")
    assert accelerator(cpu, "bf16", bf16_supported=False).precision == "bf16"
    assert accelerator(cpu, "fp32", bf16_supported=True).precision == "fp32"
    assert accelerator(cpu, "fp32").name == "fp32+channels_last"


def test_unknown_precision_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match="'fp16'"):
        check_precision("fp16")


def test_cli_choices_match_the_library() -> None:
    from search import run
    from search.results import study_fields
    from search.results.study_fields import FINAL_MODES
    from search.tune.asha import SCHEDULERS

    final = next(a for a in run.build_parser()._actions if a.dest == "final")
    assert run.PRECISIONS == PRECISIONS and tuple(final.choices) == FINAL_MODES
    assert set(run.SCHEDULERS) <= set(SCHEDULERS)
    # study.json's rules take every value a run may write
    for field, values in (("precision", PRECISIONS), ("final", FINAL_MODES), ("scheduler", run.SCHEDULERS)):
        ok, _ = study_fields._FIELDS[field]
        assert all(ok(v) for v in values) and not ok("nonsense")


@pytest.mark.parametrize("accel", [Accel(None, True), Accel(torch.bfloat16, True)], ids=lambda a: a.name)
def test_training_keeps_fp32_weights_and_learns(accel: Accel) -> None:
    result = fit(CFG, toy_data(), epochs=3, seed=0, device=torch.device("cpu"), accel=accel)
    assert result.accel == accel
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast keeps fp32 weights
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["val_accuracy"] > 0.3  # chance is 0.1


def test_batches_come_channels_last() -> None:
    data = toy_data()
    xb, _ = next(Batches(data.train, torch.device("cpu"), Accel(None, True)).in_order(8))
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert Accel(None, True).layout(torch.ones(3, 4)).shape == (3, 4)  # no layout for flat batches


def test_bf16_evaluation_matches_fp32_closely() -> None:
    data = toy_data()
    model = fit(CFG, data, epochs=2, seed=0, device=torch.device("cpu")).model
    cpu = torch.device("cpu")
    fp32 = evaluate(model, Batches(data.val, cpu, Accel(None, True)), 10)
    bf16 = evaluate(model, Batches(data.val, cpu, Accel(torch.bfloat16, True)), 10)
    assert abs(fp32.accuracy - bf16.accuracy) <= 0.05
