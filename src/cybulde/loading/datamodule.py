"""A Lightning DataModule over a fetched (or published) dataset version's Parquet splits.

Texts are already tokenized, so the training loop only pads: each batch is padded to its own
longest row (dynamic padding). A split's token ids and labels are decoded once from its Parquet
shards into an uncompressed Arrow IPC file in a cache (`.cybulde/cache/tokens/`, keyed by the
shards' sha256, written atomically by whichever rank gets there first while the others wait on a
file lock) and memory-mapped (`MappedSplit`): rows are slices of the mapped buffers, so the ranks
of one machine share the page cache and a rank's own memory does not grow with the dataset (a few
bytes per row: lengths and the epoch's order). Texts and ids stay in the Parquet files; they are
read only when asked for (`split_ids`, `split_texts`: evaluation outputs).

A multi-label version (`manifest.is_multilabel`) caches, instead of the label, its rows' answer
matrix (`labels`, one int8 per question: 1, 0 or -1 missing) and source index (`source`, a position
in `manifest.source_names`); its batches carry `labels` int64 `[B, Q]` and `source` int64 `[B]`.
A single-label version's cache file, key and batches are those of before.

Training batches are made by `ShardedBatchSampler`:

- every epoch, all ranks draw the same seeded permutation (seed + epoch) of the training rows;
- with several sources and a `source_temperature` T other than 1, that permutation is instead an
  epoch of the same number of rows drawn with temperature sampling over the sources: source s gets
  a share p(s) ∝ n_s^(1/T) of the epoch's rows (rounded to whole rows by largest remainders), its
  rows taken in a seeded order, cycling through fresh orders when its share exceeds its rows, and
  all of them shuffled together. T = 1 is exactly the plain permutation; T > 1 flattens the shares
  towards uniform, T < 1 sharpens them;
- with `group_by_length`, the permutation is cut into mega-chunks of `batch_size * world_size *
  MEGA_CHUNK_STEPS` rows and each chunk is sorted by length, so rows of similar length share a batch;
- rows are cut into global steps of `batch_size * world_size` rows, each step into `world_size`
  equal per-rank batches (rank r takes the r-th), and the order of the steps is shuffled;
- the permutation is first padded by repeating its first rows up to a multiple of `world_size`,
  so every rank gets the same number of rows and of batches (like `DistributedSampler`).

The shard of a rank is therefore a function of (seed, epoch, world_size, rank) only. The Trainer
must be created with `use_distributed_sampler=False`; Lightning calls `set_epoch` on the
sampler each epoch. A resumed training passes `start_epoch` (loader workers draw their first
batches before Lightning's first `set_epoch`) and, resumed mid-epoch, `start_batch`: the first
epoch iterated skips the batches it had already trained on.

Validation during training (`val_dataloader`) is sharded by `EvalShardSampler`: rank r scores rows
r, r + world_size, r + 2 * world_size, ... (longest first, to pad little), so every row is scored
exactly once, with no padding rows; ranks may get one row, and so one batch, more than others. The
module's metrics sum their states over the ranks. `eval_dataloader(split)` (the validate and test
stages) is unsharded and batches the rows shortest first, as `predict` and the served model do.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from torch.utils.data import DataLoader

from cybulde.config.paths import project_root
from cybulde.files import write_file_atomically
from cybulde.registry.errors import DataError
from cybulde.registry.manifest import SPLITS, Manifest
from cybulde.registry.splits import read_split_columns, split_paths
from cybulde.text.batching import PadCollator, length_sorted_batches

MEGA_CHUNK_STEPS = 50
TOKEN_CACHE_FORMAT = "input_ids+label/arrow-ipc/v2"
MULTILABEL_CACHE_FORMAT = "input_ids+labels+source/arrow-ipc/v1"  # a multi-label version's cache
TOKEN_CACHE_DIR = Path(".cybulde") / "cache" / "tokens"  # under the project root by default
_CACHE_BATCH_ROWS = 1 << 16


def token_id_type(vocab_size: int) -> str:
    """The narrowest type that holds every token id: half the mapped bytes of int32 for vocabularies
    up to 65,536 (MiniLM's has 30,522)."""
    return "uint16" if vocab_size <= 1 << 16 else "int32"


def token_cache_path(cache_dir: Path, split: str, shard_sha256s: list[str], id_type: str,
                     source_names: list[str] | None = None) -> Path:
    """Where the decoded tokens of a split with these shards are cached (a content key).

    `source_names` (a multi-label version's, in manifest order) selects the multi-label layout; the
    key of a single-label split is unchanged by it.
    """
    fields: dict[str, Any] = {"format": TOKEN_CACHE_FORMAT, "split": split, "shards": shard_sha256s, "ids": id_type}
    if source_names is not None:
        fields.update(format=MULTILABEL_CACHE_FORMAT, sources=list(source_names))
    key = json.dumps(fields, sort_keys=True)
    return cache_dir / f"{split}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.arrow"


def ensure_token_cache(target: Path, parquet_paths: list[Path], id_type: str = "int32",
                       source_names: list[str] | None = None, num_questions: int = 0) -> Path:
    """Write `target` (input_ids as `id_type` and label of the Parquet files, in order) unless it exists;
    with `source_names`, a multi-label split's answer matrix of `num_questions` columns and source
    indices instead of the label.

    One process converts, under an exclusive lock; processes that wait on the lock find the file
    done. The file appears whole (written under a temporary name, then renamed), so a crash
    leaves no partial cache. Memory: one batch of `_CACHE_BATCH_ROWS` rows at a time.
    """
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not target.is_file():
                write_file_atomically(target, lambda temporary: _write_token_file(
                    temporary, parquet_paths, id_type, source_names, num_questions))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _write_token_file(path: Path, parquet_paths: list[Path], id_type: str,
                      source_names: list[str] | None = None, num_questions: int = 0) -> None:
    ids_type = pa.list_(getattr(pa, id_type)())
    if source_names is None:
        schema = pa.schema([("input_ids", ids_type), ("label", pa.int64())])
        columns = ["input_ids", "label"]

        def convert(batch: pa.RecordBatch) -> pa.RecordBatch:
            return batch.cast(schema)
    else:
        schema = pa.schema([("input_ids", ids_type), ("labels", pa.list_(pa.int8(), num_questions)),
                            ("source", pa.int16())])
        columns = ["input_ids", "labels", "source"]

        def convert(batch: pa.RecordBatch) -> pa.RecordBatch:
            return _multilabel_batch(batch, schema, source_names, num_questions)
    pending: list[Any] = []
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        def flush() -> None:
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema=schema).combine_chunks(),
                                   max_chunksize=None)
                pending.clear()

        for parquet in parquet_paths:
            for batch in pq.ParquetFile(parquet).iter_batches(batch_size=1 << 16, columns=columns):
                pending.append(convert(batch))
                if sum(part.num_rows for part in pending) >= _CACHE_BATCH_ROWS:
                    flush()
        flush()
    pa.default_memory_pool().release_unused()  # the decoding buffers: this rank keeps training


