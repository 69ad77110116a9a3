"""The TF-IDF + logistic regression baseline on tiny generated datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cybulde.evaluation.baseline import BaselineError, join_report, run_baseline, split_report, write_baseline
from tests.helpers.tiny_model import make_data_dir

ROWS = {"train": 60, "validation": 30, "test": 30}
SPLIT_KEYS = {"loss", "accuracy", "macro_f1", "roc_auc", "threshold", "per_class", "num_examples"}
HEADLINE_KEYS = SPLIT_KEYS - {"per_class"}  # the same keys as the model's metrics/<split>.json


@pytest.fixture(scope="module")
def binary_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("binary") / "data", num_labels=2, rows=ROWS)


def test_learns_a_separable_problem(binary_dir: Path) -> None:
    report = run_baseline(binary_dir, grid=(1.0, 4.0))
    assert report["test"]["macro_f1"] >= 0.9
    assert report["validation"]["macro_f1"] >= 0.9
    assert report["C"] in (1.0, 4.0)


def test_writes_the_metrics_keys_deterministically(binary_dir: Path, tmp_path: Path) -> None:
    report, first = write_baseline(binary_dir, root=tmp_path / "a", grid=(1.0, 4.0))
    _, second = write_baseline(binary_dir, root=tmp_path / "b", grid=(1.0, 4.0))
    assert first == tmp_path / "a" / "metrics" / "baseline"
    names = ["details.json", "test.json", "validation.json"]
    assert sorted(path.name for path in first.iterdir()) == names
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in names)
    files = {name: json.loads((first / name).read_text()) for name in names}
    for split in ("validation", "test"):
        assert set(files[f"{split}.json"]) == HEADLINE_KEYS  # no per-class keys to widen `dvc metrics show`
        assert files[f"{split}.json"]["threshold"] is None
        assert set(files["details.json"]["per_class"][split]) == {"not_offensive", "offensive"}
    details = files["details.json"]
    assert {"C", "dataset", "version", "class_weight", "num_features"} <= set(details)
    assert set(details["validation_macro_f1_by_C"]) == {"1.0", "4.0"}
    assert details["validation_macro_f1_by_C"][str(details["C"])] == files["validation.json"]["macro_f1"]
    assert join_report(files) == report  # the files hold exactly the report, split up
    for split in ("validation", "test"):
        assert set(report[split]) == SPLIT_KEYS


def test_split_and_join_are_inverses_on_the_committed_shape() -> None:
    report = {"C": 0.5, "dataset": "d", "version": "v1", "class_weight": None, "num_features": 3,
              "validation_macro_f1_by_C": {"0.5": 0.7},
              "validation": {"macro_f1": 0.7, "per_class": {"a": {"f1": 0.6}}},
              "test": {"macro_f1": 0.8, "per_class": {"a": {"f1": 0.9}}}}
    files = split_report(report)
    assert files["test.json"] == {"macro_f1": 0.8}
    assert files["details.json"]["per_class"] == {"validation": {"a": {"f1": 0.6}}, "test": {"a": {"f1": 0.9}}}
    assert join_report(files) == report


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
    assert json.loads((tmp_path / "metrics" / "baseline" / "test.json").read_text())["macro_f1"] >= 0.9
    assert stage.main(["data.fetched_dir=/nonexistent/data"]) == 1
