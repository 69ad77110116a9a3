import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cybulde.registry.errors import ChecksumMismatchError, ManifestError, MissingFileError, UnexpectedFileError
from cybulde.registry.manifest import Manifest, manifest_digest, verify_files
from cybulde.registry.store import Registry

FORMAT1_VERSION = Path(__file__).parent / "fixtures" / "registry-format1" / "davidson2017" / "v1"


@pytest.fixture
def version_dir(published_registry: Path, tmp_path: Path) -> Path:
    """A fetched copy (files beside manifest.json) of a format-2 version."""
    copy = tmp_path / "copy"
    copy.mkdir()
    Registry(str(published_registry)).download("tweeteval_offensive", "v1", copy)
    return copy


def test_manifest_has_the_contract_keys(version_dir: Path) -> None:
    data = json.loads((version_dir / "manifest.json").read_text())
    assert {"dataset", "version", "task", "label_names", "num_labels", "splits", "tokenizer", "max_length",
            "sources", "publish_params", "files", "format_version", "shards"} <= set(data)
    assert data["task"] == "multiclass" and data["format_version"] == 2 and data["num_labels"] == 2
    assert set(data["splits"]["train"]) >= {"rows", "label_counts", "token_length_percentiles"}
    assert set(data["tokenizer"]) >= {"name", "kind", "sha256", "vocab_size", "pad_token_id", "cls_token_id",
                                      "sep_token_id"}
    assert "manifest.json" not in data["files"]
    shards = {split: [shard["path"] for shard in data["shards"][split]] for split in data["shards"]}
    assert shards == {split: [f"{split}-00000-of-00001.parquet"] for split in ("train", "validation", "test")}
    for split, listed in data["shards"].items():
        for shard in listed:  # each shard's sha256 and row count, checked against the file itself
            assert shard["sha256"] == data["files"][shard["path"]] == hashlib.sha256(
                (version_dir / shard["path"]).read_bytes()).hexdigest()
            assert shard["rows"] == pq.ParquetFile(version_dir / shard["path"]).metadata.num_rows
        assert sum(shard["rows"] for shard in listed) == data["splits"][split]["rows"]
    assert "tokenizer/tokenizer.json" in data["files"]


def test_format1_manifest_reads_as_single_shards() -> None:
    manifest = Manifest.load(FORMAT1_VERSION)
    raw = (FORMAT1_VERSION / "manifest.json").read_bytes()
    assert manifest.format_version == 1 and manifest.shards is None and manifest.to_json() == raw
    assert [(s.path, s.rows) for s in manifest.split_shards("train")] == [("train.parquet", 72)]
    assert manifest.split_shards("test")[0].sha256 == hashlib.sha256(
        (FORMAT1_VERSION / "test.parquet").read_bytes()).hexdigest()
    assert verify_files(FORMAT1_VERSION).version == "v1"


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
    with open(version_dir / "validation-00000-of-00001.parquet", "ab") as stream:
        stream.write(b"x")
    with pytest.raises(ChecksumMismatchError, match="validation-00000-of-00001.parquet"):
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


def test_a_multilabel_manifest_round_trips_and_a_single_label_one_keeps_its_keys(tmp_path):
    from tests.helpers.tiny_data import make_data_dir, make_multilabel_data_dir

    multi = make_multilabel_data_dir(tmp_path / "multi")
    raw = json.loads((multi / "manifest.json").read_bytes())
    assert raw["task"] == "multilabel" and raw["source_names"] == ["alpha", "beta", "gamma"]
    assert raw["splits"]["train"]["answers"]["gamma"]["abusive"] == {"yes": 0, "no": 0, "missing": 24}
    loaded = Manifest.load(multi)
    assert loaded.is_multilabel and loaded.to_json() == (multi / "manifest.json").read_bytes()

    single = json.loads((make_data_dir(tmp_path / "single") / "manifest.json").read_bytes())
    assert not {"source_names", "label_map"} & set(single)
    assert not {"source_rows", "answers"} & set(single["splits"]["train"])


def test_a_multilabel_manifest_without_its_sources_is_refused(tmp_path):
    from tests.helpers.tiny_data import make_multilabel_data_dir

    path = make_multilabel_data_dir(tmp_path / "multi") / "manifest.json"
    raw = json.loads(path.read_bytes())
    del raw["source_names"]
    with pytest.raises(ManifestError, match="needs its 'source_names'"):
        Manifest.from_json(json.dumps(raw).encode())