def _multilabel_batch(batch: pa.RecordBatch, schema: pa.Schema, source_names: list[str],
                      num_questions: int) -> pa.RecordBatch:
    """A Parquet batch of a multi-label split (`labels` list<int8>, `source` string) in the cache's
    layout: fixed-size answer rows and source indices. A row with another number of answers or a
    source the manifest does not name is a `DataError`."""
    labels = batch.column("labels")
    lengths = np.asarray(pc.list_value_length(labels).fill_null(-1))
    if len(lengths) and (lengths != num_questions).any():
        row = int(np.flatnonzero(lengths != num_questions)[0])
        raise DataError(f"a row of a multi-label split has {lengths[row]} answers, the version has "
                        f"{num_questions} questions")
    sources = batch.column("source")
    indices = pc.index_in(sources, value_set=pa.array(source_names, pa.string()))
    if indices.null_count:
        unknown = sorted(set(pc.filter(sources, pc.is_null(indices)).to_pylist()), key=str)
        raise DataError(f"rows of sources {unknown} that the manifest's source_names {source_names} do not name")
    answers = pa.FixedSizeListArray.from_arrays(labels.flatten().cast(pa.int8()), num_questions)
    return pa.RecordBatch.from_arrays([batch.column("input_ids").cast(schema.field("input_ids").type), answers,
                                       indices.cast(pa.int16())], schema=schema)


