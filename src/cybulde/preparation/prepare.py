"""The per-batch work of a publish, and the writing of its output, in bounded memory.

`prepare_batch` turns a `RawBatch` into tokenized rows per split: it cleans each text (dropping the
empty ones, counted), gives each row its split, maps labels, and tokenizes. It is a pure function of
its arguments, so any engine may run it anywhere (in this process, a process pool, a Dask worker).
Its results are consumed in source order by `SplitWriter`s (one per split), which cut each split
into Parquet shards of `rows_per_shard` rows and row groups of `ROW_GROUP_ROWS`: the bytes depend
only on the sequence of rows, never on how the source was batched or which engine ran.

Split assignment of rows without an official split (`HASH_SPLIT`): the first 8 bytes of
sha256("<seed>:<key>") as an integer over 2**64 give u in [0, 1); u < 0.8 is train, u < 0.9
validation, else test. A row's split depends on its key and the seed only: not on the other rows,
their order, or how they are batched; adding rows to a dataset never moves an existing row to
another split. Every label is split 80/10/10 in expectation (stratification is approximated, each
label's split sizes vary binomially: about ±3·sqrt(0.09·n) rows for n rows of a label). The key is the
source's row id where it has one (Davidson), else the raw text (so exact duplicates share a split).

Summaries (label counts, token-length percentiles) come from exact integer histograms.

A part of a multi-label version (`PartPlan.answers`, see `cybulde.preparation.questions`) writes
rows `id, text, source, labels, input_ids`: `labels` holds the answers of the row's source label
to each question (1, 0, -1 missing). Its statistics count the source's own labels, from which
`multilabel_summary` derives the answers per source and question.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cybulde.files import sha256_file
from cybulde.preparation.sources import BY_HASH, RawBatch
from cybulde.registry.manifest import SPLITS, ShardInfo, SplitSummary, shard_name
from cybulde.text.cleaning import clean_text
from cybulde.text.tokenizer import backend_tokenizer, encode

HASH_SPLIT = "seeded-sha256/v1"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
_SPLIT_CUTS = tuple(np.uint64(int(bound * 2**64)) for bound in (0.8, 0.9))
ROW_GROUP_ROWS = 8192
PERCENTILES = (50, 90, 95, 99)
_TOKENIZERS: dict[str, Any] = {}  # tokenizer.json sha256 -> tokenizers.Tokenizer, per process


def split_record(seed: int, key: str | None) -> dict[str, Any]:
    """How the rows of a source were split, as the manifest records it."""
    if key is None:
        return {"method": "official"}
    return {"method": HASH_SPLIT, "key": key, "seed": seed,
            "fractions": dict(zip(SPLITS, SPLIT_FRACTIONS, strict=True))}


def hash_unit(seed: int, keys: list[str], salt: str = "") -> np.ndarray:
    """uint64 of the first 8 bytes of sha256("<seed>:<salt><key>") for each key (see module docstring)."""
    prefix = f"{seed}:{salt}"
    digests = b"".join(hashlib.sha256(f"{prefix}{key}".encode()).digest()[:8] for key in keys)
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def hash_splits(seed: int, keys: list[str]) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) of rows with these keys."""
    units = hash_unit(seed, keys)
    return ((units >= _SPLIT_CUTS[0]).astype(np.int8) + (units >= _SPLIT_CUTS[1]).astype(np.int8))


@dataclass(frozen=True)
class PartPlan:
    """How the rows of one source become rows of the dataset."""

    seed: int
    keep_splits: tuple[int, ...] = (0, 1, 2)  # extra training data: (0,) (its train split only)
    label_map: tuple[int, ...] | None = None  # source label index -> dataset label index
    id_prefix: str = ""
    # multi-label versions: source label index -> its answer to each question (1, 0, -1 missing)
    answers: tuple[tuple[int, ...], ...] | None = None
    source_name: str = ""  # the `source` column of a multi-label row


def assign(batch: RawBatch, plan: PartPlan) -> tuple[list[str], np.ndarray]:
    """(cleaned texts, split of each row): official, or drawn from the row's key."""
    cleaned = [clean_text(text) for text in batch.texts]
    splits = batch.splits.copy()
    by_hash = np.flatnonzero(splits == BY_HASH)
    if len(by_hash):
        keys = batch.keys or batch.ids
        splits[by_hash] = hash_splits(plan.seed, [keys[i] for i in by_hash.tolist()])
    return cleaned, splits


