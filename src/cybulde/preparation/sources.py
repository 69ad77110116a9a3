"""Readers of raw labeled data, streamed in batches of rows (`RawBatch`: id, text, label, split).

Supported sources:
- `tweeteval_offensive`, `tweeteval_hate`: official splits, `{train,val,test}_text.txt` with one tweet
  per line and `{...}_labels.txt` with one label per line; line *i* of both files is one example.
  Some tweets are empty, which shows as an empty line: lines are therefore split on "\n" only and
  paired by position (never filtered before pairing, which would shift every later label).
  Label names come from `mapping.txt`. (These files are small and fixed: they are read whole.)
- `davidson2017`: `labeled_data.csv`, 3 classes (0 hate speech, 1 offensive language, 2 neither) and
  no official split: each row's split is drawn from its id (`hash_splits` in `cybulde.preparation.prepare`).
- `csv` / `parquet`: a user's file with a text and a label column (`text_column`, `label_column`),
  streamed with pyarrow's CSV reader / by Parquet row group; its rows are split by a hash of their
  raw text (exact duplicates share a split). Or a folder with `train`/`validation` (or `val`)/`test`
  files of that format (official splits then). Label names are the column's distinct values, sorted
  (numerically if all are integers): found by a first pass that reads the label column only.

A source is opened (`load_source`) before any work: missing files and columns are reported then.
`ExtraTraining` names another source whose *train* split joins a dataset's train split, its labels
mapped explicitly onto the dataset's own (see `cybulde.preparation.publish`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cybulde.preparation.labels import parse_label_map
from cybulde.registry.errors import RawDataError
from cybulde.registry.manifest import SPLITS

SOURCES = ("tweeteval_offensive", "tweeteval_hate", "davidson2017", "csv", "parquet")
DAVIDSON_LABELS = ["hate_speech", "offensive_language", "neither"]
BY_HASH = -1  # RawBatch.splits value of a row whose split is drawn from its key
_TWEETEVAL_FILE_SPLITS = {"train": "train", "validation": "val", "test": "test"}
_SPLIT_FILE_STEMS = {"train": ("train",), "validation": ("validation", "val", "valid", "dev"), "test": ("test",)}
_CSV_BLOCK_BYTES = 4 << 20


@dataclass
class RawBatch:
    """Consecutive raw rows of a source, before cleaning and tokenization."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray  # int64 indices into the source's label_names
    splits: np.ndarray  # int8: index into SPLITS, or BY_HASH
    keys: list[str] | None = None  # what a BY_HASH row's split is drawn from
    start: int = 0  # position of the first row in the source's stream of rows

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> RawBatch:
        """The rows at positions `rows` (sorted), as a batch."""
        picked = rows.tolist()
        return RawBatch([self.ids[i] for i in picked], [self.texts[i] for i in picked], self.labels[rows],
                        self.splits[rows], [self.keys[i] for i in picked] if self.keys is not None else None,
                        self.start)


@dataclass
class Source:
    """An opened raw source: what it is, and its rows as batches (`batches`)."""

    kind: str
    raw_dir: Path  # the folder that `source_files` are relative to
    source_files: list[Path]
    label_names: list[str]
    official_splits: bool
    split_key: str | None = None  # BY_HASH rows: "id" or "text"
    options: dict[str, Any] = field(default_factory=dict)

    def batches(self, rows: int) -> Iterator[RawBatch]:
        """All rows in file order, `rows` at a time (the last batch may be shorter)."""
        reader = {"tweeteval": _tweeteval_batches, "davidson2017": _davidson_batches,
                  "table-file": _table_file_batches, "table-folder": _table_folder_batches}[self.options["reader"]]
        position = 0
        for batch in reader(self, rows):
            batch.start = position
            position += len(batch)
            yield batch


