"""Inputs that ran code, damaged another study, hung, exploded or were silently accepted (issue
20's audit): each is refused with one line and exit status 2 (nothing written or damaged), or
handled as documented. The resumes that need a real killed search are in tests/test_resume_trust.py."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli_here
from tests.test_data import cifar_batch_bytes, write_cifar_batches
from trainables.errors import UserError
from trainables.readers import load_dataset


def one_line_refusal(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


# --- 1. a data folder must not run code ----------------------------------------------------------

class RunsACommand:
    """What a hostile batch file holds: unpickling it calls os.system."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def hostile_cifar_folder(root: Path, marker: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    write_cifar_batches(folder)
    hostile = {b"batch_label": b"training batch 1 of 5", b"labels": [0, 1],
               b"data": RunsACommand(f"touch {marker}"), b"filenames": [b"a.png", b"b.png"]}
    (folder / "data_batch_1").write_bytes(cifar_batch_bytes(hostile))  # otherwise in the published format
    return folder


def test_a_cifar_batch_in_the_published_format_reads_as_plain_unpickling_did(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder, per_batch=30, seed=3)
    ds = load_dataset("cifar10", str(tmp_path))
    expected_x, expected_y = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with (folder / name).open("rb") as f:
            batch = pickle.load(f, encoding="bytes")  # what the reader did before: it trusted the file
        expected_x.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        expected_y.append(np.asarray(batch[b"labels"], dtype=np.int64))
    assert ds.train.x.tobytes() == np.concatenate(expected_x).tobytes()
    assert ds.train.y.tobytes() == np.concatenate(expected_y).tobytes()
    assert ds.train.x.shape == (150, 3, 32, 32) and ds.test.x.shape == (30, 3, 32, 32)


