"""The live view (search.dashboard): optuna-dashboard started the way the README says, against a
real Optuna store written by the searcher's own hooks (a search in flight: one trial finished,
one stopped by ASHA, one still running), read back through the dashboard's JSON API, including a
trial the searcher writes while the dashboard runs; that it changes nothing unless told to
(--allow-edits); and the command's refusals, in one line."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys

import optuna
import psutil
import pytest
import requests

from search.results.request import StudyRequest, StudyState
from search.tune.searcher import Store
from tests.chaos import REPO, free_port, wait_for
from tests.conftest import run_cli_here
from tests.test_store import run_trial, searcher_in

NAME = "fashion_space-live"


def make_study(root, name=NAME, optuna_storage=None):
    """A study folder with the study.json search.run writes."""
    request = StudyRequest(space="fashion_space", name=name, results_root=str(root), data={"dataset": "fashion"},
                           tracking_uri=f"sqlite:///{root / 'mlflow.db'}", max_epochs=4,
                           optuna_storage=optuna_storage)
    request.folder.mkdir(parents=True)
    StudyState(request).save()
    return request.folder


@pytest.fixture
def in_flight(tmp_path):
    """(results root, the searcher) of a search in flight, its store in the study folder."""
    root = tmp_path / "results"
    searcher = searcher_in(make_study(root), NAME, max_epochs=4)
    run_trial(searcher, "t1", [0.25, 1, 2, 3, 4], [0.5, 0.7, 0.8, 0.82, 0.85])  # every epoch: COMPLETE
    run_trial(searcher, "t2", [0.25, 1], [0.3, 0.4])  # ASHA stopped it after one epoch: PRUNED
    assert searcher.suggest("t3") is not None  # running, a quarter epoch in
    searcher.on_trial_result("t3", {"val_accuracy": 0.6, "epochs_seen": 0.25})
    return root, searcher


def trials_by_tune_id(detail: dict) -> dict[str, dict]:
    def tune_id(trial):
        return next(a["value"] for a in trial["user_attrs"] if a["key"] == "tune_trial_id")

    return {tune_id(t): t for t in detail["trials"]}


@contextlib.contextmanager
def dashboard(root, *extra: str):
    """(the process, its API's base URL, its port): `search.dashboard NAME` started as the README says."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "search.dashboard", NAME, "--results-dir", str(root),
                             "--port", str(port), *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read()
            try:
                return requests.get(f"{api}/studies", timeout=2).ok
            except requests.RequestException:
                return False
        wait_for(up, 15, "the dashboard")
        yield proc, api, port
    finally:
        proc.terminate()  # by PID
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_the_dashboard_lists_a_running_search_live_on_loopback_only(in_flight):
    root, searcher = in_flight
    with dashboard(root) as (proc, api, port):
        printed = [proc.stdout.readline() for _ in range(5)]  # printed before it serves, flushed
        studies = requests.get(f"{api}/studies", timeout=5).json()["study_summaries"]
        assert [s["study_name"] for s in studies] == [NAME]
        study_id = studies[0]["study_id"]
        assert f"http://127.0.0.1:{port}/dashboard/studies/{study_id}" in printed[1]
        assert "read-only (--allow-edits to change the study)" in printed[1]
        db = root / NAME / "optuna.db"
        assert printed[4].split()[1:] == [f"sqlite:///{db.resolve()}", "--host", "127.0.0.1", "--port", str(port)]
        assert printed[4].split()[0].endswith("optuna-dashboard")

        page = requests.get(f"http://127.0.0.1:{port}/dashboard/studies/{study_id}", timeout=5)
        assert page.ok and "<html" in page.text.lower()  # the page itself, which polls the API below
        detail = requests.get(f"{api}/studies/{study_id}", timeout=5).json()
        assert detail["objective_names"] == ["val_accuracy"]  # named as hpsearch names it, not "Objective 0"
        trials = trials_by_tune_id(detail)
        assert {k: t["state"] for k, t in trials.items()} == {"t1": "Complete", "t2": "Pruned", "t3": "Running"}
        assert trials["t1"]["values"] == [0.85]
        assert [v["step"] for v in trials["t2"]["intermediate_values"]] == [25, 100]  # 100 steps per epoch
        assert [v["step"] for v in trials["t3"]["intermediate_values"]] == [25]

        # Live: what the searcher writes now is on the page's next poll (the dashboard caches a
        # study's trials for 2 s).
        searcher.on_trial_result("t3", {"val_accuracy": 0.7, "epochs_seen": 1})
        assert searcher.suggest("t4") is not None

        def updated() -> bool:
            now = trials_by_tune_id(requests.get(f"{api}/studies/{study_id}", timeout=5).json())
            return "t4" in now and len(now["t3"]["intermediate_values"]) == 2
        wait_for(updated, 10, "the new trial and epoch on the dashboard")

        # Bound to loopback and nothing else.
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]


