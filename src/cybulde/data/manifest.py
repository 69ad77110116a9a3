"""`manifest.json`: what a dataset version contains and the sha256 of every file in it.

The manifest is the last file written to a version, so a version without one is incomplete and
invisible. Its own sha256 (`Manifest.sha256`, `manifest_digest`) identifies the version's content.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cybulde.data.errors import ChecksumMismatchError, ManifestError, MissingFileError, UnexpectedFileError
from cybulde.data.storage import sha256_bytes, sha256_file

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
TOKENIZER_DIR = "tokenizer"


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
    task: str = "multiclass"
    format_version: int = FORMAT_VERSION
    _digest: str | None = field(default=None, repr=False, compare=False)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def sha256(self) -> str:
        """sha256 of the manifest.json bytes (as read, or as `to_json` writes them)."""
        return self._digest or sha256_bytes(self.to_json())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_digest")
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
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ManifestError(f"{origin} is not a valid manifest: {type(error).__name__}: {error}") from error
        if manifest.format_version != FORMAT_VERSION:
            raise ManifestError(f"{origin} has format_version {manifest.format_version}; "
                                f"this code reads format_version {FORMAT_VERSION}")
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
    root = Path(data_dir)
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