def load_source(source: str, raw_dir: str | Path, text_column: str | None = None,
                label_column: str | None = None) -> Source:
    """Open raw data of kind `source` in `raw_dir` (a folder; for csv/parquet also a single file)."""
    raw_dir = Path(raw_dir)
    if not raw_dir.exists():
        raise RawDataError(f"raw data for {source!r} not found: {raw_dir} does not exist")
    if source in ("tweeteval_offensive", "tweeteval_hate"):
        return open_tweeteval(source, raw_dir)
    if source == "davidson2017":
        return open_davidson(raw_dir)
    if source in ("csv", "parquet"):
        if not text_column or not label_column:
            raise RawDataError(f"source {source!r} needs --text-column and --label-column")
        return open_table(raw_dir, source, text_column, label_column)
    raise RawDataError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")


# ---- several sources --------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtraTraining:
    """Training rows from another source: its train split, every label mapped to one of ours."""

    source: str
    raw_dir: Path
    label_map: dict[str, str]

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "label_map": dict(self.label_map)}

    @classmethod
    def parse(cls, text: str, datasets_dir: Path) -> ExtraTraining:
        """`SOURCE:FROM=TO,...` (raw files in `datasets_dir/SOURCE`), the form `--add-train` takes."""
        source, separator, mapping = text.partition(":")
        if not separator or source not in SOURCES:
            raise RawDataError(f"--add-train {text!r} must be SOURCE:FROM=TO,... with SOURCE one of "
                               f"{', '.join(SOURCES)}")
        return cls(source, datasets_dir / source, parse_label_map(mapping.split(",")))


# ---- TweetEval --------------------------------------------------------------------------------

def open_tweeteval(kind: str, raw_dir: Path) -> Source:
    label_names = read_tweeteval_mapping(raw_dir / "mapping.txt")
    files = [raw_dir / "mapping.txt"]
    for stem in _TWEETEVAL_FILE_SPLITS.values():
        for path in (raw_dir / f"{stem}_text.txt", raw_dir / f"{stem}_labels.txt"):
            if not path.is_file():
                raise RawDataError(f"missing raw file {path}")
            files.append(path)
    return Source(kind, raw_dir, files, label_names, official_splits=True, options={"reader": "tweeteval"})


