"""A small search against a real `mlflow server`, checked the way another tool would see it:
through the server's REST API, and in a real headless browser (Debian's chromium) on the UI."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from search.results.best_config import BestConfig
from tests.chaos import MlflowServer
from tests.conftest import run_module

pytestmark = pytest.mark.slow
SAMPLES, EPOCHS, NAME, MODEL = 2, 2, "served", "hpsearch-fashion-test"
CHROMIUM = Path("/usr/bin/chromium")
STATUSES = {"completed", "stopped_early", "paused", "stopped_by_budget", "diverged", "failed"}


@pytest.fixture(scope="module")
def served(data_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(folder)
    server.start()
    try:
        proc = run_module("search.run", "fashion_space", "--smoke", "--samples", str(SAMPLES), "--max-epochs",
                          str(EPOCHS), "--name", NAME, "--results-dir", str(folder / "results"),
                          "--data-dir", str(data_root), "--tracking-uri", server.uri, "--register-model", MODEL)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield server, folder / "results" / NAME, proc
    finally:
        server.stop()


class Rest:
    """MLflow's REST API over plain HTTP, as a dashboard or script would use it."""

    def __init__(self, uri: str):
        self.base = f"{uri}/api/2.0/mlflow"

    def get(self, path: str, **params) -> dict:
        reply = requests.get(f"{self.base}/{path}", params=params, timeout=30)
        assert reply.ok, (path, reply.status_code, reply.text[:500])
        return reply.json()

    def post(self, path: str, body: dict) -> dict:
        reply = requests.post(f"{self.base}/{path}", json=body, timeout=30)
        assert reply.ok, (path, reply.status_code, reply.text[:500])
        return reply.json()

    def runs(self, experiment_id: str, filter_string: str = "") -> list[dict]:
        return self.post("runs/search", {"experiment_ids": [experiment_id], "filter": filter_string,
                                         "max_results": 1000}).get("runs", [])

    def history(self, run_id: str, key: str) -> list[dict]:
        return self.get("metrics/get-history", run_id=run_id, metric_key=key).get("metrics", [])


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def test_rest_api_shows_nested_comparable_runs(served):
    server, study, _ = served
    rest = Rest(server.uri)
    best = BestConfig.load(study / "best.yaml")
    experiment = rest.get("experiments/get-by-name", experiment_name="fashion_space")["experiment"]
    assert experiment["experiment_id"] == best.mlflow["experiment_id"]
    runs = rest.runs(experiment["experiment_id"])
    parents = [r for r in runs if "mlflow.parentRunId" not in tags(r)]
    assert [p["info"]["run_name"] for p in parents] == [NAME]
    parent = parents[0]
    parent_id = parent["info"]["run_id"]
    assert parent_id == best.mlflow["parent_run_id"] and parent["info"]["status"] == "FINISHED"
    assert tags(parent)["hpsearch.status"] == "completed" and params(parent)["space"] == "fashion_space"

    children = rest.runs(experiment["experiment_id"], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert sorted(c["info"]["run_name"] for c in children) == [f"trial_{i:03d}" for i in range(1, SAMPLES + 1)]
    assert len(runs) == SAMPLES + 1
    for child in children:
        child_tags, child_params = tags(child), params(child)
        assert child_tags["hpsearch.status"] in STATUSES
        # Flat, readable hyperparameter names, one param each (no nested dicts, no prefixes).
        assert {"conv_layers", "activation", "optimizer", "lr", "batch_size"} <= set(child_params)
        assert all("." not in key and "/" not in key for key in child_params)
        epochs = int(child_tags["hpsearch.epochs"])
        for key in ("val_accuracy", "val_loss", "train_loss"):
            steps = [m["step"] for m in rest.history(child["info"]["run_id"], key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (child["info"]["run_name"], key, steps)
    marked = [c["info"]["run_name"] for c in children if tags(c).get("hpsearch.best") == "true"]
    assert marked == [best.search["best_trial"]] == [tags(parent)["hpsearch.best_trial"]]
    best_run = next(c for c in children if c["info"]["run_name"] == marked[0])
    best_score = max(m["value"] for m in rest.history(best_run["info"]["run_id"], "val_accuracy"))
    assert best_score == pytest.approx(best.metrics["val_accuracy"])


def test_final_model_is_registered(served):
    server, study, proc = served
    rest = Rest(server.uri)
    best = BestConfig.load(study / "best.yaml")
    assert f"registered model: {MODEL}/1" in proc.stdout
    versions = rest.get("model-versions/search", filter=f"name = '{MODEL}'")["model_versions"]
    assert [v["version"] for v in versions] == ["1"]
    assert versions[0]["run_id"] == best.mlflow["parent_run_id"]
    parent = rest.get("runs/get", run_id=best.mlflow["parent_run_id"])["run"]
    assert tags(parent)["hpsearch.registered_model"] == f"{MODEL}/1"


def test_mlflow_ui_lists_the_trials_in_a_real_browser(served, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install -y chromium` (setup.sh does it as root)")
    from playwright.sync_api import sync_playwright

    server, study, _ = served
    experiment_id = BestConfig.load(study / "best.yaml").mlflow["experiment_id"]
    shot = tmp_path / "mlflow-ui.png"
    with sync_playwright() as p:
        # Playwright gives each launch a fresh profile; the flags keep chromium off the network.
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{server.uri}/#/experiments/{experiment_id}/runs")
            study_link = page.get_by_role("link", name=NAME, exact=True)
            study_link.wait_for(timeout=60_000)
            # The trials are nested under the study's run: expand it, as a user would.
            row = page.get_by_role("row").filter(has=study_link)
            row.locator('[col-id="attributes.`Run Name`"] button').first.click()
            for i in range(1, SAMPLES + 1):
                page.get_by_role("link", name=f"trial_{i:03d}", exact=True).wait_for(timeout=30_000)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
