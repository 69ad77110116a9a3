"""Reading the rows of one split of a dataset version (a fetched copy or a registry folder), in
either layout: the split's Parquet shards in order (format 2) or its single file (format 1)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from cybulde.registry.errors import EmptySplitError, MissingFileError
from cybulde.registry.manifest import MANIFEST_FILE, SPLITS, Manifest, files_dir


def split_paths(data_dir: str | Path, split: str, manifest: Manifest | None = None) -> list[Path]:
    """The Parquet files of `split`, in row order; an error naming the first one that is missing.
    A folder without manifest.json is read as the single-file layout (`<split>.parquet`)."""
    if split not in SPLITS:
        raise MissingFileError(f"unknown split {split!r}: expected one of {list(SPLITS)}")
    if manifest is None and (Path(data_dir) / MANIFEST_FILE).is_file():
        manifest = Manifest.load(data_dir)
    if manifest is None:
        paths = [Path(data_dir) / f"{split}.parquet"]
    else:
        root = files_dir(data_dir, manifest)
        paths = [root / shard.path for shard in manifest.split_shards(split)] or [root / f"{split}.parquet"]
    for path in paths:
        if not path.is_file():
            raise MissingFileError(f"{path} not found: {data_dir} is not a complete dataset version "
                                   f"(run the `fetch` stage, or check data.fetched_dir)")
    return paths


def read_split_columns(data_dir: str | Path, split: str,
                       columns: Sequence[str] = ("id", "text", "label")) -> dict[str, list[Any]]:
    """`columns` of `split` as lists, in row order."""
    paths = split_paths(data_dir, split)
    result: dict[str, list[Any]] = {name: [] for name in columns}
    for path in paths:
        table = pq.read_table(path, columns=list(columns))
        for name in columns:
            result[name].extend(table.column(name).to_pylist())
    if not result[columns[0]]:
        raise EmptySplitError(f"{split} of {data_dir} ({', '.join(p.name for p in paths)}) has no rows: "
                              "nothing to train or evaluate on")
    return result