def test_a_batch_resaved_by_python3_numpy_still_reads(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    data = np.random.default_rng(1).integers(0, 256, (20, 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": list(range(10)) * 2}, protocol=5))
    assert load_dataset("cifar10", str(tmp_path)).test.x.tobytes() == data.tobytes()


def test_the_real_cifar_subset_reads_byte_identically(data_root):
    subset = data_root / "cifar10" / "cifar10-subset.npz"
    if not subset.is_file():
        pytest.skip(f"the CIFAR-10 subset is not at {subset}")
    ds = load_dataset("cifar10", str(data_root))
    with np.load(subset) as z:
        assert ds.train.x.tobytes() == np.ascontiguousarray(z["x_train"].transpose(0, 3, 1, 2)).tobytes()
        assert ds.test.x.tobytes() == np.ascontiguousarray(z["x_test"].transpose(0, 3, 1, 2)).tobytes()
        assert np.array_equal(ds.train.y, z["y_train"]) and np.array_equal(ds.test.y, z["y_test"])


def test_a_hostile_cifar_batch_runs_nothing_and_is_named(tmp_path):
    marker = tmp_path / "ran"
    folder = hostile_cifar_folder(tmp_path / "evil", marker)
    with pytest.raises(UserError, match="data_batch_1: not a CIFAR-10 batch file .*posix.system") as info:
        load_dataset("cifar10", str(tmp_path / "evil"))
    assert not marker.exists()
    assert str(folder / "data_batch_1") in str(info.value) and "nothing in it was run" in str(info.value)


def test_search_run_on_a_hostile_cifar_folder_is_one_line_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    hostile_cifar_folder(tmp_path / "evil", marker)
    proc = run_cli_here("search.run", "cifar10_space", "--data-dir", str(tmp_path / "evil"), "--smoke",
                        "--name", "evil", "--results-dir", str(tmp_path / "results"))
    one_line_refusal(proc, "data_batch_1: not a CIFAR-10 batch file")
    assert not marker.exists() and not (tmp_path / "results" / "evil").exists()


def test_a_batch_that_is_not_a_dict_is_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    (folder / "data_batch_2").write_bytes(cifar_batch_bytes([b"data", b"labels"]))
    with pytest.raises(UserError, match="data_batch_2: not a CIFAR-10 batch file .*a list, not a dict"):
        load_dataset("cifar10", str(tmp_path))


# --- 13. a results dir that is a file ------------------------------------------------------------

@pytest.mark.parametrize("inside", [False, True])
def test_a_results_dir_that_is_a_file_says_so(tmp_path, monkeypatch, inside):
    file = tmp_path / "results"
    file.write_text("not a folder")
    monkeypatch.setenv("HPSEARCH_RESULTS_DIR", str(file / "sub" if inside else file))
    proc = run_cli_here("search.run", "fashion_space", "--smoke")
    one_line_refusal(proc, f"{file} is a file" if not inside else f"is inside {file}, which is a file",
                     "HPSEARCH_RESULTS_DIR")
    assert "File exists" not in proc.stderr and file.read_text() == "not a folder"


# --- 12. the dashboard answers only its own loopback name ----------------------------------------

def test_the_dashboard_refuses_requests_for_another_host(tmp_path):
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 reaches the port
    with `Host: evil.example:PORT`; it must not read the study."""
    import requests

    from tests.test_dashboard import NAME, dashboard, make_study
    from tests.test_store import run_trial, searcher_in

    root = tmp_path / "results"
    run_trial(searcher_in(make_study(root), NAME, max_epochs=4), "t1", [1], [0.5])
    with dashboard(root, "--allow-edits") as (_, api, port):
        assert requests.get(f"{api}/studies", timeout=5).ok  # Host: 127.0.0.1:PORT, as a browser sends it
        assert requests.get(f"{api}/studies", headers={"Host": f"localhost:{port}"}, timeout=5).ok
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "", f"127.0.0.1.evil:{port}"):
            refused = requests.get(f"{api}/studies", headers={"Host": host}, timeout=5)
            assert refused.status_code == 403 and "answers only" in refused.json()["reason"], (host, refused.text)
            assert "fashion_space-live" not in refused.text


# --- 10. damaged files read back -----------------------------------------------------------------

def results_folder(root: Path) -> Path:
    """A stopped study's folder as search.report reads it: study.json, its trials table and history."""
    import pandas as pd

    from search.results.request import StudyRequest, StudyState

    request = StudyRequest(space="fashion_space", name="study", results_root=str(root),
                           data={"dataset": "fashion_mnist"}, tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                           samples=2, max_epochs=2)
    request.folder.mkdir(parents=True)
    StudyState(request).save()
    pd.DataFrame({"trial": ["trial_001", "trial_002"], "trial_id": ["a", "b"], "status": ["completed", "stopped_early"],
                  "epochs": [2, 1], "epochs_seen": [2.0, 1.0], "best_epoch": [2, 1], "val_accuracy": [0.8, 0.6],
                  "val_loss": [0.5, 0.9], "config/lr": [0.01, 0.001], "config/batch_size": [32, 64],
                  }).to_csv(request.folder / "trials.csv", index=False)
    pd.DataFrame({"trial": ["trial_001", "trial_001", "trial_002"], "epoch": [1, 2, 1],
                  "val_accuracy": [0.7, 0.8, 0.6], "timestamp": [1.0, 2.0, 3.0]}).to_csv(request.folder / "history.csv",
                                                                                        index=False)
    return request.folder


@pytest.mark.parametrize("damage", ["empty history", "latin-1 confusion matrix", "history of another table"])
def test_search_report_on_damaged_side_files_notes_them_and_writes_the_report(tmp_path, damage):
    folder = results_folder(tmp_path)
    if damage == "empty history":
        (folder / "history.csv").write_bytes(b"")
    elif damage == "history of another table":
        (folder / "history.csv").write_text("a,b\n1,2\n")
    else:
        (folder / "confusion_matrix.csv").write_bytes("true\\predicted,caf\xe9,th\xe9\ncaf\xe9,3,1\n".encode("latin-1"))
    proc = run_cli_here("search.report", str(folder))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    damaged = "confusion_matrix.csv" if "confusion" in damage else "history.csv"
    assert f"note: {folder / damaged} is " in proc.stderr, proc.stderr
    assert (folder / "report.html").is_file()


@pytest.mark.parametrize("field,value,message", [
    ("data", "x", "data must be a mapping"),
    ("seed", -5, "seed must be a whole number from 0 to"),
    ("samples", "3", "samples must be a positive whole number"),
    ("smoke", "yes", "smoke must be true or false"),
    ("time_budget", float("inf"), "time_budget must be a positive number"),
    ("warm_start", "earlier-study", "warm_start must be a list of paths"),
    ("optuna_storage", 5, "optuna_storage must be text"),
    ("phase", "finished", "phase must be search, final, done"),
    ("data", {"dataset": "fashion_mnist", "data_dir": 5}, "data_dir must be text"),
    ("data", {"dataset": "image_folder", "data_dir": "d", "image_size": "28,28"}, "image_size must be two whole"),
    ("data", {"dataset": "fashion_mnist", "weights": ["w"]}, "weights and arch must be text"),
])
def test_a_study_json_of_the_wrong_types_is_one_line_on_resume(tmp_path, field, value, message):
    import json

    folder = results_folder(tmp_path)
    state = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**state, field: value}))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    (tmp_path / "empty").mkdir()
    proc = run_cli_here("search.run", "fashion_space", "--name", "study", "--resume", "--results-dir", str(tmp_path),
                        "--data-dir", str(tmp_path / "empty"))
    one_line_refusal(proc, message)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before
    if field != "data":  # the readers of a study folder refuse it the same way
        one_line_refusal(run_cli_here("search.report", str(folder)), message)


