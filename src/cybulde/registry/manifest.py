"""`manifest.json`: what a dataset version contains and the sha256 of every file in it.

The manifest is the last file written to a version, so a version without one is incomplete and
invisible. Its own sha256 (`Manifest.sha256`, `manifest_digest`) identifies the version's content.

Two layouts are read (`format_version`):

- 1 (single file per split): `<split>.parquet` beside `manifest.json`, in the registry and in a
  fetched copy alike;
- 2 (shards, written by today's publish): each split is `<split>-NNNNN-of-MMMMM.parquet` shards of
  at most `rows_per_shard` rows, listed in order under `shards` with their row count and sha256. In
  the registry the files live in `content-<manifest sha256>/` beside `manifest.json` (so two
  publishers of one version never write the same file names unless they publish identical bytes);
  a fetched copy has them beside `manifest.json`.

A manifest comes from the registry, which its readers need not trust: every key of `files` must be
a plain relative path (`check_file_key`: not absolute, no `.`/`..`/empty part, no backslash or
control character), or the manifest is refused as it is read, before anything is downloaded.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cybulde.files import sha256_bytes, sha256_file
from cybulde.registry.errors import (
    ChecksumMismatchError,
    ManifestError,
    MissingFileError,
    UnexpectedFileError,
    UnsafePathError,
)

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 2  # what publish writes
READABLE_FORMAT_VERSIONS = (1, 2)
CONTENT_DIR_PREFIX = "content-"
SPLITS = ("train", "validation", "test")
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"  # in TOKENIZER_DIR; `TokenizerInfo.sha256` is its hash
MULTICLASS, MULTILABEL = "multiclass", "multilabel"  # Manifest.task
_MULTILABEL_KEYS = ("source_names", "label_map")
_MULTILABEL_SPLIT_KEYS = ("source_rows", "answers")


@dataclass
class SplitSummary:
    rows: int
    label_counts: dict[str, int]
    # Percentiles of the token count per row (special tokens included) *before* truncation.
    token_length_percentiles: dict[str, float]
    # Rows longer than max_length (their input_ids are truncated).
    truncated_rows: int = 0
    # Raw rows left out because their text was empty after cleaning.
    dropped_empty_rows: int = 0
    # Multi-label versions only (omitted from manifest.json otherwise): rows per source, and per
    # source and question how many rows answer yes / no / nothing ("missing").
    source_rows: dict[str, int] | None = None
    answers: dict[str, dict[str, dict[str, int]]] | None = None


@dataclass
class TokenizerInfo:
    name: str
    kind: str  # "pretrained" | "wordpiece" | "bpe"
    sha256: str  # of tokenizer/tokenizer.json
    vocab_size: int
    pad_token_id: int
    cls_token_id: int
    sep_token_id: int


@dataclass
class SourceFile:
    path: str  # relative to the raw data folder
    sha256: str


@dataclass
class ShardInfo:
    path: str  # relative to the version's files, e.g. train-00000-of-00003.parquet
    rows: int
    sha256: str


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00000-of-00003.parquet`: shard `index` (0-based) of the `count` shards of `split`."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


@dataclass
class Manifest:
    dataset: str
    version: str
    label_names: list[str]
    splits: dict[str, SplitSummary]
    tokenizer: TokenizerInfo
    max_length: int
    sources: list[SourceFile]
    publish_params: dict[str, Any]
    files: dict[str, str]  # relative path -> sha256, every file of the version but manifest.json
    task: str = MULTICLASS  # "multiclass" (one label per row) | "multilabel" (label_names are questions)
    format_version: int = 0  # 0: from the layout, 2 with `shards`, else 1
    # Format 2: split -> its Parquet shards in row order. Format 1 has none (one <split>.parquet each).
    shards: dict[str, list[ShardInfo]] | None = None
    # Multi-label versions only (omitted from manifest.json otherwise): the sources in label-map order,
    # and the label map that turned each source's labels into answers to the questions.
    source_names: list[str] | None = None
    label_map: dict[str, Any] | None = None
    _digest: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.format_version:
            self.format_version = FORMAT_VERSION if self.shards is not None else 1

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_multilabel(self) -> bool:
        """Rows carry one answer per question (1, 0 or missing) instead of one label."""
        return self.task == MULTILABEL

    @property
    def sha256(self) -> str:
        """sha256 of the manifest.json bytes (as read, or as `to_json` writes them)."""
        return self._digest or sha256_bytes(self.to_json())

    @property
    def content_dir(self) -> str:
        """Where a registry keeps this version's files, relative to its manifest.json ("" : beside it)."""
        return f"{CONTENT_DIR_PREFIX}{self.sha256}" if self.format_version >= 2 else ""

    def split_shards(self, split: str) -> list[ShardInfo]:
        """The Parquet files of `split` in row order (format 1: the single `<split>.parquet`)."""
        if self.shards is not None:
            return list(self.shards.get(split, []))
        path = f"{split}.parquet"
        return [ShardInfo(path, self.splits[split].rows, self.files.get(path, ""))] if split in self.splits else []

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_digest")
        if self.shards is None:  # format 1 manifests keep their exact bytes
            data.pop("shards")
        for key in _MULTILABEL_KEYS:  # and so do single-label ones
            if data[key] is None:
                data.pop(key)
        for split in data["splits"].values():
            for key in _MULTILABEL_SPLIT_KEYS:
                if split[key] is None:
                    split.pop(key)
        data["num_labels"] = self.num_labels
        return data

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, origin: str = "manifest.json") -> Manifest:
        try:
            raw = json.loads(data)
            manifest = cls(
                dataset=raw["dataset"],
                version=raw["version"],
                label_names=list(raw["label_names"]),
                splits={name: SplitSummary(**split) for name, split in raw["splits"].items()},
                tokenizer=TokenizerInfo(**raw["tokenizer"]),
                max_length=int(raw["max_length"]),
                sources=[SourceFile(**source) for source in raw["sources"]],
                publish_params=dict(raw["publish_params"]),
                files=dict(raw["files"]),
                task=raw["task"],
                format_version=int(raw["format_version"]),
                shards=({split: [ShardInfo(**shard) for shard in shards] for split, shards in raw["shards"].items()}
                        if "shards" in raw else None),
                source_names=list(raw["source_names"]) if "source_names" in raw else None,
                label_map=dict(raw["label_map"]) if "label_map" in raw else None,
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ManifestError(f"{origin} is not a valid manifest: {type(error).__name__}: {error}") from error
        if manifest.format_version not in READABLE_FORMAT_VERSIONS:
            raise ManifestError(f"{origin} has format_version {manifest.format_version}; this code reads "
                                f"format_version {' or '.join(map(str, READABLE_FORMAT_VERSIONS))}")
        if (manifest.format_version >= 2) != (manifest.shards is not None):
            raise ManifestError(f"{origin}: format_version {manifest.format_version} "
                                f"{'needs' if manifest.format_version >= 2 else 'cannot have'} a 'shards' list")
        if manifest.is_multilabel and not manifest.source_names:
            raise ManifestError(f"{origin}: a multilabel version needs its 'source_names'")
        for key in manifest.files:
            check_file_key(key, origin)
        for split in manifest.splits:
            _check_shards(manifest, split, origin)
        manifest._digest = sha256_bytes(data)
        return manifest

    @classmethod
    def load(cls, data_dir: str | Path) -> Manifest:
        path = Path(data_dir) / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(f"no {MANIFEST_FILE} in {data_dir}: not a published or fetched dataset version")
        return cls.from_json(path.read_bytes(), origin=str(path))

    def write(self, data_dir: str | Path) -> Path:
        path = Path(data_dir) / MANIFEST_FILE
        path.write_bytes(self.to_json())
        return path


def check_file_key(key: str, origin: str = MANIFEST_FILE) -> str:
    """`key` if it is a plain relative path inside a version's folder, else an `UnsafePathError`
    naming it (a GCS object name may hold `../`, and an fsspec listing returns it as it is)."""
    problem = _key_problem(key)
    if problem:
        raise UnsafePathError(f"{origin}: file key {key!r} is refused: {problem}")
    return key


def _key_problem(key: str) -> str | None:
    if not key:
        return "it is empty"
    if any(unicodedata.category(char) == "Cc" for char in key):
        return "it holds a control character"
    if "\\" in key:
        return "it holds a backslash"
    if key.startswith("/"):
        return "it is absolute"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "it has an empty, '.' or '..' part"
    return None


def path_inside(root: Path, key: str) -> Path:
    """`root / key`, refused unless it resolves inside `root` (a second guard behind `check_file_key`)."""
    target = root / check_file_key(key)
    if not target.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"file key {key!r} leads outside {root}")
    return target


