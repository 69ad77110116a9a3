"""A Lightning DataModule over a fetched (or published) dataset version's Parquet splits.

Texts are already tokenized, so the training loop only pads: each batch is padded to its own
longest row (dynamic padding). A split's token ids and labels are decoded once from its Parquet
shards into an uncompressed Arrow IPC file in a cache (`.cybulde/cache/tokens/`, keyed by the
shards' sha256, written atomically by whichever rank gets there first while the others wait on a
file lock) and memory-mapped (`MappedSplit`): rows are slices of the mapped buffers, so the ranks
of one machine share the page cache and a rank's own memory does not grow with the dataset (a few
bytes per row: lengths and the epoch's order). Texts and ids stay in the Parquet files; they are
read only when asked for (`split_ids`, `split_texts`: evaluation outputs).

Training batches are made by `ShardedBatchSampler`:

- every epoch, all ranks draw the same seeded permutation (seed + epoch) of the training rows;
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
stages) is ordered and unsharded.
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
import pyarrow.parquet as pq
from torch.utils.data import DataLoader

from cybulde.config.paths import project_root
from cybulde.files import write_file_atomically
from cybulde.registry.errors import DataError
from cybulde.registry.manifest import SPLITS, Manifest
from cybulde.registry.splits import read_split_columns, split_paths
from cybulde.text.batching import PadCollator

MEGA_CHUNK_STEPS = 50
TOKEN_CACHE_FORMAT = "input_ids+label/arrow-ipc/v2"
TOKEN_CACHE_DIR = Path(".cybulde") / "cache" / "tokens"  # under the project root by default
_CACHE_BATCH_ROWS = 1 << 16


def token_id_type(vocab_size: int) -> str:
    """The narrowest type that holds every token id: half the mapped bytes of int32 for vocabularies
    up to 65,536 (MiniLM's has 30,522)."""
    return "uint16" if vocab_size <= 1 << 16 else "int32"


def token_cache_path(cache_dir: Path, split: str, shard_sha256s: list[str], id_type: str) -> Path:
    """Where the decoded tokens of a split with these shards are cached (a content key)."""
    key = json.dumps({"format": TOKEN_CACHE_FORMAT, "split": split, "shards": shard_sha256s, "ids": id_type},
                     sort_keys=True)
    return cache_dir / f"{split}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.arrow"


def ensure_token_cache(target: Path, parquet_paths: list[Path], id_type: str = "int32") -> Path:
    """Write `target` (input_ids as `id_type` and label of the Parquet files, in order) unless it exists.

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
                write_file_atomically(target, lambda temporary: _write_token_file(temporary, parquet_paths, id_type))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _write_token_file(path: Path, parquet_paths: list[Path], id_type: str) -> None:
    schema = pa.schema([("input_ids", pa.list_(getattr(pa, id_type)())), ("label", pa.int64())])
    pending: list[Any] = []
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        def flush() -> None:
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema=schema).combine_chunks(),
                                   max_chunksize=None)
                pending.clear()

        for parquet in parquet_paths:
            for batch in pq.ParquetFile(parquet).iter_batches(batch_size=1 << 16, columns=["input_ids", "label"]):
                pending.append(batch.cast(schema))
                if sum(part.num_rows for part in pending) >= _CACHE_BATCH_ROWS:
                    flush()
        flush()
    pa.default_memory_pool().release_unused()  # the decoding buffers: this rank keeps training


class MappedSplit:
    """One split's token ids and labels, memory-mapped from its token cache file (see the module
    docstring). Picklable: DataLoader workers map the file again rather than copy it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        reader = pa.ipc.open_file(pa.memory_map(str(self.path), "r"))
        self._values: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index)
            ids, labels = batch.column(0), batch.column(1)
            # the offsets buffer itself (`ids.offsets` would copy it into this process's memory)
            self._offsets.append(np.frombuffer(ids.buffers()[1], dtype=np.int32, count=len(ids) + 1,
                                               offset=ids.offset * 4))
            self._values.append(ids.values.to_numpy(zero_copy_only=True))
            self._labels.append(labels.to_numpy(zero_copy_only=True))
        sizes = [len(labels) for labels in self._labels]
        self._starts = np.cumsum([0, *sizes])[:-1].astype(np.int64)
        self.lengths = (np.concatenate([np.diff(offsets) for offsets in self._offsets]).astype(np.int32)
                        if sizes else np.zeros(0, np.int32))

    @property
    def labels(self) -> np.ndarray:
        """All labels (a copy: for evaluation, not for the training loop)."""
        return np.concatenate(self._labels).astype(np.int64) if self._labels else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.lengths):
            raise IndexError(f"row {index} out of range for a split of {len(self.lengths)} rows")
        chunk = int(np.searchsorted(self._starts, index, side="right")) - 1
        row = index - int(self._starts[chunk])
        offsets = self._offsets[chunk]
        return {"input_ids": self._values[chunk][offsets[row]:offsets[row + 1]],
                "label": self._labels[chunk][row], "index": index}

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


class ShardedBatchSampler:
    """Per-rank batches of row positions for one epoch; see the module docstring."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, world_size: int = 1, rank: int = 0,
                 group_by_length: bool = False, mega_chunk_steps: int = MEGA_CHUNK_STEPS,
                 start_epoch: int = 0, start_batch: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(lengths) == 0:
            raise ValueError("cannot batch an empty split")
        if start_epoch < 0 or start_batch < 0:
            raise ValueError(f"start_epoch and start_batch must be >= 0, got {start_epoch} and {start_batch}")
        self.lengths = np.asarray(lengths)
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
        order = rng.permutation(len(self.lengths))
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
                 start_epoch: int = 0, start_batch: int = 0, manifest: Manifest | None = None) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.manifest = manifest if manifest is not None else Manifest.load(self.data_dir)
        self.label_names = list(self.manifest.label_names)
        self.num_labels = self.manifest.num_labels
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
            cache = ensure_token_cache(token_cache_path(self.cache_dir, name, shards, id_type), paths, id_type)
            self._splits[name] = MappedSplit(cache)
        return self._splits[name]

    def split_labels(self, split: str) -> np.ndarray:
        return self.split(split).labels

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
        return ShardedBatchSampler(self.split("train").lengths, self.batch_size, self.seed, self.world_size,
                                   self.rank, self.group_by_length, start_epoch=self.start_epoch,
                                   start_batch=self.start_batch)

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
        """All rows of `split` in order, unsharded (every rank sees all of them)."""
        return DataLoader(self.split(split), batch_size=batch_size or self.eval_batch_size, shuffle=False,
                          collate_fn=PadCollator(self.pad_token_id), num_workers=self.num_workers)


def _default_cache_dir() -> Path:
    return project_root() / TOKEN_CACHE_DIR
