from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cybulde.registry.errors import EmptySplitError, MissingFileError
from cybulde.registry.splits import read_split_columns


def _write(folder: Path, split: str, rows: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": [f"{split}-{i}" for i in range(rows)], "text": [f"t{i}" for i in range(rows)],
                      "label": list(range(rows))})
    pq.write_table(table, folder / f"{split}.parquet")


def test_reads_columns_in_row_order(tmp_path: Path) -> None:
    _write(tmp_path, "test", 3)
    rows = read_split_columns(tmp_path, "test", columns=("text", "label"))
    assert rows == {"text": ["t0", "t1", "t2"], "label": [0, 1, 2]}


def test_missing_unknown_and_empty_splits_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="validation.parquet not found"):
        read_split_columns(tmp_path, "validation")
    with pytest.raises(MissingFileError, match="unknown split 'dev'"):
        read_split_columns(tmp_path, "dev")
    _write(tmp_path, "train", 0)
    with pytest.raises(EmptySplitError, match="no rows"):
        read_split_columns(tmp_path, "train")


def test_shards_are_read_in_manifest_order_and_a_missing_one_is_named(tmp_path: Path) -> None:
    import hashlib

    from cybulde.registry.manifest import Manifest, ShardInfo, SplitSummary, TokenizerInfo

    paths = {}
    for index, rows in enumerate((2, 3)):
        name = f"test-{index:05d}-of-00002.parquet"
        pq.write_table(pa.table({"id": [f"s{index}-{i}" for i in range(rows)], "text": ["t"] * rows,
                                 "label": [index] * rows}), tmp_path / name)
        paths[name] = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    shards = [ShardInfo(name, rows, sha) for (name, sha), rows in zip(paths.items(), (2, 3), strict=True)]
    Manifest(dataset="d", version="v", label_names=["a", "b"],
             splits={"test": SplitSummary(rows=5, label_counts={}, token_length_percentiles={})},
             tokenizer=TokenizerInfo("t", "pretrained", "", 1, 0, 0, 0), max_length=8, sources=[],
             publish_params={}, files=paths, shards={"test": shards}).write(tmp_path)
    assert read_split_columns(tmp_path, "test", columns=("id", "label")) == {
        "id": ["s0-0", "s0-1", "s1-0", "s1-1", "s1-2"], "label": [0, 0, 1, 1, 1]}
    (tmp_path / "test-00001-of-00002.parquet").unlink()
    with pytest.raises(MissingFileError, match="test-00001-of-00002.parquet not found"):
        read_split_columns(tmp_path, "test")
