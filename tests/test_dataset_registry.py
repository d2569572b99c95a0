"""The dataset registry (trainables/dataset_registry.py) is the one place a dataset is declared:
the CLI's help, the "unknown dataset" error and the table in docs/data.md come from it; the
recipe in docs/data.md (*Adding a dataset*) works as written; a dataset registered in a test is
read through the same entry point as the service's (`load_data(DataSpec(...))`); and every
registered dataset's files in ../shared/datasets have the shape and classes its entry says."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import REPO
from trainables.data import DataSpec, load_data
from trainables.dataset_registry import (
    OPTIONS,
    REGISTERED,
    DatasetEntry,
    dataset_entry,
    dataset_names,
    holds_dataset,
    markdown_table,
    register_dataset,
    unregister_dataset,
)
from trainables.datasets import Dataset, DatasetInfo, Split
from trainables.errors import UserError
from trainables.readers import load_dataset

DOCS = REPO / "docs" / "data.md"
MARKERS = re.compile(r"(<!-- datasets: generated[^\n]*-->\n)(.*?)(<!-- /datasets -->)", re.S)


@pytest.fixture
def forget():
    """Names a test registers, unregistered afterwards so that no other test sees them."""
    names: list[str] = []
    yield names
    for name in names:
        unregister_dataset(name)


def test_docs_table_is_the_registry():
    found = MARKERS.search(DOCS.read_text())
    assert found, f"{DOCS} lacks the <!-- datasets: generated ... --> and <!-- /datasets --> markers"
    assert found.group(2).strip("\n") == markdown_table().strip("\n"), \
        f"put the registry's table in {DOCS}, between the markers:\n{markdown_table()}"


def test_cli_help_and_unknown_name_list_every_dataset():
    from search.run import build_parser

    help_text = " ".join(build_parser().format_help().split())
    with pytest.raises(UserError) as refused:
        DataSpec("no_such_data")
    for name in dataset_names():
        assert name in help_text and name in str(refused.value)


def tiny_reader(data_dir: str | None) -> Dataset:
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    x = (rng.integers(0, 128, (40, 1, 4, 6)) + 32 * y[:, None, None, None]).astype(np.uint8)
    info = DatasetInfo("tiny", "", ("w", "x", "y", "z"), counts=(30, 10))
    return Dataset(info, Split(x[:30], y[:30].astype(np.int64)), Split(x[30:], y[30:].astype(np.int64)), "memory")


def test_a_dataset_registered_here_loads_through_the_services_entry_point(forget):
    register_dataset(DatasetEntry("tiny", REGISTERED, tiny_reader, "four classes of 4 x 6 noise", "memory",
                                  input_shape=(1, 4, 6), classes=("w", "x", "y", "z"),
                                  norm=((0.5,), (0.25,))))
    forget.append("tiny")
    assert "tiny" in dataset_names(REGISTERED) and "| `tiny` | registered | 1 x 4 x 6 | 4 |" in markdown_table()
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset(dataset_entry("tiny"))

    ds = load_data(DataSpec("tiny"))
    assert ds.train.x.shape == (30, 1, 4, 6) and ds.test.x.shape == (10, 1, 4, 6)
    assert ds.info.classes == dataset_entry("tiny").classes and ds.norm == ((0.5,), (0.25,))
    search = ds.for_search(0.2, seed=0)  # the fixed statistics, not the split's
    assert (len(search.train), len(search.val)) == (24, 6) and (search.mean, search.std) == ((0.5,), (0.25,))
    assert np.array_equal(load_dataset("tiny").train.x, ds.train.x)
    two = load_data(DataSpec("tiny", classes=("z", "w")))
    assert two.info.classes == ("z", "w") and set(two.train.y.tolist()) == {0, 1}
    with pytest.raises(UserError, match="target is for tabular CSV files"):
        DataSpec("tiny", target="label")
    assert not holds_dataset("tiny", str(REPO))  # no files: never mistaken for a data root


def test_registration_is_gone_after_the_test():
    with pytest.raises(UserError, match="unknown dataset 'tiny'"):
        DataSpec("tiny")


def recipe() -> str:
    section = DOCS.read_text().split("## Adding a dataset", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_docs_recipe_works_as_written(tmp_path, forget):
    rng = np.random.default_rng(1)
    arrays = {f"x_{p}": rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8) for p, n in (("train", 12), ("test", 6))}
    arrays.update({f"y_{p}": np.arange(n) % 3 for p, n in (("train", 12), ("test", 6))})
    (tmp_path / "shapes").mkdir()
    np.savez(tmp_path / "shapes" / "shapes.npz", **arrays)

    exec(compile(recipe(), "docs/data.md", "exec"), {"__name__": "trainables.shapes"})
    forget.append("shapes")
    ds = load_data(DataSpec("shapes", data_dir=str(tmp_path)))
    entry = dataset_entry("shapes")
    assert ds.train.x.shape[1:] == entry.input_shape and ds.info.classes == entry.classes
    assert np.array_equal(ds.test.x, arrays["x_test"]) and ds.train.y.dtype == np.int64
    assert holds_dataset("shapes", str(tmp_path)) and not holds_dataset("shapes", str(tmp_path / "shapes"))
    with pytest.raises(UserError, match="shapes.npz not found"):
        load_data(DataSpec("shapes", data_dir=str(tmp_path / "shapes")))


# --- every registered dataset --------------------------------------------------------------------

GIVEN = {"data_file": "x.csv", "test_file": "t.csv", "image_shape": (1, 28, 28), "target": "y",
         "image_size": (8, 8), "channels": 1, "invert": True}


@pytest.mark.parametrize("name", dataset_names())
def test_options_of_other_datasets_are_refused_in_one_line(name):
    assert set(GIVEN) == set(OPTIONS)
    for option in set(OPTIONS) - set(dataset_entry(name).options):
        with pytest.raises(UserError, match=r"(is|are) for .*\(.*\w+.*\)"):
            DataSpec(name, **{option: GIVEN[option]})


@pytest.mark.parametrize("name", dataset_names(REGISTERED))
def test_registered_files_have_the_shape_and_classes_of_their_entry(name, data_root):
    if not holds_dataset(name, str(data_root)):
        pytest.skip(f"{name} is not in {data_root}")
    entry = dataset_entry(name)
    ds = load_data(DataSpec(name, data_dir=str(data_root)))
    assert ds.info.name == name and ds.info.classes == entry.classes
    for split in (ds.train, ds.test):
        assert split.x.shape[1:] == entry.input_shape and split.x.dtype == np.uint8
        assert len(split) > 0 and set(np.unique(split.y).tolist()) == set(range(len(entry.classes)))
    assert not holds_dataset(name, str(data_root / "no-such-folder"))


def test_every_study_names_a_registered_dataset_of_the_shape_it_is_designed_for():
    from spaces.registry import get_study, list_studies

    for study in map(get_study, list_studies()):
        entry = dataset_entry(study.settings.dataset)
        if entry.input_shape is not None:
            assert study.settings.example_input == entry.input_shape, study.name


def test_registering_the_built_in_datasets_imports_no_pandas():
    """The CSV kinds register themselves in trainables/tables.py, which imports pandas only when a
    file is read: an image study's driver does not pay for it (a fresh interpreter, as a user's)."""
    import subprocess
    import sys

    code = ("import sys, trainables.data, trainables.dataset_registry as r; "
            "print(len(r.dataset_names()), 'pandas' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == [str(len(dataset_names())), "False"], proc.stdout + proc.stderr
