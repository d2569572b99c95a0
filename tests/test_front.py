"""The accuracy-cost front and the device limits (issue 14, item 5): the front on hand-made
tables (dominance, ties, missing values, trials stopped inside their first epoch), the latency
helper, `--max-mmacs` / `--max-latency-ms` (refusals, the plan's cap, study.json), the choice of
the best trial under a latency limit, `search.export --pareto` and the report's figure on a
synthetic results folder. Quick: no search runs here (tests/test_report.py covers the figure in
a real study's report)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from search.results.front import DeviceLimits, counted, pareto_front
from search.results.records import TrialRecord
from search.results.trials_table import CONFIG_PREFIX, trials_table, write_table
from search.study.phases import SearchOutcome, choose
from spaces.fashion_space import TEXTBOOK_CNN
from spaces.registry import get_study
from tests.conftest import run_module, user_error
from trainables.model import NetConfig, build_model

NAN = math.nan


def table(rows: list[tuple]) -> pd.DataFrame:
    """(trial, status, best_epoch, val_accuracy, mmacs, latency_ms_b1) rows as a trials table."""
    return pd.DataFrame(rows, columns=["trial", "status", "best_epoch", "val_accuracy", "mmacs", "latency_ms_b1"])


HAND_MADE = table([
    ("cheap", "completed", 3, 0.80, 1.0, 0.2),
    ("mid", "completed", 2, 0.85, 2.0, 0.4),
    ("worse_and_dearer", "completed", 2, 0.84, 3.0, 0.3),  # dominated by mid on mmacs, not on latency
    ("tie_of_mid", "stopped_early", 1, 0.85, 2.0, 0.5),  # equal on both: neither dominates
    ("quarter_epoch", "stopped_early", 0, 0.90, 0.5, NAN),  # would dominate all, but trained 1/4 epoch
    ("no_cost", "completed", 3, 0.95, NAN, NAN),
    ("no_score", "diverged", 1, NAN, 4.0, 0.1),
    ("failed", "failed", 1, 0.99, 0.1, 0.1),
    ("dear_best", "completed", 3, 0.88, 5.0, 1.0),
    ("same_cost_worse", "completed", 3, 0.79, 1.0, 0.2),  # as costly as cheap, and worse
])


def test_front_keeps_the_non_dominated_trials_cheapest_first():
    front = pareto_front(HAND_MADE, "val_accuracy", "max", "mmacs")
    assert list(front["trial"]) == ["cheap", "mid", "tie_of_mid", "dear_best"]


def test_front_against_latency_and_a_metric_to_minimise():
    by_latency = pareto_front(HAND_MADE, "val_accuracy", "max", "latency_ms_b1")
    assert list(by_latency["trial"]) == ["cheap", "worse_and_dearer", "mid", "dear_best"]
    losses = HAND_MADE.assign(val_loss=1 - HAND_MADE["val_accuracy"])
    assert list(pareto_front(losses, "val_loss", "min", "mmacs")["trial"]) == \
        ["cheap", "mid", "tie_of_mid", "dear_best"]


def test_front_of_nothing_and_an_unknown_cost():
    assert pareto_front(HAND_MADE[HAND_MADE["trial"] == "quarter_epoch"], "val_accuracy").empty
    assert pareto_front(HAND_MADE.drop(columns="val_accuracy"), "val_accuracy").empty
    with pytest.raises(ValueError, match="cost must be one of"):
        pareto_front(HAND_MADE, "val_accuracy", cost="params")
    assert set(counted(HAND_MADE, "val_accuracy")["trial"]) == \
        {"cheap", "mid", "worse_and_dearer", "tie_of_mid", "no_cost", "dear_best", "same_cost_worse"}


def test_latency_is_positive_finite_and_leaves_the_model_and_rng_as_they_were():
    from trainables.latency import LATENCY_METRICS, measure_latency

    model = build_model(NetConfig.from_flat(TEXTBOOK_CNN), (1, 28, 28), 10).train()
    rng = torch.get_rng_state()
    latency = measure_latency(model, (1, 28, 28), torch.device("cpu"))
    metrics = latency.metrics()
    assert tuple(metrics) == LATENCY_METRICS
    assert all(math.isfinite(v) and v > 0 for v in metrics.values()), metrics
    assert model.training and torch.equal(torch.get_rng_state(), rng)


def test_limits_mark_what_fits():
    limits = DeviceLimits(max_mmacs=2.5, max_latency_ms=0.45)
    fits = dict(zip(HAND_MADE["trial"], limits.fits(HAND_MADE)))
    assert fits["cheap"] and fits["mid"] and not fits["worse_and_dearer"] and not fits["tie_of_mid"]
    assert not fits["quarter_epoch"]  # never measured: cannot show it fits a latency limit
    assert dict(zip(HAND_MADE["trial"], DeviceLimits(max_mmacs=2.5).fits(HAND_MADE)))["quarter_epoch"]
    assert DeviceLimits().fits(HAND_MADE).all() and not DeviceLimits().any
    assert limits.describe() == "at most 2.5 million multiply-adds per image and 0.45 ms per image at batch 1"


@pytest.mark.parametrize("option,value,message", [
    ("max_mmacs", 0.0, r"the multiply-add limit must be a positive number, got 0; pass --max-mmacs positive"),
    ("max_latency_ms", -1.0, r"the latency limit must be a positive number, got -1; pass --max-latency-ms"),
    ("max_latency_ms", math.inf, r"got inf; pass --max-latency-ms"),
    ("max_mmacs", math.nan, r"got nan; pass --max-mmacs"),
])
def test_non_positive_limits_are_refused(option, value, message):
    with user_error(message):
        DeviceLimits(**{option: value})


@pytest.mark.parametrize("args,fragment", [
    (["--max-mmacs", "0"], "the multiply-add limit must be a positive number, got 0; pass --max-mmacs"),
    (["--max-latency-ms", "-2"], "the latency limit must be a positive number, got -2; pass --max-latency-ms"),
])
def test_the_cli_refuses_limits_in_one_line(tmp_path, args, fragment):
    proc = run_module("search.run", "fashion_space", *args, "--results-dir", str(tmp_path), timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_max_mmacs_replaces_the_studys_cap_on_cpu_and_gpu():
    from search.tune.tuner import make_plan

    study = get_study("fashion_space")
    common = dict(cluster_cpus=2, samples=None, max_epochs=None, time_budget_min=None, seed=0)
    assert make_plan(study, cluster_gpus=0, gpus=0, **common).max_macs == int(study.settings.max_mmacs_cpu * 1e6)
    assert make_plan(study, cluster_gpus=0, gpus=0, max_mmacs=0.75, **common).max_macs == 750_000
    assert make_plan(study, cluster_gpus=1, gpus=1, max_mmacs=3, **common).max_macs == 3_000_000


def test_a_cap_below_every_network_is_one_line():
    from search.tune.tuner import check_cost_cap, make_plan
    from trainables.datasets import Split, TrainingData

    study = get_study("fashion_space")
    plan = make_plan(study, cluster_cpus=2, cluster_gpus=0, gpus=0, samples=None, max_epochs=None,
                     time_budget_min=None, seed=0, max_mmacs=0.001)
    x = np.zeros((4, 1, 28, 28), np.uint8)
    data = TrainingData(Split(x, np.zeros(4, np.int64)), None, tuple("abcdefghij"), (0.0,), (1.0,))
    with user_error(r"needs more than the cap of 0.001 million multiply-adds per image on 1x28x28 images; "
                    r"pass --max-mmacs a larger cap \(the smallest sampled network: "):
        check_cost_cap(study, plan, data, user_cap=True)


def test_limits_are_saved_with_the_study_and_come_back(tmp_path):
    from search.results.request import StudyRequest, StudyState

    request = StudyRequest(space="fashion_space", name="s", results_root=str(tmp_path), data={},
                           tracking_uri="sqlite:///x.db", max_mmacs=2.0, max_latency_ms=0.5)
    request.folder.mkdir()
    StudyState(request).save()
    loaded = StudyState.load(request.folder).request
    assert (loaded.max_mmacs, loaded.max_latency_ms) == (2.0, 0.5)
    assert loaded.limits == DeviceLimits(2.0, 0.5)


def record(name: str, accuracy: float, latency: float | None, epochs: int = 2) -> TrialRecord:
    history = [{"epoch": e, "val_accuracy": accuracy - 0.01 * (epochs - e), "val_loss": 1 - accuracy,
                "train_loss": 0.5, "epoch_seconds": 1.0} for e in range(1, epochs + 1)]
    if latency is not None and history:
        history[0].update(latency_ms_b1=latency, latency_ms_b256=40 * latency)
    return TrialRecord(trial_id=name, name=name, config=dict(TEXTBOOK_CNN), history=history,
                       status="completed" if epochs >= 2 else "stopped_early")


TRIALS = [record("trial_001", 0.91, 3.0), record("trial_002", 0.88, 0.8), record("trial_003", 0.86, 0.5)]


def test_choose_passes_over_a_trial_too_slow_for_the_device():
    study = get_study("fashion_space")
    rows = trials_table(TRIALS, "val_accuracy", "max", (1, 28, 28), 10, limits=DeviceLimits(max_latency_ms=1.0))
    assert list(rows["trial"]) == ["trial_001", "trial_002", "trial_003"]
    assert list(rows["fits"]) == [False, True, True]
    assert list(rows["latency_ms_b1"]) == [3.0, 0.8, 0.5] and list(rows["latency_ms_b256"]) == [120.0, 32.0, 20.0]
    best = choose(study, rows, SearchOutcome(results=[], records=TRIALS, interrupted=False))
    assert best is not None and best.record.name == "trial_002"
    nothing = trials_table(TRIALS, "val_accuracy", "max", (1, 28, 28), 10, limits=DeviceLimits(max_latency_ms=0.1))
    assert choose(study, nothing, SearchOutcome(results=[], records=TRIALS, interrupted=False)) is None
    unlimited = trials_table(TRIALS, "val_accuracy", "max", (1, 28, 28), 10)
    assert unlimited["fits"].all()
    assert choose(study, unlimited, SearchOutcome([], TRIALS, False)).record.name == "trial_001"


def results_folder(root: Path, **state) -> Path:
    """A study folder as search.run leaves it, but for the final model: study.json and the tables."""
    folder = root / "study"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps({"space": "fashion_space", "name": "study", "seed": 0, **state}))
    trials = [*TRIALS, record("trial_004", 0.80, 0.3), record("trial_005", 0.95, None, epochs=0)]
    limits = DeviceLimits(state.get("max_mmacs"), state.get("max_latency_ms"))
    rows = trials_table(trials, "val_accuracy", "max", (1, 28, 28), 10, limits=limits)
    # Networks of different cost (the configurations themselves are all the textbook CNN).
    rows["mmacs"] = rows["trial"].map({"trial_001": 4.0, "trial_002": 1.0, "trial_003": 2.0, "trial_004": 0.5,
                                       "trial_005": 0.1})
    rows["fits"] = limits.fits(rows)
    write_table(rows, folder)
    return folder


def test_export_pareto_lists_the_front(tmp_path):
    folder = results_folder(tmp_path, max_latency_ms=1.0)
    out = tmp_path / "front.json"
    proc = run_module("search.export", str(folder), "--pareto", "--output", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(out.read_text())
    # trial_003 (2 MMACs, 0.86) is beaten by trial_002 (1 MMAC, 0.88); trial_005 trained a quarter epoch.
    assert [e["search"]["trial"] for e in entries] == ["trial_004", "trial_002", "trial_001"]
    assert [e["search"]["front"] for e in entries] == [1, 2, 3]
    assert entries[1]["search"]["cost"] == {"mmacs": 1.0, "latency_ms_b1": 0.8, "latency_ms_b256": 32.0}
    assert [e["search"]["fits"] for e in entries] == [True, True, False]
    assert "trial_001 exceeds the study's device limits" in proc.stderr
    assert all(e["epochs"] == 2 and e["hyperparameters"]["conv_layers"] == 2 for e in entries)

    by_latency = run_module("search.export", str(folder), "--pareto", "--cost", "latency_ms_b1", "--format", "yaml")
    assert by_latency.returncode == 0, by_latency.stderr
    assert "front_cost: latency_ms_b1" in by_latency.stdout
    refused = run_module("search.export", str(folder), "--pareto", "--top", "2")
    assert refused.returncode == 2 and "--top and --pareto" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_the_report_draws_and_lists_the_front(tmp_path):
    from search.reporting.page import write_report

    folder = results_folder(tmp_path, max_mmacs=3.0)
    report = write_report(folder)
    assert report.figures["front"] == folder / "report" / "front.png"
    assert report.figures["front"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report.html.read_text()
    assert 'id="front"' in page and "The accuracy-cost front (3 trials, cheapest first)" in page
    assert "at most 3 million multiply-adds per image: 1 trial exceeds them" in page
    front_rows = page.split('<table class="front">')[1].split("</table>")[0]
    assert [row.split("</td>")[0] for row in front_rows.split("<tr><td>")[1:]] == \
        ["trial_004", "trial_002", "trial_001"]
    assert CONFIG_PREFIX not in front_rows


def test_a_study_from_before_latency_still_has_its_front(tmp_path):
    """Trials tables written before latency and fits existed: the MACs front, the figure's single
    panel, and a latency front refused in one line."""
    from search.export import pareto_configs
    from search.reporting.figures import front_figure
    from search.results.folder import load

    folder = results_folder(tmp_path)
    rows = pd.read_parquet(folder / "trials.parquet").drop(columns=["latency_ms_b1", "latency_ms_b256", "fits"])
    rows.to_parquet(folder / "trials.parquet", index=False)
    assert [c.search["trial"] for c in pareto_configs(folder)] == ["trial_004", "trial_002", "trial_001"]
    assert all("fits" not in c.search for c in pareto_configs(folder))
    assert front_figure(load(folder), tmp_path / "front.png") == tmp_path / "front.png"
    with user_error(r"no latency_ms_b1 \(a study from before latency was measured\); pass --cost mmacs"):
        pareto_configs(folder, "latency_ms_b1")
