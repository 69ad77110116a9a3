"""benchmarks/checkpoint_cost.py: the share formulas, and a real run on a tiny config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.script_module import REPO, load_script


def load_benchmark():
    return load_script("benchmarks/checkpoint_cost.py")


def test_shares_of_training_time():
    benchmark = load_benchmark()
    # 1 s to save after every 99 steps of 1 s: 1 s of every 100 s.
    assert benchmark.share_of_training(1.0, 1.0, 99) == pytest.approx(1.0)
    # 373 steps, a checkpoint every 100 (steps 100, 200, 300) and one at the epoch end: 4 saves of 2 s.
    assert benchmark.epoch_share(2.0, 0.5, 100, 373) == pytest.approx(100 * 8 / (8 + 186.5))
    # Step 400 would be the epoch's last batch: the epoch-end checkpoint stands in for it.
    assert benchmark.epoch_share(2.0, 0.5, 100, 400) == pytest.approx(100 * 8 / (8 + 200))


@pytest.mark.slow
def test_a_tiny_run_reports_its_checkpoints(tmp_path):
    from tests.helpers import tiny_train

    project = tiny_train.make_project(tmp_path / "project")
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "checkpoint_cost.py"), "--data-dir",
                             "data/fetched", "--steps", "5", "--every", "2"], cwd=project, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("CHECKPOINT_COST "))
    report = json.loads(line.removeprefix("CHECKPOINT_COST "))
    assert report["steps"] == 5 and report["saves"] == 2  # steps 2 and 4; the epoch-end one is not counted
    assert report["checkpoint_mb"] > 0 and 0 < report["save_s"] <= report["save_s_max"]
    assert report["default_every"] == 200 and report["steps_per_epoch"] == 6  # 48 rows / 8 per step
    expected = 100 * report["save_s"] / (report["save_s"] + 200 * report["step_s"])
    assert report["percent_at_default_every"] == pytest.approx(expected)
    assert not list(Path(project).glob(".cybulde/**/*.ckpt"))  # its checkpoints went to a temporary folder
