from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cybulde.data.errors import EmptySplitError, MissingFileError
from cybulde.data.splits import read_split_columns


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
