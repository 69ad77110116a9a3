"""Readers of raw labeled data: each returns train/validation/test frames with `id`, `text`, `label`.

Supported sources:
- `tweeteval_offensive`, `tweeteval_hate`: official splits, `{train,val,test}_text.txt` with one tweet
  per line and `{...}_labels.txt` with one label per line; line *i* of both files is one example.
  Some tweets are empty, which shows as an empty line: lines are therefore split on "\n" only and
  paired by position (never filtered before pairing, which would shift every later label).
  Label names come from `mapping.txt`.
- `davidson2017`: `labeled_data.csv`, 3 classes (0 hate speech, 1 offensive language, 2 neither) and
  no official split: a stratified, seeded 80/10/10 split is made here and recorded in the manifest.
- `csv` / `parquet`: a user's file with a text and a label column (`text_column`, `label_column`), or
  a folder with `train`/`validation` (or `val`)/`test` files of that format (official splits then).

`with_extra_training` adds another source's *train* split to a dataset's train split, its labels
mapped explicitly onto the dataset's own; validation and test stay the dataset's own, so models are
still chosen and scored on the task they are meant for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cybulde.data.errors import RawDataError
from cybulde.data.labels import parse_label_map, resolve_label_map
from cybulde.data.manifest import SPLITS

SOURCES = ("tweeteval_offensive", "tweeteval_hate", "davidson2017", "csv", "parquet")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
DAVIDSON_LABELS = ["hate_speech", "offensive_language", "neither"]
_TWEETEVAL_FILE_SPLITS = {"train": "train", "validation": "val", "test": "test"}
_SPLIT_FILE_STEMS = {"train": ("train",), "validation": ("validation", "val", "valid", "dev"), "test": ("test",)}


@dataclass
class RawDataset:
    """Labeled examples per split, before cleaning and tokenization."""

    splits: dict[str, pd.DataFrame]  # split -> columns id (str), text (str), label (int 0..K-1)
    label_names: list[str]
    raw_dir: Path  # the folder that `source_files` are relative to
    source_files: list[Path]
    split_method: dict[str, Any] = field(default_factory=dict)


def load_source(source: str, raw_dir: str | Path, seed: int = 1234, text_column: str | None = None,
                label_column: str | None = None) -> RawDataset:
    """Read raw data of kind `source` from `raw_dir` (a folder; for csv/parquet also a single file)."""
    raw_dir = Path(raw_dir)
    if not raw_dir.exists():
        raise RawDataError(f"raw data for {source!r} not found: {raw_dir} does not exist")
    if source in ("tweeteval_offensive", "tweeteval_hate"):
        return load_tweeteval(raw_dir)
    if source == "davidson2017":
        return load_davidson(raw_dir, seed)
    if source in ("csv", "parquet"):
        if not text_column or not label_column:
            raise RawDataError(f"source {source!r} needs --text-column and --label-column")
        return load_table(raw_dir, source, text_column, label_column, seed)
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


def with_extra_training(raw: RawDataset, extra: ExtraTraining, seed: int) -> RawDataset:
    """`raw` with `extra`'s train split appended to its train split (labels mapped, ids prefixed)."""
    other = load_source(extra.source, extra.raw_dir, seed=seed)
    mapping = resolve_label_map(other.label_names, raw.label_names, extra.label_map, source=extra.source,
                                target="dataset", option=f"--add-train {extra.source}:...,")
    index = {name: position for position, name in enumerate(raw.label_names)}
    to_ours = [index[mapping[name]] for name in other.label_names]
    train = other.splits["train"]
    added = pd.DataFrame({"id": f"{extra.source}:" + train["id"].astype(str), "text": train["text"].to_numpy(),
                          "label": [to_ours[label] for label in train["label"]]})
    splits = {**raw.splits, "train": pd.concat([raw.splits["train"], added], ignore_index=True)}
    files = [Path(path).resolve() for path in (*raw.source_files, *other.source_files)]
    root = Path(os.path.commonpath([raw.raw_dir.resolve(), other.raw_dir.resolve()]))
    return RawDataset(splits, list(raw.label_names), root, files, dict(raw.split_method))


# ---- TweetEval --------------------------------------------------------------------------------

def load_tweeteval(raw_dir: Path) -> RawDataset:
    label_names = read_tweeteval_mapping(raw_dir / "mapping.txt")
    splits, files = {}, [raw_dir / "mapping.txt"]
    for split, stem in _TWEETEVAL_FILE_SPLITS.items():
        text_path, label_path = raw_dir / f"{stem}_text.txt", raw_dir / f"{stem}_labels.txt"
        texts = read_lines(text_path)
        labels = read_lines(label_path)
        if len(texts) != len(labels):
            raise RawDataError(f"{text_path.name} has {len(texts)} lines but {label_path.name} has "
                               f"{len(labels)}: each text line needs exactly one label line")
        splits[split] = pd.DataFrame({
            "id": [f"{split}-{line}" for line in range(1, len(texts) + 1)],
            "text": texts,
            "label": [_parse_label(value, label_path, line, len(label_names))
                      for line, value in enumerate(labels, start=1)],
        })
        files += [text_path, label_path]
    return RawDataset(splits, label_names, raw_dir, files, {"method": "official"})


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

