"""The TF-IDF + logistic regression baseline on tiny generated datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cybulde.evaluation.baseline import BaselineError, run_baseline, write_baseline
from tests.evaluation.eval_fixtures import make_data_dir

ROWS = {"train": 60, "validation": 30, "test": 30}
SPLIT_KEYS = {"loss", "accuracy", "macro_f1", "roc_auc", "threshold", "per_class", "num_examples"}


@pytest.fixture(scope="module")
def binary_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("binary") / "data", num_labels=2, rows=ROWS)


def test_learns_a_separable_problem(binary_dir: Path) -> None:
    report = run_baseline(binary_dir, grid=(1.0, 4.0))
    assert report["test"]["macro_f1"] >= 0.9
    assert report["validation"]["macro_f1"] >= 0.9
    assert report["C"] in (1.0, 4.0)


def test_writes_the_metrics_keys_deterministically(binary_dir: Path, tmp_path: Path) -> None:
    _, first = write_baseline(binary_dir, root=tmp_path / "a", grid=(1.0,))
    _, second = write_baseline(binary_dir, root=tmp_path / "b", grid=(1.0,))
    assert first == tmp_path / "a" / "metrics" / "baseline.json"
    assert first.read_bytes() == second.read_bytes()
    report = json.loads(first.read_text())
    assert {"validation", "test", "C", "dataset", "version"} <= set(report)
    for split in ("validation", "test"):
        assert set(report[split]) == SPLIT_KEYS
        assert set(report[split]["per_class"]) == {"not_offensive", "offensive"}
        assert report[split]["threshold"] is None


def test_three_labels(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path / "data", num_labels=3, rows={"train": 60, "validation": 30, "test": 30})
    report = run_baseline(data_dir, grid=(4.0,), class_weight=None)
    assert set(report["test"]["per_class"]) == {"neither", "offensive", "hate"}
    assert report["test"]["macro_f1"] > 0.9


def test_missing_data_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="fetch"):
        run_baseline(tmp_path / "nowhere")


def test_stage_reads_fetched_dir_from_params(binary_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    stage_path = Path(__file__).parents[2] / "stages" / "baseline.py"
    spec = importlib.util.spec_from_file_location("baseline_stage", stage_path)
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    (tmp_path / "params.yaml").write_text(f"data:\n  fetched_dir: {binary_dir}\n")
    monkeypatch.chdir(tmp_path)
    assert stage.main([]) == 0
    assert json.loads((tmp_path / "metrics" / "baseline.json").read_text())["test"]["macro_f1"] >= 0.9
    assert stage.main(["data.fetched_dir=/nonexistent/data"]) == 1
