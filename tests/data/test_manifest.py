import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cybulde.data.errors import ChecksumMismatchError, ManifestError, MissingFileError, UnexpectedFileError
from cybulde.data.manifest import Manifest, manifest_digest, verify_files


@pytest.fixture
def version_dir(published_registry: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(published_registry / "tweeteval_offensive" / "v1", copy)
    return copy


def test_manifest_has_the_contract_keys(version_dir: Path) -> None:
    data = json.loads((version_dir / "manifest.json").read_text())
    assert {"dataset", "version", "task", "label_names", "num_labels", "splits", "tokenizer", "max_length",
            "sources", "publish_params", "files", "format_version"} <= set(data)
    assert data["task"] == "multiclass" and data["format_version"] == 1 and data["num_labels"] == 2
    assert set(data["splits"]["train"]) >= {"rows", "label_counts", "token_length_percentiles"}
    assert set(data["tokenizer"]) >= {"name", "kind", "sha256", "vocab_size", "pad_token_id", "cls_token_id",
                                      "sep_token_id"}
    assert "manifest.json" not in data["files"]
    assert {"train.parquet", "validation.parquet", "test.parquet", "tokenizer/tokenizer.json"} <= set(data["files"])


def test_round_trip_and_digest(version_dir: Path) -> None:
    manifest = Manifest.load(version_dir)
    raw = (version_dir / "manifest.json").read_bytes()
    assert manifest.sha256 == hashlib.sha256(raw).hexdigest() == manifest_digest(version_dir)
    assert manifest.to_json() == raw
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.tokenizer.sha256 == hashlib.sha256((version_dir / "tokenizer/tokenizer.json").read_bytes()).hexdigest()


def test_verify_accepts_an_intact_copy(version_dir: Path) -> None:
    assert verify_files(version_dir).dataset == "tweeteval_offensive"


def test_verify_names_a_tampered_file(version_dir: Path) -> None:
    with open(version_dir / "validation.parquet", "ab") as stream:
        stream.write(b"x")
    with pytest.raises(ChecksumMismatchError, match="validation.parquet"):
        verify_files(version_dir)


def test_verify_names_missing_and_extra_files(version_dir: Path) -> None:
    (version_dir / "extra.txt").write_text("?")
    with pytest.raises(UnexpectedFileError, match="extra.txt"):
        verify_files(version_dir)
    (version_dir / "tokenizer" / "tokenizer_config.json").unlink()
    with pytest.raises(MissingFileError, match="tokenizer/tokenizer_config.json"):
        verify_files(version_dir)


def test_invalid_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest.json"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"dataset": "x"}')
    with pytest.raises(ManifestError, match="not a valid manifest"):
        Manifest.load(tmp_path)