def test_the_dashboard_changes_nothing_unless_allowed(in_flight):
    """A viewer beside a running search: renaming, deleting, telling a running trial and writing a
    note are refused (403, with the reason the page shows) and the store is as it was."""
    root, searcher = in_flight
    storage = optuna.storages.RDBStorage(f"sqlite:///{root / NAME / 'optuna.db'}")
    before = [(t.number, t.state) for t in storage.get_all_trials(storage.get_study_id_from_name(NAME))]
    with dashboard(root) as (_, api, _):
        study_id = requests.get(f"{api}/studies", timeout=5).json()["study_summaries"][0]["study_id"]
        running = trials_by_tune_id(requests.get(f"{api}/studies/{study_id}", timeout=5).json())["t3"]["trial_id"]
        attempts = [requests.post(f"{api}/studies/{study_id}/rename", json={"study_name": "renamed"}, timeout=5),
                    requests.delete(f"{api}/studies/{study_id}", timeout=5),
                    requests.post(f"{api}/trials/{running}/tell", json={"state": "Fail"}, timeout=5),
                    requests.put(f"{api}/studies/{study_id}/note", json={"version": 1, "body": "x"}, timeout=5)]
        assert [r.status_code for r in attempts] == [403] * 4
        assert all("--allow-edits" in r.json()["reason"] for r in attempts)
    assert [s.study_name for s in storage.get_all_studies()] == [NAME]
    assert [(t.number, t.state) for t in storage.get_all_trials(storage.get_study_id_from_name(NAME))] == before
    with dashboard(root, "--allow-edits") as (proc, api, _):
        assert "read-only" not in proc.stdout.readline() + proc.stdout.readline()
        note = requests.put(f"{api}/studies/{study_id}/note", json={"version": 1, "body": "looks good"}, timeout=5)
        assert note.ok, note.text
    assert "looks good" in "".join(str(v) for v in storage.get_study_system_attrs(study_id).values())


def test_the_store_url_is_the_searchers(in_flight, tmp_path):
    """The dashboard finds the store without importing the searcher (Ray): the same URL."""
    from search.dashboard import find_study, study_store

    root, _ = in_flight
    assert study_store(find_study(NAME, str(root))).url == Store.for_study(root / NAME, NAME, None).url
    shared = f"sqlite:///{tmp_path / 'server.db'}"
    folder = make_study(root, "on-a-server", optuna_storage=shared)
    assert study_store(find_study(str(folder), None)).url == Store.for_study(folder, "on-a-server", shared).url


def test_the_command_imports_neither_ray_nor_torch():
    """It starts in a second beside a running search (search.tune.searcher would import Ray)."""
    code = ("import sys, search.dashboard, optuna, optuna_dashboard; "
            "print(sorted({'ray', 'torch'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def one_line_refusal(*args: str, match: str) -> None:
    result = run_cli_here("search.dashboard", *args)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and match in result.stderr, result.stderr


def test_bad_input_is_refused_in_one_line(in_flight, tmp_path):
    root, _ = in_flight
    one_line_refusal("no-such-study", "--results-dir", str(root), match="no study 'no-such-study'")
    one_line_refusal(str(tmp_path), match="is not a study folder")
    make_study(root, "fashion_grid-1")  # a grid study: study.json, no Optuna store
    one_line_refusal("fashion_grid-1", "--results-dir", str(root), match="has no Optuna store")
    shared = f"sqlite:///{tmp_path / 'server.db'}"  # a database of other studies, this one not started
    make_study(root, "elsewhere", optuna_storage=shared)
    one_line_refusal("elsewhere", "--results-dir", str(root), match="Optuna store sqlite:")  # no file
    optuna.create_study(study_name="another", storage=shared)
    one_line_refusal("elsewhere", "--results-dir", str(root), match="has no study named 'elsewhere'")
    one_line_refusal(NAME, "--results-dir", str(root), "--host", "0.0.0.0", match="ssh -L")
    one_line_refusal(NAME, "--results-dir", str(root), "--port", "70000", match="between 1 and 65535")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        one_line_refusal(NAME, "--results-dir", str(root), "--port", str(taken.getsockname()[1]),
                         match="cannot listen on 127.0.0.1")
