"""Publish a new dataset version: raw labeled data -> cleaned -> split -> tokenized -> registry.

Run once per version (it is not a pipeline stage): `cybulde publish --source tweeteval_offensive
--version v1`. The version is staged in a local temporary folder and uploaded with its
manifest.json last; publishing onto an existing version is refused (versions are immutable).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cybulde.data.cleaning import CLEANING_ID, clean_texts
from cybulde.data.errors import PublishOptionError
from cybulde.data.manifest import (
    SPLITS,
    TOKENIZER_DIR,
    Manifest,
    SourceFile,
    SplitSummary,
    TokenizerInfo,
    hash_files,
)
from cybulde.data.registry import Registry, check_name
from cybulde.data.sources import (
    SOURCES,
    ExtraTraining,
    RawDataset,
    load_source,
    stratified_subsample,
    with_extra_training,
)
from cybulde.data.storage import quiet_storage_logs, sha256_file
from cybulde.data.tokenizer import DEFAULT_VOCAB_SIZE, TOKENIZER_KINDS
from cybulde.errors import UsageError

DEFAULT_MAX_LENGTH = 128
DEFAULT_SEED = 1234
PERCENTILES = (50, 90, 95, 99)
DATASETS_DIR_ENV = "CYBULDE_DATASETS_DIR"


def default_datasets_dir() -> Path:
    """Where the raw datasets live: $CYBULDE_DATASETS_DIR, else `<workspace>/../shared/datasets`."""
    from cybulde.config.paths import workspace_root

    configured = os.environ.get(DATASETS_DIR_ENV)
    return Path(configured) if configured else (workspace_root() / ".." / "shared" / "datasets").resolve()


def publish(source: str, raw_dir: str | Path, registry: str, version: str, dataset: str | None = None,
            tokenizer: str = "pretrained", vocab_size: int = DEFAULT_VOCAB_SIZE,
            max_length: int = DEFAULT_MAX_LENGTH, seed: int = DEFAULT_SEED, max_rows_per_split: int | None = None,
            text_column: str | None = None, label_column: str | None = None,
            extra_training: Sequence[ExtraTraining] = (),
            echo: Callable[[str], Any] | None = print) -> Manifest:
    """Build version `version` of `dataset` (default: `source`) from `raw_dir` and upload it to `registry`.

    `extra_training`: other sources whose train splits join this one's (see `with_extra_training`).
    """
    from cybulde.config.paths import resolve_location

    dataset = check_name("dataset", dataset or source)
    check_name("version", version)
    _check_options(source, tokenizer, vocab_size, max_length, max_rows_per_split)
    target = Registry(resolve_location(registry))
    target.refuse_existing(dataset, version)  # fail before the expensive work

    raw = load_source(source, raw_dir, seed=seed, text_column=text_column, label_column=label_column)
    for extra in extra_training:
        raw = with_extra_training(raw, extra, seed)
    prepared = {split: _prepare_split(raw, split, seed, max_rows_per_split) for split in SPLITS}
    params = {
        "source": source, "tokenizer": tokenizer, "vocab_size": vocab_size if tokenizer != "pretrained" else None,
        "max_length": max_length, "seed": seed, "max_rows_per_split": max_rows_per_split,
        "text_column": text_column, "label_column": label_column, "split": raw.split_method,
        "cleaning": CLEANING_ID, "library_versions": _library_versions(),
    }
    if extra_training:  # absent otherwise, so versions published before this option hash the same
        params["extra_training"] = [extra.describe() for extra in extra_training]
    with tempfile.TemporaryDirectory(prefix="cybulde-publish-") as staging:
        manifest = _build_version(Path(staging), dataset, version, raw, prepared, tokenizer, vocab_size,
                                  max_length, params)
        location = target.write_version(dataset, version, staging)
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
                   max_rows_per_split: int | None) -> None:
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


def _prepare_split(raw: RawDataset, split: str, seed: int, limit: int | None) -> dict[str, Any]:
    """Cleaned texts of a split, empty ones dropped, optionally a stratified sample of `limit` rows."""
    frame = raw.splits[split]
    cleaned = clean_texts(frame["text"].tolist())
    keep = [position for position, text in enumerate(cleaned) if text]
    dropped = len(frame) - len(keep)
    frame = frame.iloc[keep].reset_index(drop=True)
    cleaned = [cleaned[position] for position in keep]
    if limit is not None and len(frame) > limit:
        rows = stratified_subsample(frame["label"].to_numpy(), limit, seed)
        frame = frame.iloc[rows].reset_index(drop=True)
        cleaned = [cleaned[position] for position in rows]
    return {"frame": frame, "cleaned": cleaned, "dropped": dropped}


def _build_version(staging: Path, dataset: str, version: str, raw: RawDataset, prepared: dict[str, Any],
                   kind: str, vocab_size: int, max_length: int, params: dict[str, Any]) -> Manifest:
    from cybulde.data.tokenizer import build_tokenizer, encode, save_tokenizer

    tokenizer, name = build_tokenizer(kind, prepared["train"]["cleaned"], vocab_size, max_length)
    splits = {}
    for split in SPLITS:
        part = prepared[split]
        input_ids, lengths = encode(tokenizer, part["cleaned"], max_length)
        _write_parquet(staging / f"{split}.parquet", part["frame"], input_ids)
        splits[split] = SplitSummary(
            rows=len(part["frame"]),
            label_counts=_label_counts(part["frame"]["label"].tolist(), raw.label_names),
            token_length_percentiles=_percentiles(lengths),
            truncated_rows=sum(length > max_length for length in lengths),
            dropped_empty_rows=part["dropped"],
        )
    save_tokenizer(tokenizer, staging / TOKENIZER_DIR)
    info = TokenizerInfo(
        name=name, kind=kind, sha256=sha256_file(staging / TOKENIZER_DIR / "tokenizer.json"),
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id)
    sources = [SourceFile(path.relative_to(raw.raw_dir).as_posix(), sha256_file(path)) for path in raw.source_files]
    manifest = Manifest(dataset=dataset, version=version, label_names=list(raw.label_names), splits=splits,
                        tokenizer=info, max_length=max_length, sources=sources, publish_params=params,
                        files=hash_files(staging))
    manifest.write(staging)
    return manifest


def _write_parquet(path: Path, frame: Any, input_ids: list[list[int]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.int64()),
                        ("input_ids", pa.list_(pa.int32()))])
    table = pa.table({"id": frame["id"].astype(str).tolist(), "text": frame["text"].astype(str).tolist(),
                      "label": frame["label"].astype("int64").tolist(), "input_ids": input_ids}, schema=schema)
    pq.write_table(table, path)


def _label_counts(labels: list[int], label_names: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(label_names, 0)
    for label in labels:
        counts[label_names[label]] += 1
    return counts


def _percentiles(lengths: list[int]) -> dict[str, float]:
    import numpy as np

    if not lengths:
        return {}
    values = np.asarray(lengths)
    result = {f"p{q}": round(float(np.percentile(values, q)), 2) for q in PERCENTILES}
    result["max"] = float(values.max())
    return result


def _library_versions() -> dict[str, str]:
    from importlib.metadata import version

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
        lines.append(f"  {split:<10} {summary.rows:>6} rows | {counts} | tokens {lengths} | "
                     f"truncated {summary.truncated_rows} | dropped empty {summary.dropped_empty_rows}")
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
    publish_or_reuse(args.source, raw_dir, args.registry, args.version, dataset=args.dataset, tokenizer=args.tokenizer,
            vocab_size=args.vocab_size, max_length=args.max_length, seed=args.seed,
            max_rows_per_split=args.max_rows_per_split, text_column=args.text_column,
            label_column=args.label_column, extra_training=extra_training)
    return 0