class MappedSplit:
    """One split's token ids and labels (a multi-label split's answer matrix and source indices),
    memory-mapped from its token cache file (see the module docstring). Picklable: DataLoader workers
    map the file again rather than copy it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        reader = pa.ipc.open_file(pa.memory_map(str(self.path), "r"))
        self.is_multilabel = "source" in reader.schema.names
        self.num_questions = reader.schema.field("labels").type.list_size if self.is_multilabel else 0
        self._values: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []  # [rows] labels, or [rows, Q] answers of a multi-label split
        self._sources: list[np.ndarray] = []  # multi-label splits only
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index)
            ids, labels = batch.column(0), batch.column(1)
            # the offsets buffer itself (`ids.offsets` would copy it into this process's memory)
            self._offsets.append(np.frombuffer(ids.buffers()[1], dtype=np.int32, count=len(ids) + 1,
                                               offset=ids.offset * 4))
            self._values.append(ids.values.to_numpy(zero_copy_only=True))
            if self.is_multilabel:
                answers = labels.flatten().to_numpy(zero_copy_only=True)  # zero-copy: no nulls
                self._labels.append(answers.reshape(len(labels), self.num_questions))
                self._sources.append(batch.column(2).to_numpy(zero_copy_only=True))
            else:
                self._labels.append(labels.to_numpy(zero_copy_only=True))
        sizes = [len(labels) for labels in self._labels]
        self._starts = np.cumsum([0, *sizes])[:-1].astype(np.int64)
        self.lengths = (np.concatenate([np.diff(offsets) for offsets in self._offsets]).astype(np.int32)
                        if sizes else np.zeros(0, np.int32))

    @property
    def labels(self) -> np.ndarray:
        """All labels, `[rows]` (a multi-label split: the answers, `[rows, Q]` with -1 missing); a copy,
        for evaluation, not for the training loop."""
        if self._labels:
            return np.concatenate(self._labels).astype(np.int64)
        return np.zeros((0, self.num_questions) if self.is_multilabel else 0, np.int64)

    @property
    def sources(self) -> np.ndarray | None:
        """Each row's source index (into the manifest's `source_names`), or None for a single-label split."""
        if not self.is_multilabel:
            return None
        return np.concatenate(self._sources).astype(np.int64) if self._sources else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.lengths):
            raise IndexError(f"row {index} out of range for a split of {len(self.lengths)} rows")
        chunk = int(np.searchsorted(self._starts, index, side="right")) - 1
        row = index - int(self._starts[chunk])
        offsets = self._offsets[chunk]
        input_ids = self._values[chunk][offsets[row]:offsets[row + 1]]
        if self.is_multilabel:
            return {"input_ids": input_ids, "labels": self._labels[chunk][row],
                    "source": self._sources[chunk][row], "index": index}
        return {"input_ids": input_ids, "label": self._labels[chunk][row], "index": index}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])


class _EpochCounter:
    """Lightning calls `set_epoch` on `dataloader.batch_sampler.sampler`: this object is that."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def source_shares(counts: np.ndarray, temperature: float) -> np.ndarray:
    """p(s) ∝ n_s^(1/T) over sources with `counts` rows (a source without rows gets 0)."""
    counts = np.asarray(counts, dtype=np.float64)
    if temperature <= 0:
        raise ValueError(f"source_temperature must be > 0, got {temperature}")
    present = counts > 0
    # n^(1/T) as exp(log(n) / T) relative to the largest source: no overflow for small T
    logs = np.where(present, np.log(np.where(present, counts, 1.0)), -np.inf) / temperature
    weights = np.where(present, np.exp(logs - logs[present].max()), 0.0)
    return weights / weights.sum()


def rows_per_source(counts: np.ndarray, temperature: float, total: int) -> np.ndarray:
    """`total` rows split over the sources by `source_shares`, rounded by largest remainders (ties:
    the lower source index), so the numbers sum to `total` exactly."""
    exact = source_shares(counts, temperature) * total
    rows = np.floor(exact).astype(np.int64)
    remainders = exact - rows
    for source in np.argsort(-remainders, kind="stable")[: total - int(rows.sum())]:
        rows[source] += 1
    return rows


