"""Studies from outside hpsearch: the user's file (examples/my_study.py, loaded and checked as
hpsearch's own studies are), an object or module path, an installed package's entry point, and
every way such a source can be wrong, each one line naming the problem and the fix."""

from __future__ import annotations

import sys
import textwrap

import pytest

from spaces import loading, registry
from spaces.check import check_study
from spaces.loading import load_installed, load_studies, load_study_source
from spaces.registry import get_study, list_studies
from tests.conftest import REPO
from trainables.errors import UserError

STUDY = """
from spaces.registry import register_study
from spaces.study import Study, StudySettings

def grid_study(name):
    point = {"conv_layers": 1, "filters_0": 8, "kernel_size": 3, "pool_type": "max", "pool_size": 2,
             "activation": "relu", "batch_norm": False, "dropout": 0.1, "dense_layers": 1, "dense_nodes_0": 32,
             "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-5, "batch_size": 64}
    return Study(name=name, description="one point", settings=StudySettings(num_samples=1, max_epochs=1,
                 scheduler="fifo"), grid=(point,))
"""


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Each test registers into a copy of the registry, and the modules it imports are forgotten
    after it (the next test's my_pkg is another folder's), so what it loads leaves with it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ORIGIN", dict(registry._ORIGIN))
    monkeypatch.setattr(loading, "_installed", None)
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in ("my_pkg", "their_pkg")]:
        del sys.modules[name]


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_the_example_study_loads_from_its_file_and_passes_the_check():
    study = load_study_source(str(REPO / "examples" / "my_study.py"))
    assert study.name == "my_small_cnn" and get_study("my_small_cnn") is study
    assert study.settings.dataset == "fashion_mnist" and study.define is not None
    lines: list[str] = []
    check_study(study, lines.append)
    assert len(lines) == 5 and "random sampler" in lines[0] and "tpe sampler" in lines[1]
    again = load_study_source(str(REPO / "examples" / "my_study.py"))  # a second load (a resume) is the same study
    assert again.name == study.name and get_study("my_small_cnn") is again


def test_a_module_path_names_an_object_or_a_module_that_registers(tmp_path, monkeypatch):
    write(tmp_path / "my_pkg" / "__init__.py", "")
    write(tmp_path / "my_pkg" / "objects.py", STUDY + "study = grid_study('object_study')\n")
    write(tmp_path / "my_pkg" / "registers.py", STUDY + "register_study(grid_study('registered_study'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_study_source("my_pkg.objects:study").name == "object_study"
    assert get_study("object_study").grid is not None
    assert load_study_source("my_pkg.registers").name == "registered_study"
    assert load_study_source("my_pkg.registers").name == "registered_study"  # imported already: the same
    assert {"object_study", "registered_study"} <= set(list_studies())


def test_an_installed_package_adds_studies_through_its_entry_point(tmp_path, monkeypatch):
    """A distribution as pip installs one: the package and its .dist-info with entry_points.txt."""
    write(tmp_path / "their_pkg" / "__init__.py", "")
    write(tmp_path / "their_pkg" / "studies.py", STUDY + "STUDIES = [grid_study('their_a'), grid_study('their_b')]\n")
    info = tmp_path / "their_pkg-1.0.dist-info"
    write(info / "METADATA", "Metadata-Version: 2.1\nName: their-pkg\nVersion: 1.0\n")
    write(info / "entry_points.txt", "[hpsearch.studies]\ntheirs = their_pkg.studies:STUDIES\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "their_a" not in list_studies()
    assert load_study_source("their_b").name == "their_b"  # a registered name: installed studies are looked up
    assert [s.name for s in load_installed()] == ["their_a", "their_b"]
    assert get_study("their_a").description == "one point"


def test_a_file_that_registers_several_studies_names_the_one_to_run(tmp_path):
    path = write(tmp_path / "two.py", STUDY + "register_study(grid_study('first'))\n"
                                              "register_study(grid_study('second'))\n")
    with pytest.raises(UserError, match=r"registers 2 studies \(first, second\); choose one as .*two.py:first"):
        load_study_source(str(path))
    assert load_study_source(f"{path}:second").name == "second"
    assert [s.name for s in load_studies(str(path))] == ["first", "second"]


BAD_FILES = {
    "missing": (None, r"nowhere.py: no such file; give a Python file that calls register_study"),
    "syntax": ("def broken(:\n", r"broken.py, line 1: syntax error \(.*\); fix the file"),
    "no_study": ("x = 1\n", r"registers no study; call register_study\(Study\(...\)\) in it, as examples/my_study"),
    "clash": (STUDY + "register_study(grid_study('fashion_space'))\n",
              r"registers a study named 'fashion_space', a name one of hpsearch's own studies already has; "
              r"give the study another name"),
    "raises": ("import os\nraise RuntimeError('boom')\n", r"raises.py, line 2: RuntimeError: boom; fix it"),
    "twice": (STUDY + "register_study(grid_study('dup'))\nregister_study(grid_study('dup'))\n",
              r"registers 'dup' more than once; give each study its own name"),
    "not_a_study": ("from spaces.registry import register_study\nregister_study('fashion')\n",
                    r"registers a str, not a Study"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_study_file_is_one_line_naming_the_problem_and_the_fix(tmp_path, case):
    text, message = BAD_FILES[case]
    name = {"missing": "nowhere", "syntax": "broken", "raises": "raises"}.get(case, case)
    path = tmp_path / f"{name}.py"
    if text is not None:
        write(path, text)
    before = list_studies()
    with pytest.raises(UserError, match=message) as info:
        load_study_source(str(path))
    assert "\n" not in str(info.value)
    assert list_studies() == before  # nothing half-registered


@pytest.mark.parametrize("spec,message", [
    ("fashon_space", r"unknown study 'fashon_space'; known studies: .*fashion_space.* \(or give a file"),
    ("no_such_package_hpsearch.studies:study", r"no module named 'no_such_package_hpsearch.studies'; install"),
    ("my_pkg.objects:nothing", r"module my_pkg.objects has no 'nothing'; name a Study object"),
    ("my_pkg.objects:grid_study", r"my_pkg.objects:grid_study is a function, not a Study"),
    ("my_pkg.empty", r"module my_pkg.empty registers no study; call register_study"),
    ("my pkg:study", r"'my pkg:study' is not a module path"),
    ("notes.txt", r"notes.txt is not a Python file \(.py\)"),
])
def test_a_bad_module_path_or_name_is_one_line(tmp_path, monkeypatch, spec, message):
    write(tmp_path / "my_pkg" / "__init__.py", "")
    write(tmp_path / "my_pkg" / "objects.py", STUDY + "study = grid_study('object_study')\n")
    write(tmp_path / "my_pkg" / "empty.py", "x = 1\n")
    write(tmp_path / "notes.txt", "not a study\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=message) as info:
        load_study_source(spec)
    assert "\n" not in str(info.value)


def test_the_check_names_a_network_over_the_cost_cap(tmp_path):
    path = write(tmp_path / "wide.py", STUDY + textwrap.dedent("""
        import dataclasses
        wide = grid_study('too_wide')
        point = {**wide.grid[0], "filters_0": 512, "dense_nodes_0": 1024}
        register_study(dataclasses.replace(wide, grid=(point,),
                                           settings=dataclasses.replace(wide.settings, max_mmacs_cpu=1.0)))
        """))
    with pytest.raises(UserError, match=r"study too_wide: the random sampler's configuration .* needs [\d.]+ million "
                                        r"multiply-adds per image, over its CPU cap of 1; cap its widths"):
        check_study(load_study_source(str(path)))
