"""Report, compare, export and --quiet on the results of real tiny searches (Ray, Optuna, ASHA,
MLflow on a slice of real Fashion-MNIST): one TPE study run with --quiet and one grid study, both
at once into one results root, so into one SQLite MLflow store."""

from __future__ import annotations

import json
import re
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from search.reporting.figures import DPI
from search.reporting.replay import importances, optuna_study, searched, stored_trials
from search.results.best_config import BestConfig
from search.results.files import REPORT_DIR
from search.results.folder import load
from search.results.request import SMOKE_TEST, SMOKE_TRAIN
from tests.conftest import run_cli_here, run_module

pytestmark = pytest.mark.slow
FIGURES = ("history", "parallel", "importance", "curves", "front", "confusion")


@pytest.fixture(scope="module")
def studies(data_root, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    common = ("--smoke", "--results-dir", str(results), "--data-dir", str(data_root))
    # Both at once: most of a tiny search is Ray starting and the final retrain, not the trials.
    with ThreadPoolExecutor(2) as pool:
        space_run = pool.submit(run_module, "search.run", "fashion_space", "--samples", "3", "--max-epochs", "2",
                                "--name", "space", "--quiet", *common)
        grid_run = pool.submit(run_module, "search.run", "fashion_grid", "--samples", "2", "--max-epochs", "1",
                               "--name", "grid", *common)
        space, grid = space_run.result(), grid_run.result()
    assert space.returncode == 0, space.stdout + space.stderr
    assert grid.returncode == 0, grid.stdout + grid.stderr
    return results, space, grid


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


def test_quiet_prints_only_the_summary(studies):
    results, space, grid = studies
    lines = space.stdout.strip().splitlines()
    # The summary alone: its first lines, then the files and the next commands indented under them.
    assert [line.split(":")[0] for line in lines if not line.startswith("  ")] == [
        "best", "test accuracy of the retrained best configuration", f"results in {results / 'space'}/", "next"
    ], space.stdout
    assert "lr=" in space.stdout.split("test accuracy")[0] and "  report.html" in " ".join(lines)
    assert f"  hpsearch report space --results-dir {results}" in lines
    # Not quiet, and not a terminal: one plain line per finished trial, no bar.
    assert grid.stdout.count("] trial_") == 2 and "\r" not in grid.stdout


def test_two_searches_at_once_share_one_sqlite_store(studies):
    """SQLite takes one writer at a time: neither study may lose a run or an epoch to the other."""
    from tests.chaos import recorded_trials

    results, _, _ = studies
    for name in ("space", "grid"):
        table = pd.read_parquet(results / name / "trials.parquet")
        parent, children, count = recorded_trials(results, name)
        assert parent.data.tags["hpsearch.status"] == "completed"
        assert count == len(table) == len(children) and len(table) == {"space": 3, "grid": 2}[name]
        for _, row in table.iterrows():  # every whole epoch Tune recorded, once
            assert children[row["trial"]][1] == list(range(1, int(row["epochs"]) + 1)), (name, row["trial"])


def test_report_files_and_figures(studies):
    from matplotlib import image

    results, _, _ = studies
    folder = results / "space"
    proc = run_module("search.report", str(folder))
    assert proc.returncode == 0, proc.stderr
    page = (folder / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(sources) == sorted(f"{REPORT_DIR}/{name}.png" for name in FIGURES)
    for source in sources:
        png = folder / source
        width, height = png_size(png)
        assert 600 <= width <= 2000 and 250 <= height <= 1400, (png, width, height)
        pixels = image.imread(png)
        assert pixels[..., :3].std() > 0.05, f"{png} is nearly blank"
    # Fixed-size figures come out exactly as drawn (inches x dpi).
    assert png_size(folder / REPORT_DIR / "history.png") == (9 * DPI, 5 * DPI)
    assert png_size(folder / REPORT_DIR / "confusion.png") == (13 * DPI, round(5.8 * DPI))
    assert "trial_" in page and "Top 3 configurations" in page
    assert "The accuracy-cost front (" in page


def test_every_trial_with_a_whole_epoch_has_its_latency(studies):
    """Measured once in each trial's worker after its first whole epoch: in the table, and a
    trial stopped inside its first epoch has none."""
    results, _, _ = studies
    table = load(results / "space").table
    whole = table["epochs"] >= 1
    for column in ("latency_ms_b1", "latency_ms_b256"):
        assert (table.loc[whole, column] > 0).all() and table.loc[~whole, column].isna().all(), table[column]
    assert table["fits"].all()  # no device limits: every trial fits


def test_importances_cover_the_searched_parameters(studies):
    results, _, _ = studies
    study = load(results / "space")
    imp = importances(study)
    _, dists = optuna_study(study)
    assert set(imp) == set(searched(dists)) and "lr" in imp
    assert sum(imp.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in imp.values())


def test_the_report_reads_the_optuna_store_and_replays_only_a_grid(studies):
    results, _, _ = studies
    space, grid = load(results / "space"), load(results / "grid")
    stored = stored_trials(space)
    assert stored is not None and len(stored) == 3  # the TPE study's own store, every trial scored
    study, _ = optuna_study(space)
    assert sorted(t.value for t in study.trials) == sorted(t.user_attrs["best_score"] for t in stored)
    assert stored_trials(grid) is None and len(optuna_study(grid)[0].trials) == 2  # a grid has no TPE: replayed


def test_confusion_matrix_counts_each_test_image_once(studies, data_root):
    from trainables.readers import load_dataset

    results, _, _ = studies
    study = load(results / "space")
    test = load_dataset("fashion_mnist", str(data_root)).sliced(SMOKE_TRAIN, SMOKE_TEST, 0).test
    per_class = np.bincount(test.y, minlength=10)
    assert study.confusion.to_numpy().sum(axis=1).tolist() == per_class.tolist()
    accuracy = study.confusion.to_numpy().trace() / per_class.sum()
    assert accuracy == pytest.approx(study.best.metrics["test_accuracy"])


def test_compare(studies, tmp_path):
    results, _, _ = studies
    proc = run_module("search.compare", str(results / "grid"), str(results / "space"), "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for word in ("trial-epochs", "wall minutes", "test accuracy", "grid", "space"):
        assert word in proc.stdout
    trials = next(line for line in proc.stdout.splitlines() if line.strip().startswith("trials"))
    assert trials.split()[1:] == ["2", "3"]
    assert png_size(tmp_path / "anytime.png") == (9 * DPI, 5 * DPI)
    assert 'src="anytime.png"' in (tmp_path / "compare.html").read_text()
    assert "not a study" in one_line_error(run_cli_here("search.compare", str(results), str(results / "space")))


def test_export_round_trips_into_search_train(studies, tmp_path, data_root):
    results, _, _ = studies
    folder = results / "space"
    best = BestConfig.load(folder / "best.yaml")
    proc = run_module("search.export", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert BestConfig(**yaml.safe_load(proc.stdout)).hyperparameters == best.hyperparameters

    top = tmp_path / "top.json"
    assert run_module("search.export", str(folder), "--top", "3", "--output", str(top)).returncode == 0
    configs = [BestConfig(**body) for body in json.loads(top.read_text())]
    # Trials ASHA stopped inside their first epoch have no epoch count to retrain for: left out.
    table = pd.read_parquet(folder / "trials.parquet")
    retrainable = int((table["best_epoch"] >= 1).sum())
    assert [c.search["rank"] for c in configs] == list(range(1, min(3, retrainable) + 1))
    assert all(c.epochs >= 1 for c in configs)
    scores = [c.metrics["val_accuracy"] for c in configs]
    assert scores == sorted(scores, reverse=True) and configs[0].metrics["test_accuracy"] > 0

    second = tmp_path / "second.json"
    second.write_text(json.dumps(configs[-1].to_dict()))  # a non-best entry wherever a second one exists
    trained = run_module("search.train", str(second), "--smoke", "--epochs", "1", "--cpus", "1",
                         "--results-dir", str(tmp_path / "retrain"), "--data-dir", str(data_root))
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "test accuracy" in trained.stdout


@pytest.mark.parametrize("args, message", [
    (["--top", "0"], "--top must be 1 or more"),
    (["--format", "xml"], "invalid choice"),
    (["--output", "/nonexistent/dir/out.yaml"], "does not exist"),
])
def test_export_bad_arguments(studies, args, message):
    results, _, _ = studies
    assert message in one_line_error(run_cli_here("search.export", str(results / "space"), *args))


def test_bad_results_folder(tmp_path):
    assert "no study.json" in one_line_error(run_cli_here("search.report", str(tmp_path)))
    assert "no such directory" in one_line_error(run_cli_here("search.export", str(tmp_path / "missing")))


def test_history_falls_back_to_tunes_own_logs(studies, tmp_path):
    """A study from before history.csv existed: the same epochs come from tune/*/result.json."""
    import shutil

    results, _, _ = studies
    old = tmp_path / "old"
    shutil.copytree(results / "space", old)
    (old / "history.csv").unlink()
    new_curve, old_curve = load(results / "space").anytime(), load(old).anytime()
    # 3 trials of up to 2 epochs; one stopped at the quarter-epoch rung has no whole epoch
    assert 1 <= len(old_curve) <= 6 and old_curve["epoch"].min() >= 1
    assert old_curve.equals(new_curve)


def test_a_trials_table_from_before_the_config_prefix_still_reads(studies, tmp_path):
    """Folders written when hyperparameter columns were bare (`lr`, not `config/lr`)."""
    import shutil

    results, _, _ = studies
    old = tmp_path / "old"
    shutil.copytree(results / "space", old)
    table = pd.read_parquet(old / "trials.parquet")
    later = ["latency_ms_b1", "latency_ms_b256", "fits", "promotions"]  # columns that came after the prefix
    table = table.drop(columns=later)
    table.columns = [c.removeprefix("config/") for c in table.columns]
    table.to_parquet(old / "trials.parquet", index=False)
    new_study, old_study = load(results / "space"), load(old)
    assert list(old_study.table.columns) == [c for c in new_study.table.columns if c not in later]
    assert [old_study.params(r) for _, r in old_study.table.iterrows()] == \
        [new_study.params(r) for _, r in new_study.table.iterrows()]


def test_a_study_warm_started_from_an_earlier_one_and_an_old_grid(studies, data_root, tmp_path):
    """The second study starts from the first's trials and a GridSearchCV's (issue 14): TPE's store
    holds them before its own, MLflow and best.yaml say so, the report draws all three."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from search.results.optuna_store import Store
    from search.tune.warm import FROM
    from tests.test_warm import MAPPING, old_grid

    results, _, _ = studies
    csv = old_grid(tmp_path)
    (tmp_path / "map.yaml").write_text(MAPPING)
    proc = run_module("search.run", "fashion_space", "--smoke", "--samples", "2", "--max-epochs", "2",
                      "--name", "warm", "--results-dir", str(results), "--data-dir", str(data_root),
                      "--warm-start", "space", str(csv), "--warm-start-map", str(tmp_path / "map.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the grid's `identity` activation is none of the space's: those 4 trials start without it, and the line counts them
    assert ("warm start: TPE starts from space (study, 3 trials); cv_results.csv (grid, 12 trials; values this "
            "space cannot propose, left out: activation in 4 trials)") in " ".join(proc.stdout.split())
    trials = Store.in_study_folder(results / "warm", "warm").load().trials
    earlier = [t for t in trials if FROM in t.user_attrs]
    own = [t for t in trials if FROM not in t.user_attrs and t.state != TrialState.WAITING]
    assert len(earlier) == 15 and len(own) == 2
    assert max(t.number for t in earlier) < min(t.number for t in own)  # known before the first proposal
    best = BestConfig.load(results / "warm" / "best.yaml")
    assert best.search["warm_start"] == {"space": 3, "cv_results.csv": 12}
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    run = client.get_run(json.loads((results / "warm" / "study.json").read_text())["parent_run_id"])
    assert "cv_results.csv" in run.data.tags["hpsearch.warm_start"] and run.data.params["warm_start"] == \
        "space, cv_results.csv"
    page = (results / "warm" / "report.html").read_text()
    assert "space (3 trials); cv_results.csv (12 trials): TPE began with their trials" in page
    from search.results.folder import load
    from search.tune.warm import earlier_curves

    curves = earlier_curves(load(results / "warm").state, 2, "max")
    assert [label.split(" (")[0] for label, _ in curves] == ["earlier study space", "earlier grid cv_results.csv"]
