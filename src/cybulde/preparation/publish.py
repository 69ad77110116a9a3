"""Publish a new dataset version: raw labeled data -> cleaned -> split -> tokenized -> registry.

Run once per version (it is not a pipeline stage): `cybulde publish --source tweeteval_offensive
--version v2`. The source is streamed in batches of `BATCH_ROWS` rows: each batch is cleaned, split
and tokenized (`cybulde.preparation.prepare.prepare_batch`, run by an engine: this machine's cores, or a
Dask cluster with `--engine dask`) and its rows are appended, in source order, to Parquet shards
of `--rows-per-shard` rows per split; label counts and token-length percentiles come from exact
histograms. Memory therefore stays bounded whatever the size of the source. Passes over the source
before that one, only when asked for: the rows of `--max-rows-per-split` (a stratified sample:
per split and label, the rows with the smallest seeded hash of their id, in label proportion), and
training a `--tokenizer wordpiece|bpe` on the train split. The version is staged in a local
temporary folder, then uploaded (`Registry.write_version`); versions are immutable.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from cybulde.errors import UsageError
from cybulde.files import sha256_file
from cybulde.preparation.engine import ENGINES, Engine, open_engine
from cybulde.preparation.labels import resolve_label_map
from cybulde.preparation.prepare import (
    ROW_GROUP_ROWS,
    PartPlan,
    SplitStats,
    SplitWriter,
    assign,
    hash_unit,
    prepare_batch,
    split_record,
)
from cybulde.preparation.sources import SOURCES, ExtraTraining, RawBatch, Source, load_source
from cybulde.registry.errors import PublishOptionError
from cybulde.registry.fetch import PIN_KEY
from cybulde.registry.manifest import (
    SPLITS,
    TOKENIZER_DIR,
    Manifest,
    SourceFile,
    TokenizerInfo,
    hash_files,
)
from cybulde.registry.storage import quiet_storage_logs
from cybulde.registry.store import Registry, check_name
from cybulde.text.cleaning import CLEANING_ID
from cybulde.text.tokenizer import DEFAULT_VOCAB_SIZE, TOKENIZER_KINDS, build_tokenizer, save_tokenizer

DEFAULT_MAX_LENGTH = 128
DEFAULT_SEED = 1234
DEFAULT_ROWS_PER_SHARD = 250_000
BATCH_ROWS = 20_000
DATASETS_DIR_ENV = "CYBULDE_DATASETS_DIR"


def default_datasets_dir() -> Path:
    """Where the raw datasets live: $CYBULDE_DATASETS_DIR, else `<workspace>/../shared/datasets`."""
    # config.paths loads the config stack (OmegaConf), which `cybulde --help` need not
    from cybulde.config.paths import workspace_root

    configured = os.environ.get(DATASETS_DIR_ENV)
    return Path(configured) if configured else (workspace_root() / ".." / "shared" / "datasets").resolve()


@dataclass(frozen=True)
class Part:
    """One source of a dataset's rows and how its rows join the dataset."""

    source: Source
    plan: PartPlan


def publish(source: str, raw_dir: str | Path, registry: str, version: str, dataset: str | None = None,
            tokenizer: str = "pretrained", vocab_size: int = DEFAULT_VOCAB_SIZE,
            max_length: int = DEFAULT_MAX_LENGTH, seed: int = DEFAULT_SEED, max_rows_per_split: int | None = None,
            text_column: str | None = None, label_column: str | None = None,
            extra_training: Sequence[ExtraTraining] = (), engine: str = "local", workers: int | None = None,
            scheduler: str | None = None, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
            echo: Callable[[str], Any] | None = print) -> Manifest:
    """Build version `version` of `dataset` (default: `source`) from `raw_dir` and upload it to `registry`.

    `extra_training`: other sources whose train splits join this one's (their labels mapped).
    `engine` ("local": `workers` processes, default one per core; "dask": the cluster at `scheduler`)
    decides where the batches are prepared, never what is published.
    """
    from cybulde.config.paths import resolve_location

    dataset = check_name("dataset", dataset or source)
    check_name("version", version)
    _check_options(source, tokenizer, vocab_size, max_length, max_rows_per_split, rows_per_shard)
    target = Registry(resolve_location(registry))
    target.refuse_existing(dataset, version)  # fail before the expensive work

    parts = plan_parts(source, raw_dir, seed, text_column, label_column, extra_training)
    main = parts[0].source
    params = {
        "source": source, "tokenizer": tokenizer, "vocab_size": vocab_size if tokenizer != "pretrained" else None,
        "max_length": max_length, "seed": seed, "max_rows_per_split": max_rows_per_split,
        "text_column": text_column, "label_column": label_column, "split": split_record(seed, main.split_key),
        "cleaning": CLEANING_ID, "library_versions": _library_versions(),
        "layout": {"rows_per_shard": rows_per_shard, "row_group_rows": ROW_GROUP_ROWS},
    }
    if extra_training:  # absent otherwise
        params["extra_training"] = [extra.describe() for extra in extra_training]
    runner = open_engine(engine, workers=workers, scheduler=scheduler)
    try:
        with tempfile.TemporaryDirectory(prefix="cybulde-publish-") as staging:
            manifest = _build_version(Path(staging), dataset, version, parts, tokenizer, vocab_size, max_length,
                                      seed, max_rows_per_split, rows_per_shard, params, runner)
            location = target.write_version(dataset, version, staging)
    finally:
        runner.close()
    if echo:
        echo(format_summary(manifest, location))
    return manifest