# --- 4. image bombs and sizes --------------------------------------------------------------------

def bomb(path: Path, side: int) -> Path:
    """A PNG of a few kilobytes that decodes to side x side pixels (one bit each, all black)."""
    from PIL import Image

    Image.new("1", (side, side)).save(path, optimize=True)
    assert path.stat().st_size < 200_000
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    return {side: bomb(folder / f"bomb-{side}.png", side) for side in (20000, 12000)}


@pytest.mark.parametrize("side", [20000, 12000])
def test_an_image_bomb_is_refused_by_name_before_it_is_decoded(bombs, side):
    import resource

    from trainables.images import ImageFormat, prepare

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UserError, match=f"image {bombs[side]} is larger than hpsearch decodes.*at most 40 mega"):
        prepare(bombs[side], ImageFormat((28, 28), 1))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing decoded


def classes_with(root: Path, extra: Path | None = None) -> Path:
    from tests.test_image_folder import make_folder

    make_folder(root, n=4, classes=("circle", "square"), modes=("L",))
    if extra is not None:
        (root / "square" / extra.name).write_bytes(extra.read_bytes())
    return root


@pytest.mark.parametrize("options", [("--image-size", "28,28", "--channels", "1"), ()], ids=["given", "default"])
def test_search_run_on_a_folder_with_a_bomb_is_one_line(bombs, tmp_path, monkeypatch, options):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = classes_with(tmp_path / "images", bombs[20000])
    proc = run_cli_here("search.run", "fashion_space", "--data-dir", str(folder), *options, "--smoke",
                        "--name", "bomb", "--results-dir", str(tmp_path / "results"))
    one_line_refusal(proc, f"image {folder / 'square' / 'bomb-20000.png'} is larger than hpsearch decodes")
    assert not (tmp_path / "results" / "bomb").exists()


def test_search_predict_refuses_a_bomb_in_one_line(bombs, tmp_path):
    from search.study.final import FinalSpec, retrain, save_model
    from tests.test_final import CNN, brightness_images
    from trainables.datasets import Dataset, DatasetInfo
    from trainables.model import NetConfig

    dataset = Dataset(DatasetInfo("toy", "", ("a", "b", "c", "d"), counts=(64, 16)), brightness_images(64, 0),
                      brightness_images(16, 1), "toy")
    spec = FinalSpec(NetConfig.from_flat(CNN), epochs=1, seed=0, threads=1, precision="fp32")
    save_model(retrain(spec, dataset, on_ray=False), spec, dataset, "toy_space", tmp_path)
    one_line_refusal(run_cli_here("search.predict", str(tmp_path / "model.pt"), str(bombs[12000])),
                     f"image {bombs[12000]} is larger than hpsearch decodes")


