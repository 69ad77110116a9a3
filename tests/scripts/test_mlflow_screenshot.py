"""scripts/mlflow_screenshot.py: a PNG of an experiment's runs page from `mlflow server` and headless Chromium."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from cybulde.config.schema import Config
from cybulde.tracking.run import PipelineRun
from tests.helpers.script_module import load_script

pytestmark = pytest.mark.slow


def test_the_runs_page_url_sorts_by_the_headline_metric() -> None:
    screenshot = load_script("scripts/mlflow_screenshot.py")
    assert screenshot.runs_page("http://127.0.0.1:5000", "1") == (
        "http://127.0.0.1:5000/#/experiments/1/runs?orderByKey=metrics.%60test%2Fmacro_f1%60&orderByAsc=false")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium")
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