def ensure_published(source: str, raw_dir: str | Path, registry: str, version: str, dataset: str | None = None,
                     **options: Any) -> Manifest:
    """The manifest of `dataset/version`, publishing it first if the registry lacks it (first run)."""
    from cybulde.config.paths import resolve_location

    target = Registry(resolve_location(registry))
    if target.exists(dataset or source, version):
        return target.manifest(dataset or source, version)
    return publish(source, raw_dir, registry, version, dataset=dataset, **options)


def _check_options(source: str, tokenizer: str, vocab_size: int, max_length: int,
                   max_rows_per_split: int | None, rows_per_shard: int) -> None:
    if source not in SOURCES:
        raise PublishOptionError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if tokenizer not in TOKENIZER_KINDS:
        raise PublishOptionError(f"unknown tokenizer {tokenizer!r}; expected one of {', '.join(TOKENIZER_KINDS)}")
    if vocab_size < 100:
        raise PublishOptionError(f"vocab_size must be >= 100, got {vocab_size}")
    if max_length < 8:
        raise PublishOptionError(f"max_length must be >= 8, got {max_length}")
    if max_rows_per_split is not None and max_rows_per_split < 1:
        raise PublishOptionError(f"max_rows_per_split must be >= 1, got {max_rows_per_split}")
    if rows_per_shard < 1:
        raise PublishOptionError(f"rows_per_shard must be >= 1, got {rows_per_shard}")


def plan_parts(source: str, raw_dir: str | Path, seed: int, text_column: str | None, label_column: str | None,
               extra_training: Sequence[ExtraTraining]) -> list[Part]:
    """The opened sources of a dataset (itself, then each extra training source), label maps checked."""
    main = load_source(source, raw_dir, text_column=text_column, label_column=label_column)
    parts = [Part(main, PartPlan(seed))]
    for extra in extra_training:
        other = load_source(extra.source, extra.raw_dir)
        mapping = resolve_label_map(other.label_names, main.label_names, extra.label_map, source=extra.source,
                                    target="dataset", option=f"--add-train {extra.source}:...,")
        index = {name: position for position, name in enumerate(main.label_names)}
        plan = PartPlan(seed, keep_splits=(0,), label_map=tuple(index[mapping[name]] for name in other.label_names),
                        id_prefix=f"{extra.source}:")
        parts.append(Part(other, plan))
    return parts


def _source_files(parts: list[Part]) -> list[SourceFile]:
    """Every raw file with its sha256, relative to the raw folders' common root."""
    if len(parts) == 1:
        root, files = parts[0].source.raw_dir, parts[0].source.source_files
    else:
        files = [Path(path).resolve() for part in parts for path in part.source.source_files]
        root = Path(os.path.commonpath([part.source.raw_dir.resolve() for part in parts]))
    return [SourceFile(Path(path).relative_to(root).as_posix(), sha256_file(path)) for path in files]


# ---- the passes over the sources --------------------------------------------------------------

def _batches(part: Part, index: int, sample: dict[int, np.ndarray] | None) -> Iterator[RawBatch]:
    """The batches of a part, cut down to the sampled rows when there is a sample."""
    for batch in part.source.batches(BATCH_ROWS):
        if sample is not None:
            positions = batch.start + np.arange(len(batch))
            batch = batch.take(np.flatnonzero(np.isin(positions, sample[index])))
        if len(batch):
            yield batch