def _tweeteval_batches(source: Source, rows: int) -> Iterator[RawBatch]:
    for split_index, (split, stem) in enumerate(_TWEETEVAL_FILE_SPLITS.items()):
        text_path, label_path = source.raw_dir / f"{stem}_text.txt", source.raw_dir / f"{stem}_labels.txt"
        texts, labels = read_lines(text_path), read_lines(label_path)
        if len(texts) != len(labels):
            raise RawDataError(f"{text_path.name} has {len(texts)} lines but {label_path.name} has "
                               f"{len(labels)}: each text line needs exactly one label line")
        values = [_parse_label(value, label_path, line, len(source.label_names))
                  for line, value in enumerate(labels, start=1)]
        for begin in range(0, len(texts), rows):
            end = min(begin + rows, len(texts))
            yield RawBatch([f"{split}-{line}" for line in range(begin + 1, end + 1)], texts[begin:end],
                           np.asarray(values[begin:end], dtype=np.int64), np.full(end - begin, split_index, np.int8))


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file split on "\\n" only (str.splitlines would also split on e.g. U+2028)."""
    if not path.is_file():
        raise RawDataError(f"missing raw file {path}")
    text = path.read_text(encoding="utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    return [line.rstrip("\r") for line in text.split("\n")] if text else []


def read_tweeteval_mapping(path: Path) -> list[str]:
    """`mapping.txt`: lines `<index>\\t<name>`, indices 0..K-1."""
    names: dict[int, str] = {}
    for line in read_lines(path):
        if not line.strip():
            continue
        index, _, name = line.partition("\t")
        if not name or not index.strip().isdigit():
            raise RawDataError(f"{path}: expected '<index><TAB><name>' lines, got {line!r}")
        names[int(index)] = name.strip()
    if sorted(names) != list(range(len(names))) or len(names) < 2:
        raise RawDataError(f"{path}: label indices must be 0..K-1 with K >= 2, got {sorted(names)}")
    return [names[index] for index in range(len(names))]


def _parse_label(value: str, path: Path, line: int, num_labels: int) -> int:
    value = value.strip()
    if not value.isdigit() or int(value) >= num_labels:
        raise RawDataError(f"{path.name} line {line}: label {value!r} is not an index in 0..{num_labels - 1}")
    return int(value)


# ---- Davidson 2017 ----------------------------------------------------------------------------

def open_davidson(raw_dir: Path) -> Source:
    path = raw_dir / "labeled_data.csv"
    if not path.is_file():
        raise RawDataError(f"missing raw file {path}")
    columns = _csv_header(path)
    for column in ("class", "tweet"):
        if column not in columns:
            raise RawDataError(f"{path} has no {column!r} column (columns: {columns})")
    id_column = columns[0] if columns[0].startswith("Unnamed") or columns[0] == "" else None
    return Source("davidson2017", raw_dir, [path], list(DAVIDSON_LABELS), official_splits=False, split_key="id",
                  options={"reader": "davidson2017", "path": path, "id_column": id_column})


def _davidson_batches(source: Source, rows: int) -> Iterator[RawBatch]:
    # `cybulde --help` imports this module: pyarrow only when data is read
    import pyarrow as pa

    path, id_column = source.options["path"], source.options["id_column"]
    wanted = ["class", "tweet"] + ([id_column] if id_column is not None else [])
    position = 0
    for batch in _csv_batches(path, wanted, {"class": pa.string(), "tweet": pa.string(),
                                             **({id_column: pa.string()} if id_column is not None else {})}, rows):
        count = batch.num_rows
        classes = batch.column("class").to_pylist()
        if not all(value is not None and value.strip() in ("0", "1", "2") for value in classes):
            raise RawDataError(f"{path}: 'class' must be 0, 1 or 2")
        ids = (batch.column(id_column).to_pylist() if id_column is not None
               else [str(row) for row in range(position, position + count)])
        row_ids = [f"row-{value}" for value in ids]
        texts = [text or "" for text in batch.column("tweet").to_pylist()]
        yield RawBatch(row_ids, texts, np.asarray([int(value) for value in classes], dtype=np.int64),
                       np.full(count, BY_HASH, np.int8), keys=row_ids)
        position += count


# ---- generic CSV / Parquet --------------------------------------------------------------------

def open_table(raw: Path, kind: str, text_column: str, label_column: str) -> Source:
    files = {None: raw} if raw.is_file() else {split: _find_split_file(raw, split, kind) for split in SPLITS}
    for path in files.values():
        columns = _csv_header(path) if kind == "csv" else _parquet_columns(path)
        for column in (text_column, label_column):
            if column not in columns:
                raise RawDataError(f"{path} has no column {column!r} (columns: {columns})")
    values: set[str] = set()
    for path in files.values():
        values |= _distinct_labels(path, kind, label_column)
    numeric = all(value.lstrip("-").isdigit() for value in values)
    label_names = sorted(values, key=int) if numeric else sorted(values)
    if len(label_names) < 2:
        raise RawDataError(f"need at least 2 distinct labels, found {label_names}")
    options = {"reader": "table-file" if raw.is_file() else "table-folder", "files": files, "format": kind,
               "text_column": text_column, "label_column": label_column}
    if raw.is_file():
        return Source(kind, raw.parent, [raw], label_names, official_splits=False, split_key="text", options=options)
    return Source(kind, raw, list(files.values()), label_names, official_splits=True, options=options)


def _table_file_batches(source: Source, rows: int) -> Iterator[RawBatch]:
    yield from _table_batches(source, source.options["files"][None], BY_HASH, "row-", rows)


def _table_folder_batches(source: Source, rows: int) -> Iterator[RawBatch]:
    for split_index, split in enumerate(SPLITS):
        yield from _table_batches(source, source.options["files"][split], split_index, f"{split}-", rows)


def _table_batches(source: Source, path: Path, split: int, id_prefix: str, rows: int) -> Iterator[RawBatch]:
    text_column, label_column = source.options["text_column"], source.options["label_column"]
    index = {name: position for position, name in enumerate(source.label_names)}
    position = 0
    for batch in _table_column_batches(path, source.options["format"], [text_column, label_column], rows):
        count = batch.num_rows
        ids = [f"{id_prefix}{row}" for row in range(position, position + count)]
        texts = [text or "" for text in batch.column(0).to_pylist()]
        labels = np.asarray([index[value] for value in _label_strings(batch.column(1), path, label_column)],
                            dtype=np.int64)
        yield RawBatch(ids, texts, labels, np.full(count, split, np.int8), keys=texts if split == BY_HASH else None)
        position += count


def _table_column_batches(path: Path, kind: str, columns: list[str], rows: int) -> Iterator[Any]:
    """Record batches of `columns` (in that order; text as strings), at most `rows` rows each."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "csv":
        batches = _csv_batches(path, columns, {name: pa.string() for name in columns}, rows)
    else:
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns)
        except Exception as error:
            raise RawDataError(f"cannot read {path} as parquet: {error}") from error
    try:
        for batch in batches:
            arrays = [batch.column(batch.schema.get_field_index(name)) for name in columns]
            arrays[0] = pc.cast(arrays[0], pa.string())
            yield pa.RecordBatch.from_arrays(arrays, names=columns)
    except RawDataError:
        raise
    except Exception as error:  # pyarrow's parse errors name the row; keep them on one line
        raise RawDataError(f"cannot read {path} as {kind}: {str(error).splitlines()[0]}") from error