@dataclass
class SplitStats:
    """What a split's manifest summary needs, mergeable across batches (exact integer histograms)."""

    num_labels: int
    label_counts: np.ndarray = field(init=False)
    length_counts: np.ndarray = field(init=False)  # index: token count before truncation
    truncated_rows: int = 0
    dropped_empty_rows: int = 0

    def __post_init__(self) -> None:
        self.label_counts = np.zeros(self.num_labels, dtype=np.int64)
        self.length_counts = np.zeros(0, dtype=np.int64)

    @property
    def rows(self) -> int:
        return int(self.label_counts.sum())

    def add(self, labels: np.ndarray, lengths: np.ndarray, max_length: int, dropped: int) -> None:
        self.label_counts += np.bincount(labels, minlength=self.num_labels)
        self.merge_lengths(np.bincount(lengths) if len(lengths) else np.zeros(0, np.int64))
        self.truncated_rows += int((lengths > max_length).sum())
        self.dropped_empty_rows += dropped

    def merge(self, other: SplitStats) -> None:
        self.label_counts += other.label_counts
        self.merge_lengths(other.length_counts)
        self.truncated_rows += other.truncated_rows
        self.dropped_empty_rows += other.dropped_empty_rows

    def merge_lengths(self, counts: np.ndarray) -> None:
        if len(counts) > len(self.length_counts):
            self.length_counts = np.pad(self.length_counts, (0, len(counts) - len(self.length_counts)))
        self.length_counts[: len(counts)] += counts

    def summary(self, label_names: list[str]) -> SplitSummary:
        return SplitSummary(rows=self.rows, label_counts=dict(zip(label_names, map(int, self.label_counts),
                                                                      strict=True)),
                            token_length_percentiles=histogram_percentiles(self.length_counts),
                            truncated_rows=self.truncated_rows, dropped_empty_rows=self.dropped_empty_rows)


def histogram_percentiles(counts: np.ndarray) -> dict[str, float]:
    """`PERCENTILES` (numpy's default linear method, rounded to 2 digits) and the max of the values
    that `counts` is the histogram of (counts[v] = how many times v occurs)."""
    total = int(counts.sum())
    if total == 0:
        return {}
    cumulative = np.cumsum(counts)

    def value_at(rank: int) -> float:  # the rank-th smallest value (0-based)
        return float(np.searchsorted(cumulative, rank, side="right"))

    result = {}
    for q in PERCENTILES:
        virtual = (total - 1) * (q / 100)
        below = int(np.floor(virtual))
        gamma = virtual - below
        low, high = value_at(below), value_at(min(below + 1, total - 1))
        # numpy's _lerp, so the figures equal np.percentile's bit for bit
        value = low + (high - low) * gamma if gamma < 0.5 else high - (high - low) * (1 - gamma)
        result[f"p{q}"] = round(value, 2)
    result["max"] = float(np.flatnonzero(counts)[-1])
    return result


@dataclass
class PreparedBatch:
    """`prepare_batch`'s result: per split, its rows as an Arrow record batch, and their stats."""

    tables: dict[int, Any]  # split index -> pyarrow.RecordBatch (id, text, label, input_ids)
    stats: dict[int, SplitStats]


def row_schema(multilabel: bool = False) -> Any:
    """The Parquet schema of a version's rows (single-label, or multi-label: see the module docstring)."""
    # `cybulde --help` imports this module: pyarrow only when data is read or written
    import pyarrow as pa

    if multilabel:
        return pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()),
                          ("labels", pa.list_(pa.int8())), ("input_ids", pa.list_(pa.int32()))])
    return pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.int64()),
                      ("input_ids", pa.list_(pa.int32()))])


def prepare_batch(batch: RawBatch, plan: PartPlan, tokenizer_json: str, max_length: int,
                  num_labels: int) -> PreparedBatch:
    """Clean, split, map labels and tokenize one batch (see the module docstring)."""
    import pyarrow as pa

    cleaned, splits = assign(batch, plan)
    nonempty = np.fromiter((bool(text) for text in cleaned), dtype=bool, count=len(cleaned))
    labels = batch.labels if plan.label_map is None else np.asarray(plan.label_map, np.int64)[batch.labels]
    tokenizer = _tokenizer(tokenizer_json)
    tables, stats = {}, {}
    for split in plan.keep_splits:
        in_split = splits == split
        rows = np.flatnonzero(in_split & nonempty)
        truncated, full_lengths = encode(tokenizer, [cleaned[i] for i in rows.tolist()], max_length)
        lengths = np.asarray(full_lengths, dtype=np.int64)
        picked = rows.tolist()
        ids = pa.array([plan.id_prefix + batch.ids[i] for i in picked], pa.string())
        texts = pa.array([batch.texts[i] for i in picked], pa.string())
        input_ids = pa.array(truncated, pa.list_(pa.int32()))
        if plan.answers is None:
            tables[split] = pa.RecordBatch.from_arrays([ids, texts, pa.array(labels[rows], pa.int64()), input_ids],
                                                       schema=row_schema())
        else:
            tables[split] = pa.RecordBatch.from_arrays(
                [ids, texts, pa.array([plan.source_name] * len(picked), pa.string()),
                 answer_lists(np.asarray(plan.answers, np.int8)[labels[rows]]), input_ids],
                schema=row_schema(multilabel=True))
        stats[split] = SplitStats(num_labels)
        stats[split].add(labels[rows], lengths, max_length, dropped=int((in_split & ~nonempty).sum()))
    return PreparedBatch(tables, stats)