class ShardedBatchSampler:
    """Per-rank batches of row positions for one epoch; see the module docstring.

    `sources` (each row's source index) and `source_temperature` enable temperature sampling over
    the sources; without them, or with T = 1, an epoch is a plain permutation of the rows.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, world_size: int = 1, rank: int = 0,
                 group_by_length: bool = False, mega_chunk_steps: int = MEGA_CHUNK_STEPS,
                 start_epoch: int = 0, start_batch: int = 0, sources: np.ndarray | None = None,
                 source_temperature: float = 1.0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(lengths) == 0:
            raise ValueError("cannot batch an empty split")
        if start_epoch < 0 or start_batch < 0:
            raise ValueError(f"start_epoch and start_batch must be >= 0, got {start_epoch} and {start_batch}")
        if not source_temperature > 0:
            raise ValueError(f"source_temperature must be > 0, got {source_temperature}")
        if sources is not None and len(sources) != len(lengths):
            raise ValueError(f"{len(sources)} source indices for {len(lengths)} rows")
        self.lengths = np.asarray(lengths)
        self.sources = None if sources is None else np.asarray(sources, dtype=np.int64)
        self.source_temperature = float(source_temperature)
        self.batch_size, self.seed = batch_size, seed
        self.world_size, self.rank = world_size, rank
        self.group_by_length, self.mega_chunk_steps = group_by_length, mega_chunk_steps
        self.sampler = _EpochCounter(start_epoch)
        self._start_batch = start_batch  # consumed by the first iteration (a resumed epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def rows_per_rank(self) -> int:
        return -(-len(self.lengths) // self.world_size)

    def __len__(self) -> int:
        return -(-self.rows_per_rank // self.batch_size)

    def global_steps(self) -> list[np.ndarray]:
        """This epoch's steps, each the rows of all ranks (rank r's batch is the r-th equal part)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        order = self._tempered_order(rng) if self.tempers_sources else rng.permutation(len(self.lengths))
        padded_size = self.rows_per_rank * self.world_size
        order = np.resize(order, padded_size)  # repeats the first rows to even out the ranks
        step_rows = self.batch_size * self.world_size
        if self.group_by_length:
            chunk = step_rows * self.mega_chunk_steps
            order = np.concatenate([
                part[np.argsort(-self.lengths[part], kind="stable")]
                for part in np.split(order, range(chunk, padded_size, chunk))])
        steps = np.split(order, range(step_rows, padded_size, step_rows))
        return [steps[position] for position in rng.permutation(len(steps))]

    @property
    def tempers_sources(self) -> bool:
        """Whether epochs are drawn by temperature over several sources (else: a plain permutation)."""
        return (self.sources is not None and self.source_temperature != 1.0
                and len(np.unique(self.sources)) > 1)

    def _tempered_order(self, rng: np.random.Generator) -> np.ndarray:
        """An epoch of `len(lengths)` rows with `rows_per_source` rows of each source, shuffled."""
        assert self.sources is not None
        counts = np.bincount(self.sources)
        quotas = rows_per_source(counts, self.source_temperature, len(self.lengths))
        picked = []
        for source, quota in enumerate(quotas):
            members = np.flatnonzero(self.sources == source)
            if quota == 0:
                continue
            rounds = -(-int(quota) // len(members))  # whole passes over the source, each in a fresh order
            picked.append(np.concatenate([members[rng.permutation(len(members))] for _ in range(rounds)])[:quota])
        order = np.concatenate(picked)
        return order[rng.permutation(len(order))]

    def __iter__(self) -> Iterator[list[int]]:
        start, self._start_batch = self._start_batch, 0
        for step in self.global_steps()[start:]:
            yield np.split(step, self.world_size)[self.rank].tolist()


class EvalShardingError(DataError, ValueError):
    """An evaluation split too small to give every rank at least one row."""


class EvalShardSampler:
    """Batches of one rank's share of an evaluation split: rows `rank::world_size`, longest first.

    Unlike `DistributedSampler`, nothing is repeated to even out the ranks: the union of all ranks'
    batches is every row exactly once.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, world_size: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(lengths) < world_size:
            raise EvalShardingError(f"cannot shard an evaluation split of {len(lengths)} rows over {world_size} "
                                    f"ranks: every rank needs at least one row; train with fewer ranks")
        lengths = np.asarray(lengths)
        rows = np.arange(rank, len(lengths), world_size)
        self.rows = rows[np.argsort(-lengths[rows], kind="stable")]
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, len(self.rows), self.batch_size):
            yield self.rows[start:start + self.batch_size].tolist()


class TextDataModule(pl.LightningDataModule):
    """Batches of a tokenized dataset version; see the module docstring for sharding semantics.

    `world_size`/`rank` are used when no Trainer is attached; under a Trainer its world size and
    global rank are used. `manifest` is the version's manifest if the caller has already read it.
    """

    def __init__(self, data_dir: str | Path, batch_size: int, seed: int, group_by_length: bool = True,
                 num_workers: int = 0, world_size: int = 1, rank: int = 0,
                 eval_batch_size: int | None = None, cache_dir: str | Path | None = None,
                 start_epoch: int = 0, start_batch: int = 0, manifest: Manifest | None = None,
                 source_temperature: float = 1.0) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.manifest = manifest if manifest is not None else Manifest.load(self.data_dir)
        self.label_names = list(self.manifest.label_names)
        self.num_labels = self.manifest.num_labels
        self.is_multilabel = self.manifest.is_multilabel
        self.source_names = list(self.manifest.source_names or []) if self.is_multilabel else None
        self.source_temperature = source_temperature
        self.pad_token_id = self.manifest.tokenizer.pad_token_id
        self.batch_size, self.seed, self.group_by_length = batch_size, seed, group_by_length
        self.num_workers = num_workers
        self.world_size, self.rank = world_size, rank
        self.eval_batch_size = eval_batch_size or batch_size
        self.start_epoch = start_epoch  # the first training epoch (a resumed training's)
        self.start_batch = start_batch  # batches of the first training epoch already trained on
        self._splits: dict[str, MappedSplit] = {}

    # ---- data ---------------------------------------------------------------------------------

    def split(self, name: str) -> MappedSplit:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        if name not in self._splits:
            paths = split_paths(self.data_dir, name, self.manifest)
            shards = [shard.sha256 for shard in self.manifest.split_shards(name)]
            id_type = token_id_type(self.manifest.tokenizer.vocab_size)
            target = token_cache_path(self.cache_dir, name, shards, id_type, self.source_names)
            cache = ensure_token_cache(target, paths, id_type, self.source_names, self.num_labels)
            self._splits[name] = MappedSplit(cache)
        return self._splits[name]

    def split_labels(self, split: str) -> np.ndarray:
        """`[rows]` labels, or a multi-label split's `[rows, Q]` answers (-1 missing)."""
        return self.split(split).labels

    def split_sources(self, split: str) -> np.ndarray | None:
        """Each row's index into `source_names` (multi-label versions), else None."""
        return self.split(split).sources

    def split_ids(self, split: str) -> list[str]:
        return [str(value) for value in read_split_columns(self.data_dir, split, ("id",))["id"]]

    def split_texts(self, split: str) -> list[str]:
        return read_split_columns(self.data_dir, split, ("text",))["text"]

    def setup(self, stage: str | None = None) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.world_size, self.rank = trainer.world_size, trainer.global_rank

    # ---- loaders ------------------------------------------------------------------------------

    def train_batch_sampler(self) -> ShardedBatchSampler:
        train = self.split("train")
        return ShardedBatchSampler(train.lengths, self.batch_size, self.seed, self.world_size,
                                   self.rank, self.group_by_length, start_epoch=self.start_epoch,
                                   start_batch=self.start_batch, sources=train.sources,
                                   source_temperature=self.source_temperature)

    def train_dataloader(self):  # noqa: ANN201 - torch DataLoader
        return DataLoader(self.split("train"), batch_sampler=self.train_batch_sampler(),
                          collate_fn=PadCollator(self.pad_token_id), num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self):  # noqa: ANN201
        """This rank's share of the validation split (see `EvalShardSampler`)."""
        split = self.split("validation")
        sampler = EvalShardSampler(split.lengths, self.eval_batch_size, self.world_size, self.rank)
        return DataLoader(split, batch_sampler=sampler, collate_fn=PadCollator(self.pad_token_id),
                          num_workers=self.num_workers)

    def test_dataloader(self):  # noqa: ANN201
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str, batch_size: int | None = None):  # noqa: ANN201
        """All rows of `split`, unsharded (every rank sees all of them), shortest first in batches as
        `predict` makes them (`length_sorted_batches`); each batch's `index` says where its rows go."""
        rows = self.split(split)
        return DataLoader(rows, batch_sampler=length_sorted_batches(rows.lengths, batch_size or self.eval_batch_size),
                          collate_fn=PadCollator(self.pad_token_id), num_workers=self.num_workers)


def _default_cache_dir() -> Path:
    return project_root() / TOKEN_CACHE_DIR