def _label_strings(column: Any, path: Path, label_column: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pc.cast(column, pa.string()).to_pylist() if column.type != pa.string() else column.to_pylist()
    if any(value is None or value == "" for value in values):
        raise RawDataError(f"{path}: column {label_column!r} has empty labels")
    return values


def _distinct_labels(path: Path, kind: str, label_column: str) -> set[str]:
    values: set[str] = set()
    for batch in _table_column_batches(path, kind, [label_column], 1 << 16):
        values.update(_label_strings(batch.column(0), path, label_column))
    return values


def _csv_batches(path: Path, columns: list[str], types: dict[str, Any], rows: int) -> Iterator[Any]:
    """pyarrow's streaming CSV reader (quoted newlines allowed), re-cut into batches of <= `rows`."""
    import pyarrow.csv as pacsv

    try:
        reader = pacsv.open_csv(
            path, read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES, use_threads=True),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=columns, column_types=types,
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
        for batch in reader:
            for begin in range(0, batch.num_rows, rows):
                yield batch.slice(begin, rows)
    except Exception as error:
        raise RawDataError(f"cannot read {path} as csv: {str(error).splitlines()[0]}") from error


def _csv_header(path: Path) -> list[str]:
    import pyarrow.csv as pacsv

    try:
        reader = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                                read_options=pacsv.ReadOptions(block_size=1 << 20))
        return list(reader.schema.names)
    except Exception as error:
        raise RawDataError(f"cannot read {path} as csv: {str(error).splitlines()[0]}") from error


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except Exception as error:
        raise RawDataError(f"cannot read {path} as parquet: {error}") from error


def _find_split_file(folder: Path, split: str, kind: str) -> Path:
    for stem in _SPLIT_FILE_STEMS[split]:
        path = folder / f"{stem}.{kind}"
        if path.is_file():
            return path
    expected = " or ".join(f"{stem}.{kind}" for stem in _SPLIT_FILE_STEMS[split])
    raise RawDataError(f"{folder} is a folder, so it needs one file per split; missing {expected} "
                       f"(or pass the path of a single {kind} file to split it 80/10/10)")
