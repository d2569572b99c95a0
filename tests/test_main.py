"""The one command, `hpsearch VERB` (search/main.py): its help lists every verb in a line from the
verb's own module, without importing torch; each verb's usage names `hpsearch VERB` while
`python -m search.VERB` keeps its own; the verbs agree on their options (--output/-o,
--results-dir, a study by name or folder, --seed explained); an unknown verb or option is one
line; a study first still means `run`; `hpsearch check` on a real study file and broken ones;
docs/cli.md is what the parsers print."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from search.main import PARSER_MODULE, VERBS
from tests.conftest import REPO, run_cli_here, run_hpsearch_here, run_module

# The verbs that take a study, that write a file or folder, and how each is called to do so.
TAKE_A_STUDY = ("run", "train", "predict", "export", "report", "compare", "dashboard")
WRITE = ("predict", "export", "compare", "bench")


def parser(verb: str, prog: str | None = None) -> argparse.ArgumentParser:
    module = importlib.import_module(PARSER_MODULE.get(verb, VERBS[verb]))
    return module.build_parser(prog) if prog else module.build_parser()


def options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in p._actions for o in a.option_strings}


def one_line(proc, *fragments: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_help_lists_each_verb_by_its_modules_own_summary_without_importing_torch():
    code = textwrap.dedent("""
        import sys
        from search.main import main
        try:
            main(["--help"])
        except SystemExit as e:
            assert e.code == 0, e.code
        print(sorted({"torch", "ray", "pandas", "mlflow", "optuna"} & set(sys.modules)), file=sys.stderr)
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip() == "[]", proc.stderr
    listing = proc.stdout.split("commands:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in listing] == list(VERBS)
    for line in listing:
        verb, text = line.split(maxsplit=1)
        module = importlib.import_module(VERBS[verb])
        assert text == module.__doc__.strip().splitlines()[0], verb
        assert parser(verb).description.splitlines()[0] == text, verb  # the verb's --help begins with it
        assert len(line) <= 80 and text.endswith("."), line
    assert "`hpsearch fashion_space --smoke` is `hpsearch run" in " ".join(proc.stdout.split())


def test_version_comes_from_the_package_metadata():
    from importlib import metadata

    proc = run_module("search", "--version", timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"hpsearch {metadata.version('hpsearch')}"


@pytest.mark.parametrize("verb", list(VERBS))
def test_each_verb_is_reached_as_hpsearch_verb_and_its_help_is_whole_sentences(verb):
    proc = run_hpsearch_here(verb, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: hpsearch {verb} ")
    p = parser(verb)
    assert p.prog == f"python -m {VERBS[verb]}"  # run as a module, it keeps its own name
    # Full descriptions: every paragraph ends a sentence (predict's once stopped mid-sentence).
    assert all(part.rstrip().endswith((".", ".)", "`.")) for part in p.description.split("\n\n")), p.description
    for action in p._actions:
        if action.help != argparse.SUPPRESS and action.option_strings:
            assert action.help, f"{verb} {action.option_strings} has no help"


def test_a_module_run_alone_and_the_console_scripts_keep_their_own_names():
    assert run_module("search.predict", "--help", timeout=60).stdout.startswith("usage: python -m search.predict ")
    assert run_cli_here("search.run", "--help").stdout.startswith("usage: python -m search.run ")
    script = Path(sys.executable).parent / "hpsearch-predict"
    if not script.exists():
        pytest.skip("hpsearch is not installed with its console scripts in this environment")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("usage: hpsearch-predict ")


def test_the_verbs_agree_on_their_options():
    for verb in VERBS:
        opts = options(parser(verb))
        if "--seed" in opts:
            assert opts["--seed"].help, verb
        assert ("--results-dir" in opts) == (verb in TAKE_A_STUDY), verb
        if verb in WRITE:
            assert opts["--output"] is opts["-o"], verb
        assert "--out" not in opts or opts["--out"].help == argparse.SUPPRESS, verb
    bench = parser("bench")
    assert bench.parse_args(["--out", "x"]).output == "x"  # the old name still works, unlisted
    assert "--out " not in bench.format_help()


@pytest.mark.parametrize("argv,fragments", [
    (["reprot", "x"], ["unknown command 'reprot'", "did you mean `hpsearch report`"]),
    (["frobnicate"], ["'frobnicate' is not a command (run, check,", "unknown study 'frobnicate'", "fashion_space"]),
    (["--list"], ["unrecognized option --list", "hpsearch run --list"]),
])
def test_an_unknown_verb_or_option_is_one_line_and_exit_2(argv, fragments):
    one_line(run_hpsearch_here(*argv), *fragments)


def test_a_study_first_still_means_run(tmp_path):
    earlier = tmp_path / "results" / "earlier"
    earlier.mkdir(parents=True)
    # Refused by run's own checks before anything starts: the dispatcher handed it to `run`.
    one_line(run_hpsearch_here("fashion_space", "--name", "earlier", "--results-dir", str(tmp_path / "results")),
             "results for 'earlier' already exist")
    one_line(run_hpsearch_here("run", "--samples", "0", "fashion_space"), "--samples must be positive")


def test_a_study_is_found_by_name_or_folder_everywhere(tmp_path, monkeypatch):
    from search.predict import model_file
    from search.results.locate import find_study
    from search.train import config_file
    from tests.test_front import results_folder
    from trainables.errors import UserError

    root = tmp_path / "results"
    root.mkdir()
    folder = results_folder(root)  # root/study: study.json and the trials tables
    assert find_study("study", str(root)) == find_study(str(folder), None) == folder.resolve()
    monkeypatch.setenv("HPSEARCH_RESULTS_DIR", str(root))
    assert find_study("study", None) == folder.resolve()
    with pytest.raises(UserError, match="no study 'stduy' in"):
        find_study("stduy", None)
    exported = run_hpsearch_here("export", "study", "--results-dir", str(root), "-o", str(tmp_path / "best.json"))
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "best.json").read_text())["search"]["name"] == "study"
    (folder / "model.pt").write_bytes(b"")  # what the final phase leaves: found, not read, here
    (folder / "best.yaml").write_text("space: fashion_space\n")
    assert model_file("study") == model_file(str(folder)) == folder.resolve() / "model.pt"
    assert config_file("study", None) == folder.resolve() / "best.yaml"
    for argv in (["report", "stduy"], ["export", "stduy"], ["compare", "study", "stduy"], ["predict", "stduy", "x.png"],
                 ["train", "stduy"], ["dashboard", "stduy"]):
        line = one_line(run_hpsearch_here(*argv, "--results-dir", str(root)), "no study 'stduy' in")
        assert str(root) in line and "--results-dir" in line, line


BROKEN = {
    "syntax": ("def broken(:\n", ["broken.py, line 1: syntax error"]),
    "samples_badly": ("""
        from spaces.registry import register_study
        from spaces.study import Study, StudySettings

        def space(trial, ctx):
            trial.suggest_int("conv_layers", 1, 2)
            raise ValueError("no such layer")

        register_study(Study(name="badly", description="a define that fails", settings=StudySettings(), define=space))
        """, ["study badly: its space fails when sampled", "ValueError: no such layer", "fix its define"]),
}


@pytest.mark.parametrize("case", BROKEN)
def test_check_names_the_problem_of_a_broken_study_in_one_line(tmp_path, case):
    text, fragments = BROKEN[case]
    path = tmp_path / "broken.py"
    path.write_text(textwrap.dedent(text))
    proc = run_module("search", "check", str(path), timeout=300)
    one_line(proc, *fragments)


def test_check_passes_the_example_study_as_a_user_runs_it():
    proc = run_module("search", "check", "./examples/my_study.py", timeout=600)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("checking study my_small_cnn: ")
    assert sum(line.startswith("  ") and "configurations" in line for line in lines) == 5  # each part passed
    assert lines[-2:] == ["ok: my_small_cnn passes the checks hpsearch's own studies pass",
                          "next: hpsearch run ./examples/my_study.py --smoke"]


def test_docs_cli_md_is_what_the_parsers_print():
    from search.cli_docs import DOC, markdown

    assert DOC.read_text(encoding="utf-8") == markdown(), "docs/cli.md is out of date: run `python -m search.cli_docs`"


def test_a_study_from_the_users_file_is_found_again_from_its_folder(tmp_path, monkeypatch):
    """`hpsearch train STUDY` (and --resume) of a study `hpsearch run ./my_study.py` ran: the file
    named in its study.json is loaded again, from any working directory."""
    from search.results.request import StudyRequest
    from search.train import study_of
    from spaces import loading, registry
    from spaces.loading import lasting_source

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # what it registers leaves with it
    monkeypatch.setattr(registry, "_ORIGIN", dict(registry._ORIGIN))
    monkeypatch.setattr(loading, "_installed", None)
    monkeypatch.chdir(REPO)
    source = lasting_source("./examples/my_study.py")
    assert source == str(REPO / "examples" / "my_study.py")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps({"space": "my_small_cnn", "study_source": source}))
    monkeypatch.chdir(tmp_path)
    assert study_of("my_small_cnn", folder / "best.yaml").name == "my_small_cnn"
    request = StudyRequest(space="my_small_cnn", study_source=source, name="mine", results_root=str(tmp_path),
                           data={}, tracking_uri="")
    assert request.resume_command().startswith(f"hpsearch run {source} --name mine --resume")


def test_bench_where_a_wheel_left_it_out_says_how_to_get_it(monkeypatch):
    """A wheel has no search/bench (pyproject.toml): `hpsearch bench` is then one line saying where the
    benchmarks come from, and `hpsearch --help` still lists the verb, saying the same."""
    import importlib.util

    from search import main as dispatcher

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("search.bench") else find_spec(name, *a))
    proc = run_hpsearch_here("bench", "--quick")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "not installed here" in proc.stderr and "pip install -e '.[bench]'" in proc.stderr
    assert "not installed" in dispatcher.summary("bench")
