"""Cross-dataset evaluation: label mapping checks and a tiny model scored on another tiny dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from cybulde.evaluation.cross import (
    CrossEvaluationError,
    add_cross_arguments,
    evaluate_cross,
    run_cross,
    split_registry_location,
)
from tests.helpers.tiny_model import make_data_dir, make_model_dir

MODEL_LABELS = ["not_offensive", "offensive"]
DATA_LABELS = ["neither", "offensive", "hate"]
TO_BINARY = {"neither": "not_offensive", "hate": "offensive"}


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    data_dir = make_data_dir(root / "data", num_labels=2)
    return make_model_dir(root / "model", data_dir)


@pytest.fixture(scope="module")
def three_label_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("other") / "data", num_labels=3)


def test_registry_location_needs_three_parts() -> None:
    assert split_registry_location("gs://bucket/reg/davidson2017/v1") == ("gs://bucket/reg", "davidson2017", "v1")
    with pytest.raises(CrossEvaluationError, match="registry"):
        split_registry_location("v1")


def test_scores_a_model_on_another_dataset(binary_model: Path, three_label_data: Path) -> None:
    result = evaluate_cross(binary_model, three_label_data, TO_BINARY, split="test")
    assert result["num_examples"] == 18
    assert result["label_map"]["hate"] == "offensive"
    assert set(result["per_class"]) == set(MODEL_LABELS)
    assert sum(map(sum, result["confusion_matrix"])) == 18
    # 6 neither rows become not_offensive; 12 offensive + hate rows become offensive.
    assert [sum(row) for row in result["confusion_matrix"]] == [6, 12]
    assert {name: sum(counts.values()) for name, counts in result["source_confusion"].items()} == {
        "neither": 6, "offensive": 6, "hate": 6}
    assert result == evaluate_cross(binary_model, three_label_data, TO_BINARY, split="test")


def test_retokenizes_with_the_model_tokenizer(binary_model: Path, three_label_data: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = three_label_data / "validation.parquet"
    table = pq.read_table(path)
    garbage = pa.array([[999999] for _ in range(table.num_rows)], pa.list_(pa.int32()))
    other = three_label_data.parent / "retokenized"
    other.mkdir()
    for name in ("manifest.json", "train.parquet", "test.parquet"):
        (other / name).write_bytes((three_label_data / name).read_bytes())
    pq.write_table(table.set_column(table.schema.get_field_index("input_ids"), "input_ids", garbage),
                   other / "validation.parquet")
    original = evaluate_cross(binary_model, three_label_data, TO_BINARY, split="validation")
    retokenized = evaluate_cross(binary_model, other, TO_BINARY, split="validation")
    assert retokenized["macro_f1"] == original["macro_f1"]


def test_downloads_a_registry_version(binary_model: Path, three_label_data: Path, tmp_path: Path) -> None:
    import shutil

    registry = tmp_path / "registry"
    shutil.copytree(three_label_data, registry / "tiny3" / "v1")
    local = evaluate_cross(binary_model, three_label_data, TO_BINARY)
    remote = evaluate_cross(binary_model, f"{registry}/tiny3/v1", TO_BINARY)
    assert remote["macro_f1"] == local["macro_f1"]


def test_cli_prints_json_and_reports_errors(binary_model: Path, three_label_data: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    parser = add_cross_arguments(argparse.ArgumentParser())
    saved = tmp_path / "results" / "cross.json"
    args = parser.parse_args(["--model", str(binary_model), "--data", str(three_label_data),
                              "--map", "hate=offensive", "--map", "neither=not_offensive",
                              "--output", "json", "--save", str(saved)])
    assert run_cross(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(saved.read_text())
    from cybulde.cli import main

    assert main(["evaluate-cross", "--model", str(binary_model), "--data", str(three_label_data),
                 "--map", "hate=offensive"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cybulde evaluate-cross: error: data labels ['neither'] are not mapped")
    assert err.count("\n") == 1


def test_raw_texts_go_through_the_models_cleaning(binary_model: Path, three_label_data: Path, tmp_path: Path) -> None:
    """Texts written with HTML entities and tabs score exactly as their clean versions do."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    dirty = tmp_path / "dirty"
    shutil.copytree(three_label_data, dirty)
    table = pq.read_table(dirty / "test.parquet")
    texts = [text.replace(" ", "&#32;\t", 1).replace("a", "&#97;") for text in table.column("text").to_pylist()]
    assert texts != table.column("text").to_pylist()
    pq.write_table(table.set_column(table.column_names.index("text"), "text", pa.array(texts, pa.string())),
                   dirty / "test.parquet")
    clean = evaluate_cross(binary_model, three_label_data, TO_BINARY)
    assert {key: value for key, value in evaluate_cross(binary_model, dirty, TO_BINARY).items() if key != "data"} == {
        key: value for key, value in clean.items() if key != "data"}
