"""Reading the rows of one split of a dataset version (a fetched copy or a registry folder)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cybulde.data.errors import EmptySplitError, MissingFileError
from cybulde.data.manifest import SPLITS


def read_split_columns(data_dir: str | Path, split: str,
                       columns: Sequence[str] = ("id", "text", "label")) -> dict[str, list[Any]]:
    """`columns` of `<data_dir>/<split>.parquet` as lists, in row order."""
    import pyarrow.parquet as pq

    if split not in SPLITS:
        raise MissingFileError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
    path = Path(data_dir) / f"{split}.parquet"
    if not path.is_file():
        raise MissingFileError(f"{path} not found: {data_dir} is not a complete dataset version "
                               f"(run the `fetch` stage, or check data.fetched_dir)")
    table = pq.read_table(path, columns=list(columns))
    if table.num_rows == 0:
        raise EmptySplitError(f"{path} has no rows: nothing to train or evaluate on")
    return {name: table.column(name).to_pylist() for name in columns}