def test_an_image_size_beyond_the_bound_is_one_line_before_anything_is_decoded(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = classes_with(tmp_path / "images")
    proc = run_cli_here("search.run", "fashion_space", "--data-dir", str(folder), "--image-size", "100000,100000",
                        "--smoke", "--name", "huge", "--results-dir", str(tmp_path / "results"))
    one_line_refusal(proc, "image size 100000,100000 is more than 1024 pixels a side", "--image-size")
    assert not (tmp_path / "results" / "huge").exists()


# --- 5. links in image folders -------------------------------------------------------------------

def linked_folder(tmp_path: Path, loops: int = 1) -> Path:
    """Two classes of 4 images, with links: a file and a class folder outside the data folder,
    `loops` links back up (`circle/loop -> ..`), and a file linked from inside the folder."""
    from tests.test_image_folder import make_folder

    root = make_folder(tmp_path / "images", n=4, classes=("circle", "square"), modes=("L",))
    make_folder(tmp_path / "elsewhere", n=2, classes=("secret",), modes=("L",))
    (root / "circle" / "outside.png").symlink_to(tmp_path / "elsewhere" / "secret" / "00.png")
    (root / "linked_class").symlink_to(tmp_path / "elsewhere" / "secret")
    for i in range(loops):
        (root / ("circle", "square")[i % 2] / f"loop{i}").symlink_to("..")
    (root / "square" / "inside.png").symlink_to(root / "circle" / "03.png")
    return root


def test_links_out_of_an_image_folder_or_to_folders_are_not_followed_and_are_named(tmp_path, capsys):
    from trainables.folders import scan

    root = linked_folder(tmp_path)
    layout = scan(root)
    assert layout.classes == ("circle", "square")
    files = [(c, f"{c}/{p.name}") for c in ("circle", "square") for p in (root / c).iterdir() if not p.is_symlink()]
    assert len(files) == 8
    assert sorted(zip(layout.train.labels, layout.train.paths)) == sorted(files + [("square", "square/inside.png")])
    note = capsys.readouterr().err
    assert "3 link(s) not followed" in note
    assert all(name in note for name in ("circle/outside.png", "circle/loop0", "linked_class")), note


def test_looping_links_cannot_make_the_scan_explode(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    root = linked_folder(tmp_path, loops=2)
    # A library logs its notes; a program shows them (the CLIs with search.cli.show_notes)
    code = ("import logging; logging.basicConfig(); from trainables.folders import scan; "
            f"print(len(scan({str(root)!r}).train.paths))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "9", proc.stderr
    assert "4 link(s) not followed" in proc.stderr and "square/loop1" in proc.stderr, proc.stderr


def test_a_linked_train_folder_is_one_line(tmp_path):
    from tests.test_image_folder import make_folder
    from trainables.folders import scan

    make_folder(tmp_path / "real" / "train", n=3, classes=("circle", "square"), modes=("L",))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train").symlink_to(tmp_path / "real" / "train")
    with pytest.raises(UserError, match="train is a link .* replace the link with the folder itself"):
        scan(tmp_path / "data")


# --- 6. unbounded tables -------------------------------------------------------------------------

def table_with_ids(rows: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = np.arange(rows) % 3
    return pd.DataFrame({"id": [f"customer-{seed}-{i:06d}" for i in range(rows)],
                         "size": 100.0 + 50.0 * y + rng.normal(0, 5, rows),
                         "colour": np.where(y == 2, "red", rng.choice(["blue", "green"], rows)),
                         "kind": np.array(["small", "mid", "large"])[y]})


def test_an_id_column_is_left_out_with_a_note_not_one_hot_encoded(tmp_path, capsys):
    from trainables.tables import load_tabular_csv

    table_with_ids(3000).to_csv(tmp_path / "t.csv", index=False)
    dataset = load_tabular_csv(str(tmp_path / "t.csv"), None, "kind")
    assert dataset.encoding.names == ("size", "colour")
    assert dataset.train.x.shape[1:] == (4, 1, 1)  # size, colour=blue/green/red
    assert "text column(s) 'id' (2,400 values) have more than 100 distinct values" in capsys.readouterr().err


def test_a_table_of_identifiers_only_is_one_line(tmp_path):
    table_with_ids(500)[["id", "kind"]].to_csv(tmp_path / "t.csv", index=False)
    proc = run_cli_here("search.run", "tabular_csv_space", "--data-file", str(tmp_path / "t.csv"), "--target", "kind",
                        "--smoke", "--name", "ids", "--results-dir", str(tmp_path / "results"))
    one_line_refusal(proc, "no feature columns are left: 'id' (40", "values) have more than 100 distinct values")
    assert not (tmp_path / "results" / "ids").exists()


def test_text_in_a_number_column_at_predict_time_is_said(tmp_path):
    from search.study.final import FinalSpec, retrain, save_model
    from tests.test_final import MLP
    from trainables.model import NetConfig
    from trainables.tables import load_tabular_csv

    table_with_ids(300).drop(columns=["id"]).to_csv(tmp_path / "train.csv", index=False)
    dataset = load_tabular_csv(str(tmp_path / "train.csv"), None, "kind")
    spec = FinalSpec(NetConfig.from_flat(MLP), epochs=2, seed=0, threads=1, precision="fp32")
    save_model(retrain(spec, dataset, on_ray=False), spec, dataset, "toy_space", tmp_path)
    new = table_with_ids(6, seed=1).drop(columns=["id", "kind"])
    new["size"] = new["size"].astype(object)
    new.loc[[1, 4], "size"] = ["unknown", "12,5"]
    new.to_csv(tmp_path / "new.csv", index=False)
    proc = run_cli_here("search.predict", str(tmp_path), str(tmp_path / "new.csv"))
    assert proc.returncode == 0, proc.stderr
    assert "note: column 'size': 2 text value(s) (e.g. 'unknown') in a number column treated as missing" in proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 7  # the header and a prediction for every row


# --- 7. warm-start mapping and grid CSV ----------------------------------------------------------

def grid_csv(path: Path, **columns) -> Path:
    """A GridSearchCV cv_results_ table: 4 points of learning_rate_init and batch_size (and
    `columns` replacing or adding any)."""
    import pandas as pd

    table = {"param_learning_rate_init": [0.001, 0.01, 0.001, 0.01], "param_batch_size": [32, 32, 64, 64],
             "split0_test_score": [0.80, 0.85, 0.82, 0.84], "mean_test_score": [0.80, 0.85, 0.82, 0.84],
             **columns}
    pd.DataFrame(table).to_csv(path, index=False)
    return path


def warm_run(tmp_path: Path, *args: str, space: str = "fashion_space"):
    """search.run with a data folder that does not exist: a refusal that names the warm start came
    before the data was looked for (and so before Ray could start)."""
    return run_cli_here("search.run", space, *args, "--name", "warm", "--results-dir", str(tmp_path / "results"),
                        "--data-dir", str(tmp_path / "no-data-here"))


@pytest.mark.parametrize("mapping,message", [
    ("params: {learning_rate_init: lr}\nepochs: [1, 2]\n", "epochs must be the epochs each grid point trained"),
    ("params: {learning_rate_init: lr}\nepochs: .inf\n", "epochs must be the epochs each grid point trained"),
    ("params: {learning_rate_init: lr}\nepochs: -3\n", "not -3"),
    ("params: {learning_rate_init: {name: lr, values: 5}}\n", "the values of learning_rate_init must be a mapping"),
    ("params: {learning_rate_init: lr}\nscore: [mean_test_score]\n", "score must name the grid's score column"),
    ("params: {learning_rate_init: [lr]}\n", "learning_rate_init maps to ['lr'], which is not a parameter"),
    ("# r\xe9glages\nparams: {learning_rate_init: lr}\n", "not UTF-8 text"),
    ("params: {learning_rate_init: lr}\nepochs: batch\n", "epochs names 'batch', which is not a parameter"),
])
def test_a_bad_mapping_file_is_one_line_before_the_data_loads(tmp_path, mapping, message):
    csv = grid_csv(tmp_path / "grid.csv")
    (tmp_path / "map.yaml").write_bytes(mapping.encode("latin-1"))
    one_line_refusal(warm_run(tmp_path, "--warm-start", str(csv), "--warm-start-map", str(tmp_path / "map.yaml")),
                     message)
    assert not (tmp_path / "results" / "warm").exists()


@pytest.mark.parametrize("scores,message", [
    ([0.8, float("inf"), 0.8, 0.8], "mean_test_score of row 1 is inf, not an accuracy between 0 and 1"),
    ([0.8, 0.8, 1e308, 0.8], "mean_test_score of row 2 is 1e+308, not an accuracy"),
    ([-1e308, 0.8, 0.8, 0.8], "mean_test_score of row 0 is -1e+308, not an accuracy"),
    ([0.8, 0.8, 0.8, 57.3], "mean_test_score of row 3 is 57.3, not an accuracy"),
    ([0.8, "good", 0.8, 0.8], "mean_test_score of row 1 is 'good'"),
])
def test_impossible_grid_scores_are_one_line_before_the_data_loads(tmp_path, scores, message):
    csv = grid_csv(tmp_path / "grid.csv", mean_test_score=scores)
    one_line_refusal(warm_run(tmp_path, "--warm-start", str(csv)), message)


@pytest.mark.parametrize("values", [["fast", "slow", "fast", "slow"], [1e300, 1e300, 1e299, 1e299]])
def test_mapped_values_the_space_cannot_take_are_one_line(tmp_path, values):
    csv = grid_csv(tmp_path / "grid.csv", param_learning_rate_init=values)
    (tmp_path / "map.yaml").write_text("params: {learning_rate_init: lr}\n")
    one_line_refusal(warm_run(tmp_path, "--warm-start", str(csv), "--warm-start-map", str(tmp_path / "map.yaml")),
                     "maps learning_rate_init to lr, but none of its values", "is one lr can take (0.0001 to 0.1")


def test_grid_epochs_from_a_column_must_be_positive(tmp_path):
    csv = grid_csv(tmp_path / "grid.csv", param_epochs=[5, -3, 5, 5])
    (tmp_path / "map.yaml").write_text("params: {learning_rate_init: lr}\nepochs: epochs\n")
    one_line_refusal(warm_run(tmp_path, "--warm-start", str(csv), "--warm-start-map", str(tmp_path / "map.yaml")),
                     "row 1 says -3", "epochs must be positive numbers")


def test_names_the_space_shares_are_taken_as_they_are_with_a_mapping_too_and_lost_values_are_counted(tmp_path):
    from search.tune.warm import load_sources
    from spaces.registry import get_study
    from spaces.study import SpaceContext

    space = get_study("fashion_space")
    csv = grid_csv(tmp_path / "grid.csv", param_lr=[0.001, 0.01, 1e300, 0.01], param_alpha=[1e-4] * 4)
    (tmp_path / "map.yaml").write_text("params: {alpha: weight_decay}\n")
    source, = load_sources([csv], space.define, SpaceContext((1, 28, 28), 10, 6_000_000), "val_accuracy", "max", 10,
                           tmp_path / "map.yaml")
    assert [sorted(t.params) for t in source.trials] == [["batch_size", "lr", "weight_decay"]] * 2 + \
        [["batch_size", "weight_decay"]] + [["batch_size", "lr", "weight_decay"]]
    assert source.dropped == ("learning_rate_init",)
    assert "values this space cannot propose, left out: lr in 1 trial" in source.describe()


def test_a_warm_start_from_a_study_of_other_data_is_one_line(tmp_path):
    fashion = results_folder(tmp_path / "results")  # a fashion_space study on Fashion-MNIST
    one_line_refusal(warm_run(tmp_path, "--warm-start", str(fashion), space="mnist_space"),
                     "that study's trials were scored on fashion_mnist, this one runs on mnist")
    one_line_refusal(warm_run(tmp_path, "--warm-start", str(fashion), "--dataset", "mnist"),
                     "scored on fashion_mnist, this one runs on mnist")


# --- 8. two studies started at once with one --name ----------------------------------------------

def test_of_two_studies_started_at_once_with_one_name_one_is_refused_at_once(tmp_path):
    import time

    from tests.chaos import kill_tree, start_search

    table_with_ids(400).drop(columns=["id"]).to_csv(tmp_path / "t.csv", index=False)
    args = ("tabular_csv_space", "--data-file", str(tmp_path / "t.csv"), "--target", "kind", "--smoke",
            "--name", "same", "--results-dir", str(tmp_path / "results"))
    procs = [start_search(*args), start_search(*args)]
    try:
        started = time.monotonic()
        while all(p.poll() is None for p in procs):
            assert time.monotonic() - started < 240, "neither study ended"
            time.sleep(0.2)
        loser = next(p for p in procs if p.poll() is not None)
        out, err = loser.communicate()
        assert loser.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, out + err
        assert "pass another --name" in err and str(tmp_path / "results" / "same") in err
        winner = next(p for p in procs if p is not loser)
        assert winner.poll() is None, winner.communicate()
        assert (tmp_path / "results" / "same").is_dir()
    finally:
        for p in procs:
            if p.poll() is None:
                kill_tree(p)


def test_a_refused_new_study_gives_its_claimed_folder_back(tmp_path):
    proc = run_cli_here("search.run", "tabular_csv_space", "--data-file", str(tmp_path / "missing.csv"),
                        "--target", "kind", "--name", "gone", "--results-dir", str(tmp_path / "results"))
    one_line_refusal(proc, "missing.csv not found")
    assert list((tmp_path / "results").iterdir()) == []


# --- 9. a full disk, a read-only one -------------------------------------------------------------

def namespaces() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt"],
                          capture_output=True, timeout=30).returncode == 0


needs_small_disks = pytest.mark.skipif(not namespaces(), reason="a real full (or read-only) disk needs `unshare -rm` "
                                       "to mount a small tmpfs, which this machine does not allow")


def on_small_disk(disk: Path, setup: str, command: str, size: str = "2m") -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `command` run (in the repository) where `disk` is a fresh
    tmpfs of `size`, in a mount namespace of its own, after `setup` (sh) prepared it."""
    import subprocess

    from tests.conftest import REPO

    disk.mkdir(exist_ok=True)
    script = f"set -e; mount -t tmpfs -o size={size} none {disk}; {setup}; set +e; {command}"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


FILL = "dd if=/dev/zero of={disk}/filler bs=4k 2>/dev/null || true"  # every block taken: the next write fails
LEFT = "echo; echo LEFT; find {disk}/study -name '.*' -type f"  # temp files left behind, if any


@needs_small_disks
@pytest.mark.parametrize("full", ["full", "read-only"])
def test_search_report_on_a_full_or_read_only_disk_is_one_line_and_leaves_no_temp_file(tmp_path, full):
    import sys

    study = results_folder(tmp_path / "results")
    disk = tmp_path / "disk"
    fill = FILL.format(disk=disk) if full == "full" else f"mount -o remount,ro {disk}"
    code, out, err = on_small_disk(disk, f"cp -r {study} {disk}/study; {fill}",
                                   f"{sys.executable} -m search.report {disk}/study; echo rc=$?; "
                                   + LEFT.format(disk=disk))
    assert "rc=2" in out and "Traceback" not in err and len(err.strip().splitlines()) == 1, out + err
    why = "the disk is full" if full == "full" else "the file system is read-only"
    assert f"error: cannot write {disk}/study/report" in err and why in err and "MiB free on the disk holding" in err
    assert "run the command again" in err
    assert out.split("LEFT", 1)[1].strip() == "", out  # no temp file left


FINAL_ON_A_FULL_DISK = """
import json, sys
from pathlib import Path
from search.results.disk import study_writes
from search.study.final import FinalSpec, retrain, save_model
from search.results.request import StudyRequest, StudyState
from search.results.trials_table import write_table
from tests.test_final import CNN, brightness_images
from trainables.datasets import Dataset, DatasetInfo
from trainables.errors import UserError
from trainables.model import NetConfig
import pandas as pd
disk, phase = Path(sys.argv[1]), sys.argv[2]
request = StudyRequest(space="fashion_space", name="study", results_root=str(disk), data={"dataset": "fashion_mnist"},
                       tracking_uri="sqlite:///x.db")
request.folder.mkdir()
state = StudyState(request, phase=phase)
state.save()
dataset = Dataset(DatasetInfo("toy", "", ("a", "b", "c", "d"), counts=(64, 16)), brightness_images(64, 0),
                  brightness_images(16, 1), "toy")
spec = FinalSpec(NetConfig.from_flat(CNN), epochs=1, seed=0, threads=1, precision="fp32")
final = retrain(spec, dataset, on_ray=False)
filler = open(disk / "filler", "wb", buffering=0)  # every block taken
try:
    while True:
        filler.write(bytes(1 << 16))
except OSError:
    filler.close()
try:
    with study_writes(state):
        if phase == "final":
            save_model(final, spec, dataset, "toy_space", request.folder)
        else:
            write_table(pd.DataFrame({"trial": ["trial_001"] * 20000, "x": range(20000)}), request.folder)
except UserError as e:
    print(json.dumps({"error": str(e), "files": sorted(p.name for p in request.folder.iterdir())}))
"""


@needs_small_disks
@pytest.mark.parametrize("phase,redo", [("final", "trains and tests the final model again"),
                                        ("search", "continues the search from its last saved state")])
def test_a_study_on_a_full_disk_says_what_resume_will_redo_and_leaves_no_temp_file(tmp_path, phase, redo):
    import json
    import sys

    disk = tmp_path / "disk"
    (tmp_path / "final.py").write_text(FINAL_ON_A_FULL_DISK)
    from tests.conftest import REPO

    code, out, err = on_small_disk(disk, "true", f"PYTHONPATH={REPO} {sys.executable} {tmp_path / 'final.py'} {disk} "
                                   f"{phase}")
    assert out.strip(), err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["files"] == ["study.json"], result  # no .model.pt.tmp, no half a table
    message = result["error"]
    assert "cannot write" in message and "the disk is full" in message and "MiB free on the disk holding" in message
    assert f"hpsearch run fashion_space --name study --resume --results-dir {disk}" in message
    assert redo in message


# --- 11. the tracking password stays in the driver -----------------------------------------------

RAY_WITH_A_PASSWORD = """
import json, os
import psutil, ray
from search.util.credentials import adopt_credentials
from search.tune.cluster import start_ray
adopt_credentials("http://alice:hunter2-secret@127.0.0.1:1")  # what --tracking-uri does
start_ray(None, 1, 0)
@ray.remote
def worker_env():
    return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_TRACKING")}, os.getpid()
seen, pid = ray.get(worker_env.remote())
found = {}
for p in psutil.Process().children(recursive=True) + [psutil.Process(pid)]:
    try:
        found[f"{p.pid} {p.name()}"] = any("hunter2-secret" in v for v in p.environ().values())
    except psutil.Error:
        pass
print(json.dumps({"worker": seen, "processes": found,
                  "driver": os.environ.get("MLFLOW_TRACKING_PASSWORD")}))
ray.shutdown()
"""


def test_the_tracking_password_is_not_in_the_environment_of_rays_processes(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    proc = subprocess.run([sys.executable, "-c", RAY_WITH_A_PASSWORD], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["driver"] == "hunter2-secret"  # the driver alone talks to MLflow
    assert seen["worker"] == {}
    names = " ".join(seen["processes"])
    assert "raylet" in names and "gcs_server" in names, seen
    assert not any(seen["processes"].values()), seen


# --- 2. a resumed study takes nothing from another folder ----------------------------------------

def db_files(folder: Path) -> list[Path]:
    return [folder / name for name in ("optuna.db", "optuna.db-wal", "optuna.db-shm") if (folder / name).exists()]


def test_a_restored_searcher_reconnects_to_its_own_folders_store_never_the_pickled_one(tmp_path):
    """A copied study folder: Tune's saved searcher names the original's optuna.db. Without a
    store of its own the copy is refused (not given the original's, not given a new one); with
    its own, its trials land there and the original's store is left as it was."""
    import shutil

    from search.results.optuna_store import Store
    from search.results.resuming import RestoreFailed
    from search.tune.searcher import resuming_in  # where search.tune.tuner has always called it from
    from tests.test_store import run_trial, searcher_in

    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    searcher = searcher_in(original)
    as_built = pickle.dumps(searcher)  # tuner.pkl
    run_trial(searcher, "a", [1, 2, 3, 4], [0.6, 0.7, 0.8, 0.82])
    assert searcher.suggest("b") is not None
    searcher.save(str(original / "searcher.pkl"))
    shutil.copytree(original, copy)
    before = [(t.number, t.state) for t in Store.in_study_folder(original, "s").load(read_only=True).trials]
    for f in db_files(copy):
        f.unlink()
    try:
        resuming_in(copy)
        with pytest.raises(RestoreFailed, match=f"its Optuna store {copy / 'optuna.db'} is missing"):
            pickle.loads(as_built).restore(str(copy / "searcher.pkl"))
        assert db_files(copy) == []  # no new, empty store either
        for f in db_files(original):
            shutil.copy(f, copy / f.name)  # the copy's own store back
        restored = pickle.loads(as_built)
        restored.restore(str(copy / "searcher.pkl"))
    finally:
        resuming_in(None)
    restored.on_trial_complete("b", {"val_accuracy": 0.75, "epochs_seen": 4})
    assert restored.suggest("c") is not None
    assert [(t.number, t.state) for t in Store.in_study_folder(original, "s").load(read_only=True).trials] == before
    assert len(Store.in_study_folder(copy, "s").load(read_only=True).trials) == 3


def test_tune_files_and_the_study_folder_pickled_with_tune_are_the_resumed_folders(tmp_path):
    """ASHA's rungs file and the MLflow logger's study folder, pickled in tuner.pkl with the
    original's paths, are the copy's own once unpickled on a resume (and only then)."""
    from search.results.resuming import resuming_in
    from search.tracking.trial_logger import TrialLogger
    from tests.test_asha import scheduler

    original, copy = tmp_path / "original", tmp_path / "copy"
    asha = pickle.dumps(scheduler(original))
    logger = pickle.dumps(TrialLogger("sqlite:///x.db", "e", "run", 3, 4, "val_accuracy", "max",
                                      study_folder=str(original)))
    assert pickle.loads(asha).state_file == str(original / "tune" / "asha-rungs.json")
    try:
        resuming_in(copy)
        assert pickle.loads(asha).state_file == str(copy / "tune" / "asha-rungs.json")
        assert pickle.loads(logger).study_folder == str(copy)
    finally:
        resuming_in(None)
    assert pickle.loads(logger).study_folder == str(original)