def select_sample(parts: list[Part], seed: int, limit: int) -> dict[int, np.ndarray]:
    """Positions (per part) of a stratified sample of at most `limit` non-empty rows per split.

    Per split, each label gets its share of `limit` (largest remainders, at least one row per label
    when `limit` allows); within a (split, label), the rows with the smallest hash of their id
    (seeded, `hash_unit`) are taken. Holds at most `limit` candidates per (split, label).
    """
    candidates: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    counts: dict[tuple[int, int], int] = {}
    for index, part in enumerate(parts):
        for batch in part.source.batches(BATCH_ROWS):
            cleaned, splits = assign(batch, part.plan)
            labels = batch.labels if part.plan.label_map is None else np.asarray(part.plan.label_map)[batch.labels]
            keep = np.isin(splits, part.plan.keep_splits) & np.fromiter(map(bool, cleaned), bool, len(cleaned))
            units = hash_unit(seed, [part.plan.id_prefix + row_id for row_id in batch.ids], salt="sample:")
            positions = batch.start + np.arange(len(batch))
            for group in set(zip(splits[keep].tolist(), labels[keep].tolist(), strict=True)):
                rows = np.flatnonzero(keep & (splits == group[0]) & (labels == group[1]))
                counts[group] = counts.get(group, 0) + len(rows)
                old = candidates.get(group, (np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64)))
                merged = tuple(np.concatenate(pair) for pair in zip(
                    old, (units[rows], np.full(len(rows), index, np.int64), positions[rows]), strict=True))
                order = np.lexsort((merged[2], merged[1], merged[0]))[:limit]
                candidates[group] = tuple(array[order] for array in merged)
    chosen: dict[int, list[np.ndarray]] = {index: [] for index in range(len(parts))}
    for split in range(len(SPLITS)):
        labels = sorted(label for (group_split, label) in counts if group_split == split)
        take = sample_quotas(np.asarray([counts[(split, label)] for label in labels]), limit)
        for label, n in zip(labels, take.tolist(), strict=True):
            _, part_indices, positions = candidates[(split, label)]
            for index in range(len(parts)):
                chosen[index].append(positions[:n][part_indices[:n] == index])
    return {index: np.sort(np.concatenate(arrays)) if arrays else np.zeros(0, np.int64)
            for index, arrays in chosen.items()}


def sample_quotas(counts: np.ndarray, limit: int) -> np.ndarray:
    """How many rows of each label a sample of `limit` rows takes: proportional, by largest
    remainder, at least one of every label when `limit` allows."""
    total = int(counts.sum())
    if limit >= total:
        return counts.copy()
    quotas = counts * limit / total
    take = np.minimum(np.floor(quotas).astype(int), counts)
    if limit >= int((counts > 0).sum()):
        take = np.maximum(take, np.minimum(1, counts))
    while take.sum() > limit:
        take[np.argmax(take)] -= 1
    for position in np.argsort(-(quotas - np.floor(quotas)), kind="stable"):
        if take.sum() >= limit:
            break
        if take[position] < counts[position]:
            take[position] += 1
    while take.sum() < limit:  # only when rounding left rows over: give them to the roomiest labels
        take[np.argmax(counts - take)] += 1
    return take


def _train_texts(parts: list[Part], sample: dict[int, np.ndarray] | None) -> Callable[[], Iterator[str]]:
    """A fresh stream of the cleaned, non-empty texts of the train split at each call."""
    def stream() -> Iterator[str]:
        for index, part in enumerate(parts):
            for batch in _batches(part, index, sample):
                cleaned, splits = assign(batch, part.plan)
                yield from (text for text, split in zip(cleaned, splits.tolist(), strict=True)
                            if text and split == 0)
    return stream