def load_davidson(raw_dir: Path, seed: int) -> RawDataset:
    path = raw_dir / "labeled_data.csv"
    if not path.is_file():
        raise RawDataError(f"missing raw file {path}")
    frame = pd.read_csv(path, dtype={"tweet": str}, keep_default_na=False)
    for column in ("class", "tweet"):
        if column not in frame.columns:
            raise RawDataError(f"{path} has no {column!r} column (columns: {list(frame.columns)})")
    id_column = frame.columns[0] if frame.columns[0].startswith("Unnamed") or frame.columns[0] == "" else None
    ids = frame[id_column].astype(str) if id_column is not None else pd.Series(range(len(frame))).astype(str)
    labels = frame["class"].astype("int64")
    if not labels.between(0, len(DAVIDSON_LABELS) - 1).all():
        raise RawDataError(f"{path}: 'class' must be 0, 1 or 2")
    table = pd.DataFrame({"id": "row-" + ids.to_numpy(dtype=str), "text": frame["tweet"], "label": labels})
    splits = stratified_split(table, seed)
    return RawDataset(splits, list(DAVIDSON_LABELS), raw_dir, [path], _split_record(seed))


# ---- generic CSV / Parquet --------------------------------------------------------------------

def load_table(raw: Path, kind: str, text_column: str, label_column: str, seed: int) -> RawDataset:
    if raw.is_file():
        frame = _read_table(raw, kind, text_column, label_column)
        label_names, frame["label"] = _encode_labels([frame["label"]])
        table = _with_row_ids(frame)
        return RawDataset(stratified_split(table, seed), label_names, raw.parent, [raw], _split_record(seed))
    files = {split: _find_split_file(raw, split, kind) for split in SPLITS}
    frames = {split: _read_table(path, kind, text_column, label_column) for split, path in files.items()}
    label_names, _ = _encode_labels([frame["label"] for frame in frames.values()])
    index = {name: position for position, name in enumerate(label_names)}
    splits = {}
    for split, frame in frames.items():
        frame["label"] = frame["label"].astype(str).map(index).astype("int64")
        splits[split] = _with_row_ids(frame, prefix=f"{split}-")
    return RawDataset(splits, label_names, raw, list(files.values()), {"method": "official"})


def _read_table(path: Path, kind: str, text_column: str, label_column: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path) if kind == "parquet" else pd.read_csv(path, keep_default_na=False)
    except Exception as error:
        raise RawDataError(f"cannot read {path} as {kind}: {error}") from error
    for column in (text_column, label_column):
        if column not in frame.columns:
            raise RawDataError(f"{path} has no column {column!r} (columns: {list(frame.columns)})")
    if frame[label_column].isna().any():
        raise RawDataError(f"{path}: column {label_column!r} has empty labels")
    return pd.DataFrame({"text": frame[text_column].fillna("").astype(str), "label": frame[label_column]})


def _encode_labels(columns: list[pd.Series]) -> tuple[list[str], pd.Series]:
    """Label names sorted (numerically if all are integers); the first column mapped to indices."""
    values = pd.concat(columns).astype(str).unique().tolist()
    numeric = all(value.lstrip("-").isdigit() for value in values)
    names = sorted(values, key=int) if numeric else sorted(values)
    if len(names) < 2:
        raise RawDataError(f"need at least 2 distinct labels, found {names}")
    index = {name: position for position, name in enumerate(names)}
    return names, columns[0].astype(str).map(index).astype("int64")


def _find_split_file(folder: Path, split: str, kind: str) -> Path:
    for stem in _SPLIT_FILE_STEMS[split]:
        path = folder / f"{stem}.{kind}"
        if path.is_file():
            return path
    expected = " or ".join(f"{stem}.{kind}" for stem in _SPLIT_FILE_STEMS[split])
    raise RawDataError(f"{folder} is a folder, so it needs one file per split; missing {expected} "
                       f"(or pass the path of a single {kind} file to split it 80/10/10)")


def _with_row_ids(frame: pd.DataFrame, prefix: str = "row-") -> pd.DataFrame:
    ids = [f"{prefix}{row}" for row in range(len(frame))]
    return pd.DataFrame({"id": ids, "text": frame["text"].to_numpy(), "label": frame["label"].to_numpy()})


# ---- splitting --------------------------------------------------------------------------------

def _split_record(seed: int) -> dict[str, Any]:
    return {"method": "stratified", "seed": seed, "fractions": dict(zip(SPLITS, SPLIT_FRACTIONS, strict=True))}


def stratified_split(table: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    """Per label, shuffle (seeded) and cut 80/10/10; every split keeps the original row order."""
    rng = np.random.default_rng(seed)
    assigned = np.empty(len(table), dtype=np.int8)
    labels = table["label"].to_numpy()
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_train = int(round(len(rows) * SPLIT_FRACTIONS[0]))
        n_validation = int(round(len(rows) * SPLIT_FRACTIONS[1]))
        assigned[rows[:n_train]] = 0
        assigned[rows[n_train:n_train + n_validation]] = 1
        assigned[rows[n_train + n_validation:]] = 2
    return {split: table[assigned == position].reset_index(drop=True) for position, split in enumerate(SPLITS)}


def stratified_subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Row positions (sorted) of a seeded sample of `limit` rows with the label mix of `labels`.

    Largest-remainder allocation, and at least one row of every label when `limit` allows it.
    """
    if limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * limit / len(labels)
    take = np.minimum(np.floor(quotas).astype(int), counts)
    if limit >= len(classes):
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
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:n] for label, n in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))
