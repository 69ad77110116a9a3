"""Publish and fetch through gs:// against gcp-storage-emulator (started on loopback)."""

from pathlib import Path

import pytest

from cybulde.preparation.publish import publish
from cybulde.registry.errors import ChecksumMismatchError, UnknownVersionError, VersionExistsError
from cybulde.registry.fetch import fetch
from cybulde.registry.store import Registry

pytestmark = pytest.mark.integration


def test_publish_and_fetch_through_gcs(gcs_bucket: str, tweeteval_dir: Path, tmp_path: Path,
                                       make_fetch_config) -> None:
    registry_url = f"{gcs_bucket}/registry"
    manifest = publish("tweeteval_offensive", tweeteval_dir, registry_url, "v1", max_length=24, echo=None)
    registry = Registry(registry_url)
    assert registry.datasets() == ["tweeteval_offensive"] and registry.versions("tweeteval_offensive") == ["v1"]
    with pytest.raises(VersionExistsError):
        publish("tweeteval_offensive", tweeteval_dir, registry_url, "v1", echo=None)

    destination = tmp_path / "fetched"
    cfg = make_fetch_config(registry_url, destination)
    fetch(cfg)
    first = {p.relative_to(destination).as_posix(): p.read_bytes() for p in destination.rglob("*") if p.is_file()}
    assert len(first) == len(manifest.files) + 1
    fetch(cfg)
    assert {p.relative_to(destination).as_posix(): p.read_bytes()
            for p in destination.rglob("*") if p.is_file()} == first

    with pytest.raises(UnknownVersionError, match="available versions: v1"):
        fetch(make_fetch_config(registry_url, tmp_path / "other", version="v2"))

    files = registry.files_root("tweeteval_offensive", "v1", manifest)
    assert files.endswith(f"/content-{manifest.sha256}")
    registry.fs.pipe_file(f"{files}/test-00000-of-00001.parquet", b"tampered")
    with pytest.raises(ChecksumMismatchError, match="test-00000-of-00001.parquet"):
        fetch(make_fetch_config(registry_url, tmp_path / "third"))
    assert not (tmp_path / "third").exists()
