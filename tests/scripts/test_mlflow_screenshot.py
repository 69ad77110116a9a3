"""scripts/mlflow_screenshot.py: a PNG of an experiment's runs page from `mlflow server` and headless Chromium."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import pytest

from cybulde.config.schema import Config
from cybulde.tracking.run import PipelineRun
from tests.helpers.script_module import load_script

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
# The runs page the README sends a user to, on `mlflow ui`'s default address.
README_RUNS_URL = re.compile(r"<http://127\.0\.0\.1:5000(/#/experiments/(\d+)\?[^>]*)>")
needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium")


def test_the_runs_page_url_sorts_by_the_headline_metric() -> None:
    screenshot = load_script("scripts/mlflow_screenshot.py")
    assert screenshot.runs_page("http://127.0.0.1:5000", "1") == (
        "http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning"
        "&orderByKey=metrics.%60test%2Fmacro_f1%60&orderByAsc=false")


@needs_chromium
def test_screenshot_of_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = Config()
    config.mlflow.tracking_uri = store
    run = PipelineRun.start_training(config)
    with run.stage("test", final=True):
        run.log_metrics({"test/macro_f1": 0.5})

    out = tmp_path / "runs.png"
    screenshot = load_script("scripts/mlflow_screenshot.py")
    assert screenshot.main(["--store", store, "--out", str(out), "--width", "800", "--height", "400"]) == 0
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (800, 400)


@needs_chromium
def test_the_readme_url_opens_mlflow_on_the_runs_named_after_their_experiments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two DVC experiments' runs in a fresh store, seen in the real UI at the README's address: the
    runs page (not MLflow 3's GenAI overview), listing both runs by their experiments' names."""
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = Config()
    config.mlflow.tracking_uri = store
    for name in ("tall-oaks", "brisk-fern"):
        monkeypatch.setenv("DVC_EXP_NAME", name)
        with PipelineRun.start_training(config).stage("test", final=True):
            pass
    found = README_RUNS_URL.search((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert found, "README.md gives no MLflow runs URL"
    path, experiment = found.groups()
    screenshot = load_script("scripts/mlflow_screenshot.py")
    assert screenshot.experiment_id(store, "cybulde") == experiment
    with screenshot.mlflow_server(store, screenshot.free_port()) as base:
        dom = screenshot.headless(f"{base}{path}", "--dump-dom")
    title = re.search(r"<title>([^<]*)</title>", dom)
    assert title and title.group(1).startswith("Runs"), title and title.group(1)
    assert "tall-oaks" in dom and "brisk-fern" in dom