def answer_lists(answers: np.ndarray) -> Any:
    """A `list<int8>` Arrow array of the rows of the int8 matrix `answers` [rows, questions]."""
    import pyarrow as pa

    rows, questions = answers.shape
    offsets = pa.array(np.arange(0, rows * questions + 1, questions, dtype=np.int32), pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(answers.reshape(-1), pa.int8()))


def multilabel_summary(stats: dict[str, SplitStats], answers: dict[str, np.ndarray],
                       questions: list[str]) -> SplitSummary:
    """One split of a multi-label version from each source's `stats` (counts of the source's own
    labels) and `answers` (int8 [source labels, questions], -1 missing): rows per source, yes/no/missing
    per source and question, and `label_counts` = the yes count of each question."""
    merged = SplitStats(0)
    for part in stats.values():
        merged.merge_lengths(part.length_counts)
        merged.truncated_rows += part.truncated_rows
        merged.dropped_empty_rows += part.dropped_empty_rows
    per_source = {}
    for source, part in stats.items():
        per_source[source] = {question: {name: int(part.label_counts[answers[source][:, column] == value].sum())
                                         for name, value in (("yes", 1), ("no", 0), ("missing", -1))}
                              for column, question in enumerate(questions)}
    return SplitSummary(
        rows=sum(part.rows for part in stats.values()),
        label_counts={question: sum(per_source[source][question]["yes"] for source in stats) for question in questions},
        token_length_percentiles=histogram_percentiles(merged.length_counts),
        truncated_rows=merged.truncated_rows, dropped_empty_rows=merged.dropped_empty_rows,
        source_rows={source: part.rows for source, part in stats.items()}, answers=per_source)


def _tokenizer(tokenizer_json: str) -> Any:
    """The tokenizer saved as `tokenizer_json`, parsed once per process."""
    key = hashlib.sha256(tokenizer_json.encode()).hexdigest()
    if key not in _TOKENIZERS:
        _TOKENIZERS.clear()
        _TOKENIZERS[key] = backend_tokenizer(tokenizer_json)
    return _TOKENIZERS[key]


class SplitWriter:
    """Writes one split's rows, in the order given, as Parquet shards in `folder`.

    Shards hold `rows_per_shard` rows (the last one fewer), row groups `ROW_GROUP_ROWS` rows (or what
    is left of the shard): at most one row group's rows plus one batch are held in memory. Shards are
    written under temporary names and renamed `<split>-NNNNN-of-MMMMM.parquet` by `close`.
    """

    def __init__(self, folder: Path, split: str, rows_per_shard: int, schema: Any = None) -> None:
        self.folder, self.split, self.rows_per_shard = folder, split, rows_per_shard
        self.schema = schema if schema is not None else row_schema()
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._writer: Any = None
        self._shard_rows = 0
        self._written: list[tuple[Path, int]] = []

    def add(self, batch: Any) -> None:
        if batch.num_rows:
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
        while self._pending_rows >= self._next_group_rows():
            self._write_group(self._next_group_rows())

    def close(self) -> list[ShardInfo]:
        """Write what is left and name the shards; a split without rows gets one empty shard."""
        while self._pending_rows:
            self._write_group(min(self._pending_rows, self._next_group_rows()))
        if self._writer is None and not self._written:
            self._open_shard()
        self._close_shard()
        shards = []
        for index, (path, rows) in enumerate(self._written):
            final = self.folder / shard_name(self.split, index, len(self._written))
            path.rename(final)
            shards.append(ShardInfo(final.name, rows, sha256_file(final)))
        return shards

    def _next_group_rows(self) -> int:
        return min(ROW_GROUP_ROWS, self.rows_per_shard - self._shard_rows)

    def _write_group(self, rows: int) -> None:
        import pyarrow as pa

        table = pa.Table.from_batches(self._pending, schema=self.schema)
        group, rest = table.slice(0, rows).combine_chunks(), table.slice(rows)
        self._pending = rest.combine_chunks().to_batches() if rest.num_rows else []
        self._pending_rows = rest.num_rows
        if self._writer is None:
            self._open_shard()
        self._writer.write_table(group, row_group_size=rows)
        self._shard_rows += rows
        if self._shard_rows == self.rows_per_shard:
            self._close_shard()

    def _open_shard(self) -> None:
        import pyarrow.parquet as pq

        path = self.folder / f".{self.split}-{len(self._written):05d}.partial"
        self._writer = pq.ParquetWriter(path, self.schema, compression="snappy")
        self._written.append((path, 0))

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        path, _ = self._written[-1]
        self._written[-1] = (path, self._shard_rows)
        self._writer, self._shard_rows = None, 0
