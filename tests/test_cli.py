"""Bad input: one clear line on stderr, exit status 2, no traceback, nothing saved damaged."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli_here, run_module
from tests.test_data import fake_dataset


def assert_user_error(proc, *fragments):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def saved_results(root):
    """A results folder as an earlier study left it; returns its snapshot."""
    study = root / "earlier"
    study.mkdir(parents=True)
    (study / "best.yaml").write_text("space: fashion_space\n")
    (study / "trials.csv").write_text("trial,val_accuracy\ntrial_001,0.9\n")
    (root / "mlflow.db").write_bytes(b"not really a database, but precious")
    return snapshot(root)


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fake_dataset(root / "FashionMNIST" / "raw")
    return root


@pytest.mark.parametrize("args,fragments", [
    (["fashion_spcae"], ["unknown study 'fashion_spcae'", "fashion_space", "fashion_grid"]),
    ([], ["name a study"]),
    (["fashion_space", "--samples", "0"], ["--samples must be positive, got 0"]),
    (["fashion_space", "--max-epochs", "-1"], ["--max-epochs must be positive"]),
    (["fashion_space", "--time-budget", "nan"], ["--time-budget must be a finite number, got nan"]),
    (["fashion_space", "--time-budget", "inf"], ["--time-budget must be a finite number, got inf"]),
    (["fashion_space", "--precision", "fp16"], ["--precision", "fp16"]),
    (["fashion_space", "--sampels", "3"], ["unrecognized arguments: --sampels"]),
    (["fashion_space", "--samples", "three"], ["invalid int value: 'three'"]),
    (["fashion_space", "--gpus", "99"], ["--gpus 99 but this machine has"]),
    (["fashion_space", "--cpus", "4096"], ["--cpus 4096 but this machine has"]),
    (["fashion_space", "--data-dir", "/nonexistent/hpsearch-data"], ["does not exist; pass --data-dir"]),
    (["fashion_space", "--resume"], ["--resume needs the --name"]),
    (["fashion_space", "--register-model", " "], ["--register-model needs a model name"]),
    (["fashion_space", "--resume", "--name", "never-ran"], ["no study 'never-ran'"]),
    (["fashion_space", "--name", "earlier"], ["already exist", "--resume"]),
])
def test_search_run_bad_input(tmp_path, args, fragments):
    results = tmp_path / "results"
    earlier = saved_results(results)
    proc = run_cli_here("search.run", *args, "--results-dir", str(results))
    assert_user_error(proc, *fragments)
    assert snapshot(results) == earlier  # nothing already saved was touched


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """CSV and weights files as users bring them, some of them wrong."""
    import numpy as np
    import pandas as pd
    import torch
    import torchvision

    root = tmp_path_factory.mktemp("files")
    pixels = pd.DataFrame(np.random.default_rng(0).integers(0, 256, (40, 784)), columns=[f"p{i}" for i in range(784)])
    pixels.insert(0, "label", np.arange(40) % 4)
    pixels.to_csv(root / "letters.csv", index=False)
    pd.DataFrame({"age": [50, 60, 70, 40], "chol": [200, 250, 210, 190], "sick": [0, 1, 1, 0]}).to_csv(
        root / "heart.csv", index=False)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), root / "resnet18.pth")
    return root


@pytest.mark.parametrize(
    "args,fragments",
    [
        (
            ["tabular_csv_space", "--data-file", "{f}/heart.csv", "--target", "Outcome"],
            ["no target column 'Outcome'", "age, chol, sick"],
        ),
        (["tabular_csv_space", "--data-file", "{f}/heart.csv"], ["needs the column to predict; pass --target"]),
        (
            ["pixels_csv_space", "--data-file", "{f}/letters.csv", "--image-shape", "3,28,28"],
            ["image shape 3,28,28 has 2352 pixels", "784 pixel columns", "pass --image-shape"],
        ),
        (["pixels_csv_space", "--data-file", "{f}/letters.csv", "--image-shape", "28x28"], ["C,H,W"]),
        (["pixels_csv_space"], ["needs a CSV file", "pass --data-file"]),
        (["transfer_space", "--data-file", "{f}/letters.csv"], ["needs --weights"]),
        (
            [
                "transfer_space",
                "--data-file",
                "{f}/letters.csv",
                "--weights",
                "{f}/resnet18.pth",
                "--arch",
                "mobilenet_v3_small",
            ],
            ["does not fit the mobilenet_v3_small architecture"],
        ),
        (
            ["transfer_space", "--data-file", "{f}/letters.csv", "--weights", "{f}/letters.csv"],
            ["not a PyTorch weights file"],
        ),
        (["mnist_space", "--weights", "{f}/resnet18.pth"], ["--weights is for transfer studies"]),
    ],
)
def test_bad_data_arguments(tmp_path, user_files, args, fragments):
    results = tmp_path / "results"
    earlier = saved_results(results)
    proc = run_cli_here("search.run", *[a.format(f=user_files) for a in args], "--results-dir", str(results))
    assert_user_error(proc, *fragments)
    assert snapshot(results) == earlier


def test_results_dir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_module("search.run", "fashion_space", "--results-dir", str(blocker / "results"))
    assert_user_error(proc, f"is inside {blocker}, which is a file", "--results-dir")


def test_existing_study_name_is_refused_and_left_intact(tmp_path, fake_root):
    study = tmp_path / "results" / "mine"
    study.mkdir(parents=True)
    (study / "best.yaml").write_text("precious: true\n")
    proc = run_module("search.run", "fashion_space", "--name", "mine", "--results-dir", str(tmp_path / "results"),
                      "--data-dir", str(fake_root))
    assert_user_error(proc, "already exist", "--name")
    assert (study / "best.yaml").read_text() == "precious: true\n"
    assert sorted(p.name for p in study.iterdir()) == ["best.yaml"]


@pytest.mark.parametrize("address,fragment", [("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"),
                                              ("nowhere", "is not HOST:PORT or 'auto'")])
def test_unreachable_ray_address(tmp_path, fake_root, address, fragment):
    results = tmp_path / "results"
    earlier = saved_results(results)
    proc = run_module("search.run", "fashion_space", "--smoke", "--address", address, "--data-dir", str(fake_root),
                      "--results-dir", str(results), timeout=120)
    assert_user_error(proc, fragment)
    assert snapshot(results) == earlier


def test_unreachable_tracking_server(tmp_path, fake_root):
    proc = run_module("search.run", "fashion_space", "--smoke", "--data-dir", str(fake_root),
                      "--results-dir", str(tmp_path), "--tracking-uri", "http://127.0.0.1:9")
    assert_user_error(proc, "MLflow tracking server http://127.0.0.1:9 is not reachable")


@pytest.mark.parametrize("text,fragments", [
    ("space: [oops", ["not valid YAML"]),
    ("space: fashion_space\n", ["missing key(s)"]),
])
def test_search_train_bad_yaml(tmp_path, text, fragments):
    path = tmp_path / "best.yaml"
    path.write_text(text)
    proc = run_cli_here("search.train", str(path), "--results-dir", str(tmp_path / "results"))
    assert_user_error(proc, *fragments)
    assert path.read_text() == text


def test_list_studies():
    proc = run_module("search.run", "--list")
    assert proc.returncode == 0
    table, legend = proc.stdout.split("\n\n")
    rows = {line.split()[0]: line for line in table.splitlines()}
    from spaces.registry import list_studies

    assert list(rows) == list_studies() and {"mnist_space", "cifar10_space", "transfer_space"} <= set(rows)
    # Which studies take a folder of the user's own images: every image study, not the tabular one.
    assert " folders " in rows["fashion_space"] and " folders " in rows["transfer_space"]
    assert " folders " not in rows["tabular_csv_space"] and "--data-dir DIR" in legend


def test_console_script_reports_user_errors_the_same_way():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "hpsearch"
    if not script.exists():
        pytest.skip("hpsearch is not installed as a console script in this environment")
    proc = subprocess.run([str(script), "fashion_spcae"], capture_output=True, text=True, timeout=120)
    assert_user_error(proc, "unknown study 'fashion_spcae'")


@pytest.mark.parametrize("args,fragment", [(["--epochs", "0"], "--epochs must be positive"),
                                           (["--gpus", "99"], "--gpus 99 but this machine has"),
                                           (["--cpus", "4096"], "--cpus 4096 but this machine has")])
def test_search_train_bad_options(tmp_path, args, fragment):
    from search.results.best_config import BestConfig
    from spaces.fashion_space import TEXTBOOK_CNN

    path = tmp_path / "best.yaml"
    BestConfig(space="fashion_space", dataset="fashion_mnist", hyperparameters=TEXTBOOK_CNN, epochs=2, seed=0).save(
        path
    )
    proc = run_cli_here("search.train", str(path), *args, "--results-dir", str(tmp_path / "results"))
    assert_user_error(proc, fragment)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