def _check_shards(manifest: Manifest, split: str, origin: str) -> None:
    shards = manifest.split_shards(split)
    for shard in shards:
        if manifest.files.get(shard.path) != shard.sha256:
            raise ManifestError(f"{origin}: shard {shard.path} of split {split!r} is not listed in 'files' "
                                "with the same sha256")
    if manifest.shards is not None and sum(shard.rows for shard in shards) != manifest.splits[split].rows:
        raise ManifestError(f"{origin}: the shards of split {split!r} hold {sum(s.rows for s in shards)} rows, "
                            f"its summary says {manifest.splits[split].rows}")


def files_dir(data_dir: str | Path, manifest: Manifest | None = None) -> Path:
    """The folder holding the version's files: `data_dir` itself for a fetched copy (and a format-1
    registry folder), `data_dir/content-<sha256>` for a format-2 version read in a local registry."""
    root = Path(data_dir)
    manifest = manifest or Manifest.load(root)
    content = root / manifest.content_dir
    return content if manifest.content_dir and content.is_dir() else root


def tokenizer_dir(path: str | Path, manifest: Manifest | None = None) -> Path:
    """`path` itself if it holds tokenizer.json, else the `tokenizer` folder of the dataset version
    `path` (a fetched copy or a registry folder)."""
    path = Path(path)
    if (path / TOKENIZER_FILE).is_file():
        return path
    has_manifest = manifest is not None or (path / MANIFEST_FILE).is_file()
    return (files_dir(path, manifest) if has_manifest else path) / TOKENIZER_DIR