def _build_version(staging: Path, dataset: str, version: str, parts: list[Part], kind: str, vocab_size: int,
                   max_length: int, seed: int, limit: int | None, rows_per_shard: int, params: dict[str, Any],
                   runner: Engine) -> Manifest:
    sample = select_sample(parts, seed, limit) if limit is not None else None
    tokenizer, name = build_tokenizer(kind, _train_texts(parts, sample), vocab_size, max_length)
    save_tokenizer(tokenizer, staging / TOKENIZER_DIR)
    tokenizer_json = (staging / TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8")
    label_names = parts[0].source.label_names
    writers = {index: SplitWriter(staging, split, rows_per_shard) for index, split in enumerate(SPLITS)}
    stats = {index: SplitStats(len(label_names)) for index in range(len(SPLITS))}
    for index, part in enumerate(parts):
        for prepared in runner.map_ordered(prepare_batch, _batches(part, index, sample), part.plan, tokenizer_json,
                                           max_length, len(label_names)):
            for split, table in prepared.tables.items():
                writers[split].add(table)
                stats[split].merge(prepared.stats[split])
    shards = {split: writers[index].close() for index, split in enumerate(SPLITS)}
    info = TokenizerInfo(
        name=name, kind=kind, sha256=sha256_file(staging / TOKENIZER_DIR / "tokenizer.json"),
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id)
    manifest = Manifest(dataset=dataset, version=version, label_names=list(label_names),
                        splits={split: stats[index].summary(label_names) for index, split in enumerate(SPLITS)},
                        tokenizer=info, max_length=max_length, sources=_source_files(parts), publish_params=params,
                        files=hash_files(staging), shards=shards)
    manifest.write(staging)
    return manifest


def _library_versions() -> dict[str, str]:
    return {name: version(name) for name in ("tokenizers", "transformers", "pyarrow")}


def format_summary(manifest: Manifest, location: str) -> str:
    """A human-readable summary of a published version: sizes, label counts, token lengths."""
    lines = [f"published {manifest.dataset}/{manifest.version} to {location}",
             f"  manifest sha256 {manifest.sha256}",
             f"  tokenizer {manifest.tokenizer.name} ({manifest.tokenizer.kind}, vocab {manifest.tokenizer.vocab_size}),"
             f" max_length {manifest.max_length}",
             f"  labels: {', '.join(f'{i}={name}' for i, name in enumerate(manifest.label_names))}"]
    for split, summary in manifest.splits.items():
        counts = ", ".join(f"{name} {count}" for name, count in summary.label_counts.items())
        lengths = ", ".join(f"{key} {value:g}" for key, value in summary.token_length_percentiles.items())
        lines.append(f"  {split:<10} {summary.rows:>6} rows in {len(manifest.split_shards(split))} shard(s) | "
                     f"{counts} | tokens {lengths} | truncated {summary.truncated_rows} | "
                     f"dropped empty {summary.dropped_empty_rows}")
    return "\n".join(lines)


# ---- command line -----------------------------------------------------------------------------

def add_publish_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--source", required=True, choices=SOURCES, help="kind of raw data")
    parser.add_argument("--raw-dir", help="folder of the raw files (csv/parquet: also a single file); default: "
                        f"${DATASETS_DIR_ENV} or <project>/../shared/datasets, plus /<source>")
    parser.add_argument("--registry", default="registry",
                        help="registry: local folder (relative to the project root), file:// or gs:// URL")
    parser.add_argument("--dataset", help="dataset name in the registry (default: the source name)")
    parser.add_argument("--version", required=True, help="new version name, e.g. v1 (must not exist yet)")
    parser.add_argument("--tokenizer", default="pretrained", choices=TOKENIZER_KINDS,
                        help="pretrained: the MiniLM backbone's; wordpiece/bpe: train one on the training split")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="for a trained tokenizer")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="tokens per text, [CLS]/[SEP] "
                        "included; longer texts are truncated")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of splits and subsamples")
    parser.add_argument("--max-rows-per-split", type=int, help="keep a stratified sample of at most this many "
                        "rows per split (small versions for tests and CI)")
    parser.add_argument("--text-column", help="csv/parquet: column holding the text")
    parser.add_argument("--label-column", help="csv/parquet: column holding the label")
    parser.add_argument("--add-train", action="append", default=[], metavar="SOURCE:FROM=TO,...",
                        help="also train on SOURCE's train split (raw files in the datasets folder), every "
                        "one of its labels mapped to one of this dataset's; validation/test stay this "
                        "dataset's own. Repeatable")
    parser.add_argument("--if-missing", action="store_true",
                        help="do nothing if the version exists already (first-run setup)")
    parser.add_argument("--print-pin", action="store_true",
                        help="print only data.manifest_sha256=<sha256 of the version's manifest>, the params "
                        "key that makes fetch accept exactly this version (also with --if-missing)")
    parser.add_argument("--rows-per-shard", type=int, default=DEFAULT_ROWS_PER_SHARD,
                        help="rows per Parquet shard of a split")
    parser.add_argument("--engine", default="local", choices=ENGINES,
                        help="where batches are cleaned and tokenized: local processes, or a Dask cluster "
                        "(same output either way)")
    parser.add_argument("--workers", type=int, help="--engine local: worker processes (default: one per core)")
    parser.add_argument("--scheduler", help="--engine dask: the scheduler's address, e.g. tcp://10.0.0.5:8786")
    return parser


def run_publish(args: argparse.Namespace) -> int:
    """Run `publish` from parsed arguments (errors are reported by `cybulde.cli`)."""
    if args.raw_dir:
        raw_dir = Path(args.raw_dir)
    elif args.source in ("csv", "parquet"):
        raise UsageError(f"--raw-dir is required for --source {args.source}")
    else:
        raw_dir = default_datasets_dir() / args.source
    quiet_storage_logs()
    publish_or_reuse = ensure_published if args.if_missing else publish
    extra_training = [ExtraTraining.parse(text, default_datasets_dir()) for text in args.add_train]
    manifest = publish_or_reuse(
        args.source, raw_dir, args.registry, args.version, dataset=args.dataset, tokenizer=args.tokenizer,
        vocab_size=args.vocab_size, max_length=args.max_length, seed=args.seed,
        max_rows_per_split=args.max_rows_per_split, text_column=args.text_column, label_column=args.label_column,
        extra_training=extra_training, engine=args.engine, workers=args.workers, scheduler=args.scheduler,
        rows_per_shard=args.rows_per_shard, echo=None if args.print_pin else print)
    if args.print_pin:
        print(f"{PIN_KEY}={manifest.sha256}")
    return 0
