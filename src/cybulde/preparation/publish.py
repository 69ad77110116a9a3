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

A multi-label version (`cybulde publish --questions configs/questions/harm.yaml --dataset harm
--version v1`, `publish_questions`) is built the same way from every source of a mapping file of
questions (`cybulde.preparation.questions`), one after the other in the file's order. Each source
keeps its own split, drawn exactly as in its own single-source version with the same seed (official
splits, or the seeded hash of the same key), so its test rows are the same rows; each row keeps its
source (`source`, id `<source>/<row id>`) and holds its label's answers to the questions (`labels`).
`--max-rows-per-split` samples each source's splits on its own (the rows its own version would keep).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
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
    multilabel_summary,
    prepare_batch,
    row_schema,
    split_record,
)
from cybulde.preparation.questions import QuestionMap, load_question_map
from cybulde.preparation.sources import SOURCES, ExtraTraining, RawBatch, Source, load_source
from cybulde.registry.errors import PublishOptionError
from cybulde.registry.fetch import PIN_KEY
from cybulde.registry.manifest import (
    MULTILABEL,
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


@dataclass(frozen=True)
class Layout:
    """How a version's rows are sampled, tokenized and cut into shards (the options every publish has)."""

    tokenizer: str
    vocab_size: int
    max_length: int
    seed: int
    max_rows_per_split: int | None
    rows_per_shard: int


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
    if source not in SOURCES:
        raise PublishOptionError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    _check_options(tokenizer, vocab_size, max_length, max_rows_per_split, rows_per_shard)
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
    return _publish_parts(target, dataset, version, parts, params, Layout(tokenizer, vocab_size, max_length, seed,
                          max_rows_per_split, rows_per_shard), open_engine(engine, workers=workers, scheduler=scheduler),
                          echo)


def publish_questions(questions: str | Path, registry: str, version: str, dataset: str | None = None,
                      datasets_dir: str | Path | None = None, tokenizer: str = "pretrained",
                      vocab_size: int = DEFAULT_VOCAB_SIZE, max_length: int = DEFAULT_MAX_LENGTH,
                      seed: int = DEFAULT_SEED, max_rows_per_split: int | None = None, engine: str = "local",
                      workers: int | None = None, scheduler: str | None = None,
                      rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                      echo: Callable[[str], Any] | None = print) -> Manifest:
    """Build multi-label version `version` of `dataset` (default: the mapping file's stem) from every
    source of the mapping file `questions` (raw data under `datasets_dir`) and upload it to `registry`.

    The mapping file is checked first, then each source is opened and its labels checked against the
    map: nothing is read or written before the whole map is known to be sound.
    """
    from cybulde.config.paths import resolve_location

    question_map = load_question_map(questions)
    dataset = check_name("dataset", dataset or Path(questions).stem)
    check_name("version", version)
    _check_options(tokenizer, vocab_size, max_length, max_rows_per_split, rows_per_shard)
    target = Registry(resolve_location(registry))
    target.refuse_existing(dataset, version)

    parts = plan_question_parts(question_map, Path(datasets_dir) if datasets_dir else default_datasets_dir(), seed)
    params = {
        "questions": question_map.file, "tokenizer": tokenizer,
        "vocab_size": vocab_size if tokenizer != "pretrained" else None, "max_length": max_length, "seed": seed,
        "max_rows_per_split": max_rows_per_split,
        "sources": {part.plan.source_name: _source_params(question_map, part, seed) for part in parts},
        "cleaning": CLEANING_ID, "library_versions": _library_versions(),
        "layout": {"rows_per_shard": rows_per_shard, "row_group_rows": ROW_GROUP_ROWS},
    }
    return _publish_parts(target, dataset, version, parts, params, Layout(tokenizer, vocab_size, max_length, seed,
                          max_rows_per_split, rows_per_shard), open_engine(engine, workers=workers, scheduler=scheduler),
                          echo, question_map)


def _publish_parts(target: Registry, dataset: str, version: str, parts: list[Part], params: dict[str, Any],
                   layout: Layout, runner: Engine, echo: Callable[[str], Any] | None,
                   question_map: QuestionMap | None = None) -> Manifest:
    """Stage the version built from `parts` in a temporary folder, then upload it."""
    try:
        with tempfile.TemporaryDirectory(prefix="cybulde-publish-") as staging:
            manifest = _build_version(Path(staging), dataset, version, parts, layout, params, runner, question_map)
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


def ensure_questions_published(questions: str | Path, registry: str, version: str, dataset: str | None = None,
                               **options: Any) -> Manifest:
    """`ensure_published` of a multi-label version (`publish_questions`)."""
    from cybulde.config.paths import resolve_location

    target = Registry(resolve_location(registry))
    name = dataset or Path(questions).stem
    if target.exists(name, version):
        return target.manifest(name, version)
    return publish_questions(questions, registry, version, dataset=dataset, **options)


def _check_options(tokenizer: str, vocab_size: int, max_length: int, max_rows_per_split: int | None,
                   rows_per_shard: int) -> None:
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


def plan_question_parts(question_map: QuestionMap, datasets_dir: Path, seed: int) -> list[Part]:
    """The opened sources of a multi-label version, in the map's order, each label's answers checked
    against the labels the source has. A source's rows keep the split its own version gives them."""
    parts = []
    for name, spec in question_map.sources.items():
        source = load_source(spec.kind, spec.raw_dir(datasets_dir), text_column=spec.text_column,
                             label_column=spec.label_column)
        answers = question_map.answer_matrix(name, source.label_names)
        plan = PartPlan(seed, id_prefix=f"{name}/", answers=tuple(map(tuple, answers.tolist())), source_name=name)
        parts.append(Part(source, plan))
    return parts


def _source_params(question_map: QuestionMap, part: Part, seed: int) -> dict[str, Any]:
    """How one source of a multi-label version was read and split, as publish_params records it."""
    spec = question_map.sources[part.plan.source_name]
    return {"kind": spec.kind, "text_column": spec.text_column, "label_column": spec.label_column,
            "label_names": list(part.source.label_names), "split": split_record(seed, part.source.split_key)}


def _source_files(parts: list[Part], multilabel: bool = False) -> list[SourceFile]:
    """Every raw file with its sha256, relative to the raw folders' common root (a multi-label
    version's: to the common root of their parent folders, so each path starts with its folder)."""
    if len(parts) == 1 and not multilabel:
        root, files = parts[0].source.raw_dir, parts[0].source.source_files
    else:
        files = [Path(path).resolve() for part in parts for path in part.source.source_files]
        folders = [part.source.raw_dir.resolve() for part in parts]
        root = Path(os.path.commonpath([folder.parent for folder in folders] if multilabel else folders))
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


def select_sample_per_source(parts: list[Part], seed: int, limit: int) -> dict[int, np.ndarray]:
    """`select_sample` of each part on its own: per source and split at most `limit` rows, the very rows
    the source's own version sampled with `limit` (the hash of its own row ids, not the prefixed ones)."""
    return {index: select_sample([Part(part.source, replace(part.plan, id_prefix=""))], seed, limit)[0]
            for index, part in enumerate(parts)}


def _train_texts(parts: list[Part], sample: dict[int, np.ndarray] | None) -> Callable[[], Iterator[str]]:
    """A fresh stream of the cleaned, non-empty texts of the train split at each call."""
    def stream() -> Iterator[str]:
        for index, part in enumerate(parts):
            for batch in _batches(part, index, sample):
                cleaned, splits = assign(batch, part.plan)
                yield from (text for text, split in zip(cleaned, splits.tolist(), strict=True)
                            if text and split == 0)
    return stream


def _build_version(staging: Path, dataset: str, version: str, parts: list[Part], layout: Layout,
                   params: dict[str, Any], runner: Engine, question_map: QuestionMap | None = None) -> Manifest:
    """Write the version's tokenizer, shards and manifest into `staging`. Single-label: the rows of
    every part counted under the dataset's labels. Multi-label (`question_map`): each part counted
    under its source's own labels, summarised as answers per source and question."""
    multilabel = question_map is not None
    limit = layout.max_rows_per_split
    sample = None if limit is None else (select_sample_per_source(parts, layout.seed, limit) if multilabel
                                         else select_sample(parts, layout.seed, limit))
    tokenizer, name = build_tokenizer(layout.tokenizer, _train_texts(parts, sample), layout.vocab_size,
                                      layout.max_length)
    save_tokenizer(tokenizer, staging / TOKENIZER_DIR)
    tokenizer_json = (staging / TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8")
    schema = row_schema(multilabel)
    writers = {index: SplitWriter(staging, split, layout.rows_per_shard, schema) for index, split in enumerate(SPLITS)}
    counted = range(len(parts)) if multilabel else [0]  # whose labels the statistics count
    stats = {(part, split): SplitStats(len(parts[part].source.label_names)) for part in counted
             for split in range(len(SPLITS))}
    for index, part in enumerate(parts):
        num_labels = len(part.source.label_names if multilabel else parts[0].source.label_names)
        for prepared in runner.map_ordered(prepare_batch, _batches(part, index, sample), part.plan, tokenizer_json,
                                           layout.max_length, num_labels):
            for split, table in prepared.tables.items():
                writers[split].add(table)
                stats[(index if multilabel else 0, split)].merge(prepared.stats[split])
    shards = {split: writers[index].close() for index, split in enumerate(SPLITS)}
    info = TokenizerInfo(
        name=name, kind=layout.tokenizer, sha256=sha256_file(staging / TOKENIZER_DIR / "tokenizer.json"),
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id)
    if question_map is None:
        label_names = parts[0].source.label_names
        splits = {split: stats[(0, index)].summary(label_names) for index, split in enumerate(SPLITS)}
        extra: dict[str, Any] = {}
    else:
        label_names = question_map.questions
        answers = {part.plan.source_name: np.asarray(part.plan.answers, np.int8) for part in parts}
        splits = {split: multilabel_summary({part.plan.source_name: stats[(position, index)]
                                             for position, part in enumerate(parts)}, answers, label_names)
                  for index, split in enumerate(SPLITS)}
        extra = {"task": MULTILABEL, "source_names": question_map.source_names, "label_map": question_map.record()}
    manifest = Manifest(dataset=dataset, version=version, label_names=list(label_names), splits=splits,
                        tokenizer=info, max_length=layout.max_length, sources=_source_files(parts, multilabel),
                        publish_params=params, files=hash_files(staging), shards=shards, **extra)
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
             f"  {'questions' if manifest.is_multilabel else 'labels'}: "
             f"{', '.join(f'{i}={name}' for i, name in enumerate(manifest.label_names))}"]
    if manifest.source_names:
        lines.append(f"  sources: {', '.join(manifest.source_names)}")
    for split, summary in manifest.splits.items():
        counts = ", ".join(f"{name} {count}" for name, count in summary.label_counts.items())
        lengths = ", ".join(f"{key} {value:g}" for key, value in summary.token_length_percentiles.items())
        lines.append(f"  {split:<10} {summary.rows:>6} rows in {len(manifest.split_shards(split))} shard(s) | "
                     f"{counts} | tokens {lengths} | truncated {summary.truncated_rows} | "
                     f"dropped empty {summary.dropped_empty_rows}")
        if summary.source_rows:
            lines.append(f"  {'':<10} by source: {', '.join(f'{s} {n}' for s, n in summary.source_rows.items())}")
    return "\n".join(lines)


# ---- command line -----------------------------------------------------------------------------

def add_publish_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.epilog = ("One of --source (a single-label version of one source) or --questions (a multi-label "
                     "version of every source of a mapping file, e.g. cybulde publish --questions "
                     "configs/questions/harm.yaml --dataset harm --version v1; see docs/data.md).")
    parser.add_argument("--source", choices=SOURCES, help="kind of raw data")
    parser.add_argument("--questions", metavar="FILE",
                        help="a mapping file of questions (e.g. configs/questions/harm.yaml): publish one "
                        "multi-label version from all of its sources, each keeping its own split, each row "
                        "answering every question its source can answer. Not with --source, --raw-dir, "
                        "--text-column, --label-column or --add-train")
    parser.add_argument("--datasets-dir", help="folder of the raw datasets, one sub-folder per source; default: "
                        f"${DATASETS_DIR_ENV} or <project>/../shared/datasets")
    parser.add_argument("--raw-dir", help="folder of the raw files (csv/parquet: also a single file); default: "
                        "the datasets folder (--datasets-dir) plus /<source>")
    parser.add_argument("--registry", default="registry",
                        help="registry: local folder (relative to the project root), file:// or gs:// URL")
    parser.add_argument("--dataset", help="dataset name in the registry (default: the source name, or the "
                        "mapping file's name without .yaml)")
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
    """Run `publish` (or `publish_questions`) from parsed arguments (errors are reported by `cybulde.cli`)."""
    datasets_dir = Path(args.datasets_dir) if args.datasets_dir else None
    options = dict(dataset=args.dataset, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                   max_length=args.max_length, seed=args.seed, max_rows_per_split=args.max_rows_per_split,
                   engine=args.engine, workers=args.workers, scheduler=args.scheduler,
                   rows_per_shard=args.rows_per_shard, echo=None if args.print_pin else print)
    if args.questions:
        _refuse_single_source_options(args)
        quiet_storage_logs()
        publish_or_reuse = ensure_questions_published if args.if_missing else publish_questions
        manifest = publish_or_reuse(args.questions, args.registry, args.version, datasets_dir=datasets_dir, **options)
    else:
        if not args.source:
            raise UsageError("one of --source or --questions is required")
        datasets_dir = datasets_dir or default_datasets_dir()
        if args.raw_dir:
            raw_dir = Path(args.raw_dir)
        elif args.source in ("csv", "parquet"):
            raise UsageError(f"--raw-dir is required for --source {args.source}")
        else:
            raw_dir = datasets_dir / args.source
        quiet_storage_logs()
        publish_or_reuse = ensure_published if args.if_missing else publish
        extra_training = [ExtraTraining.parse(text, datasets_dir) for text in args.add_train]
        manifest = publish_or_reuse(args.source, raw_dir, args.registry, args.version, text_column=args.text_column,
                                    label_column=args.label_column, extra_training=extra_training, **options)
    if args.print_pin:
        print(f"{PIN_KEY}={manifest.sha256}")
    return 0


def _refuse_single_source_options(args: argparse.Namespace) -> None:
    """--questions names its sources, their folders and columns itself."""
    given = [option for option, value in (("--source", args.source), ("--raw-dir", args.raw_dir),
                                          ("--text-column", args.text_column), ("--label-column", args.label_column),
                                          ("--add-train", args.add_train)) if value]
    if given:
        raise UsageError(f"--questions cannot be combined with {', '.join(given)}: the mapping file names every "
                         "source, where its raw data is and its columns")