def manifest_digest(data_dir: str | Path) -> str:
    """sha256 of `<data_dir>/manifest.json`: identifies a dataset version's content."""
    return Manifest.load(data_dir).sha256


def hash_files(data_dir: str | Path) -> dict[str, str]:
    """sha256 of every file under `data_dir` (but manifest.json), keyed by its posix relative path."""
    root = Path(data_dir)
    hashes = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and relative != MANIFEST_FILE:
            hashes[relative] = sha256_file(path)
    return hashes


def verify_files(data_dir: str | Path, manifest: Manifest | None = None) -> Manifest:
    """Check that `data_dir` holds exactly the manifest's files, each with its recorded sha256."""
    manifest = manifest or Manifest.load(data_dir)
    root = files_dir(data_dir, manifest)
    for relative, expected in sorted(manifest.files.items()):
        path = root / relative
        if not path.is_file():
            raise MissingFileError(f"{relative} is listed in the manifest of {manifest.dataset}/{manifest.version} "
                                   f"but missing from {root}")
        actual = sha256_file(path)
        if actual != expected:
            raise ChecksumMismatchError(f"checksum mismatch for {relative} in {manifest.dataset}/{manifest.version}: "
                                        f"manifest says sha256 {expected}, file has {actual}")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    extra = sorted(present - set(manifest.files) - {MANIFEST_FILE})
    if extra:
        raise UnexpectedFileError(f"{root} holds files that the manifest does not list: {', '.join(extra)}")
    return manifest


def verify_tokenizer(data_dir: str | Path, manifest: Manifest | None = None) -> None:
    """Check the version's tokenizer.json against the manifest's `tokenizer.sha256` (its entry in
    `files` alone would accept a tokenizer swapped together with that entry)."""
    manifest = manifest or Manifest.load(data_dir)
    relative = f"{TOKENIZER_DIR}/{TOKENIZER_FILE}"
    path = files_dir(data_dir, manifest) / relative
    if not path.is_file():
        raise MissingFileError(f"{relative} of {manifest.dataset}/{manifest.version} is missing from {data_dir}")
    actual, expected = sha256_file(path), manifest.tokenizer.sha256
    if actual != expected:
        raise ChecksumMismatchError(f"checksum mismatch for {relative} in {manifest.dataset}/{manifest.version}: "
                                    f"the manifest's tokenizer.sha256 is {expected}, the file has {actual}")
