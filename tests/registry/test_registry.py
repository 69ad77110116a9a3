import json
import shutil
from pathlib import Path

import pytest

import cybulde.registry.store as registry_module
from cybulde.registry.errors import (
    ManifestError,
    RegistryUnreachableError,
    UnknownDatasetError,
    UnknownVersionError,
    VersionExistsError,
)
from cybulde.registry.manifest import MANIFEST_FILE, Manifest, files_dir
from cybulde.registry.store import Registry
from tests.helpers.raw_data import write_staged_version
from tests.helpers.snapshots import snapshot

FORMAT1_FIXTURE = Path(__file__).parent / "fixtures" / "registry-format1"


def test_write_list_and_refuse_overwrite(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "registry"))
    assert registry.datasets() == []
    source = write_staged_version(tmp_path / "staged")
    location = registry.write_version("ds", "v1", source)
    assert location.endswith("ds/v1")
    version = tmp_path / "registry" / "ds" / "v1"
    sha = Manifest.load(version).sha256
    # the files live in the folder named after the manifest's sha256, the manifest beside it
    assert files_dir(version) == version / f"content-{sha}"
    assert (version / f"content-{sha}" / "sub" / "b.txt").read_text() == "datadata"
    assert (version / MANIFEST_FILE).read_bytes() == (source / MANIFEST_FILE).read_bytes()
    registry.write_version("ds", "v2", source)
    assert registry.datasets() == ["ds"] and registry.versions("ds") == ["v1", "v2"]
    assert registry.exists("ds", "v1") and not registry.exists("ds", "v3")
    before = snapshot(version)
    with pytest.raises(VersionExistsError, match="ds/v1 already exists.*immutable"):
        registry.write_version("ds", "v1", write_staged_version(tmp_path / "other", "changed"))
    assert snapshot(version) == before


def test_manifest_is_created_last_and_exclusively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real_put, real_create = registry_module.put_atomic, registry_module.create_exclusive

    def put(fs, local, remote):  # noqa: ANN001, ANN202
        calls.append(("put", Path(remote).name))
        real_put(fs, local, remote)

    def create(fs, remote, data):  # noqa: ANN001, ANN202
        calls.append(("create", Path(remote).name))
        return real_create(fs, remote, data)

    monkeypatch.setattr(registry_module, "put_atomic", put)
    monkeypatch.setattr(registry_module, "create_exclusive", create)
    Registry(str(tmp_path / "registry")).write_version("ds", "v1", write_staged_version(tmp_path / "staged"))
    assert calls == [("put", "a.txt"), ("put", "b.txt"), ("create", MANIFEST_FILE)]


def test_a_lost_race_keeps_the_winner_and_removes_only_the_losers_files(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The window between the early "exists" check and the manifest's creation: another publisher
    commits in it. (Real concurrent processes: tests/faults/test_registry_faults.py.)"""
    root = tmp_path / "registry"
    registry = Registry(str(root))
    winner = write_staged_version(tmp_path / "winner", "winner's")
    loser = write_staged_version(tmp_path / "loser", "loser's")
    monkeypatch.setattr(Registry, "refuse_existing", lambda self, dataset, version: None)  # both pass it
    registry.write_version("ds", "v1", winner)
    winner_files = snapshot(root)
    with pytest.raises(VersionExistsError, match="another publisher created it while this one ran"):
        registry.write_version("ds", "v1", loser)
    assert snapshot(root) == winner_files  # the loser's uploads are gone, the winner's untouched
    # A loser with identical content shares the winner's folder: it must delete nothing.
    with pytest.raises(VersionExistsError):
        registry.write_version("ds", "v1", winner)
    assert snapshot(root) == winner_files


def test_leftovers_are_never_deleted_nor_fetched(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    (root / "ds" / "v1" / "content-0123").mkdir(parents=True)
    (root / "ds" / "v1" / "half-written.parquet").write_text("partial")
    (root / "ds" / "v1" / "content-0123" / "a.txt").write_text("a crashed publish")
    registry = Registry(str(root))
    assert registry.versions("ds") == [] and registry.datasets() == []
    registry.write_version("ds", "v1", write_staged_version(tmp_path / "staged"))
    assert (root / "ds" / "v1" / "half-written.parquet").read_text() == "partial"
    assert registry.versions("ds") == ["v1"]
    destination = tmp_path / "fetched"
    destination.mkdir()
    manifest = registry.download("ds", "v1", destination)
    assert sorted(snapshot(destination)) == sorted([*manifest.files, MANIFEST_FILE])
    assert snapshot(destination)["a.txt"] == b"data"
    # a writer that crashed before renaming its temporary file into place, then an identical republish
    (files_dir(root / "ds" / "v1") / f".a.txt.{'0' * 32}.tmp").write_text("half")
    again = tmp_path / "again"
    again.mkdir()
    registry.download("ds", "v1", again)
    assert snapshot(again) == snapshot(destination)


def test_format1_versions_still_download(tmp_path: Path) -> None:
    root = Path(shutil.copytree(FORMAT1_FIXTURE, tmp_path / "registry"))
    destination = tmp_path / "fetched"
    destination.mkdir()
    manifest = Registry(str(root)).download("davidson2017", "v1", destination)
    assert manifest.format_version == 1 and manifest.content_dir == ""
    assert snapshot(destination) == snapshot(root / "davidson2017" / "v1")


def test_only_format2_versions_are_written(tmp_path: Path) -> None:
    staged = Path(shutil.copytree(FORMAT1_FIXTURE / "davidson2017" / "v1", tmp_path / "staged"))
    with pytest.raises(ManifestError, match="format_version 1: new versions are published in format 2"):
        Registry(str(tmp_path / "registry")).write_version("davidson2017", "v9", staged)
    assert not (tmp_path / "registry").exists()


def test_manifest_shards_must_agree_with_files(tmp_path: Path) -> None:
    data = json.loads((write_staged_version(tmp_path / "staged") / MANIFEST_FILE).read_text())
    data["shards"] = {"train": [{"path": "a.txt", "rows": 1, "sha256": "0" * 64}]}
    with pytest.raises(ManifestError, match="shard a.txt of split 'train' is not listed in 'files'"):
        Manifest.from_json(json.dumps({**data, "splits": {"train": {
            "rows": 1, "label_counts": {}, "token_length_percentiles": {}}}}).encode())


def test_unknown_dataset_and_version_list_what_exists(published_registry: Path) -> None:
    registry = Registry(str(published_registry))
    with pytest.raises(UnknownDatasetError, match="'nope'.*available datasets: tweeteval_offensive"):
        registry.manifest("nope", "v1")
    with pytest.raises(UnknownVersionError, match="'v7'.*available versions: v1"):
        registry.manifest("tweeteval_offensive", "v7")
    with pytest.raises(UnknownVersionError, match="invalid version name"):
        registry.manifest("tweeteval_offensive", "../../etc")


def test_missing_registry_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(RegistryUnreachableError, match="does not exist"):
        Registry(str(tmp_path / "absent")).manifest("ds", "v1")


def test_file_url_and_names_are_checked(tmp_path: Path) -> None:
    registry = Registry(f"file://{tmp_path / 'reg'}")
    registry.write_version("ds", "v1", write_staged_version(tmp_path / "staged"))
    assert registry.versions("ds") == ["v1"]
    with pytest.raises(ValueError, match="invalid version name"):
        registry.write_version("ds", "../v2", tmp_path / "staged")
