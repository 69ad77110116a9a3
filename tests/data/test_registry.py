from pathlib import Path

import pytest

from cybulde.data.errors import RegistryUnreachableError, UnknownDatasetError, UnknownVersionError, VersionExistsError
from cybulde.data.manifest import MANIFEST_FILE
from cybulde.data.registry import Registry


def make_version(folder: Path, payload: str = "data") -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(payload)
    (folder / "sub" / "b.txt").write_text(payload * 2)
    (folder / MANIFEST_FILE).write_text("{}")
    return folder


def test_write_list_and_refuse_overwrite(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "registry"))
    assert registry.datasets() == []
    source = make_version(tmp_path / "staged")
    location = registry.write_version("ds", "v1", source)
    assert location.endswith("ds/v1")
    assert (tmp_path / "registry/ds/v1/sub/b.txt").read_text() == "datadata"
    registry.write_version("ds", "v2", source)
    assert registry.datasets() == ["ds"] and registry.versions("ds") == ["v1", "v2"]
    assert registry.exists("ds", "v1") and not registry.exists("ds", "v3")
    with pytest.raises(VersionExistsError, match="ds/v1 already exists.*immutable"):
        registry.write_version("ds", "v1", make_version(tmp_path / "other", "changed"))
    assert (tmp_path / "registry/ds/v1/a.txt").read_text() == "data"


def test_manifest_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(str(tmp_path / "registry"))
    order: list[str] = []
    original = Registry._put

    def recording_put(self: Registry, local: Path, remote: str) -> None:
        order.append(Path(remote).name)
        original(self, local, remote)

    monkeypatch.setattr(Registry, "_put", recording_put)
    registry.write_version("ds", "v1", make_version(tmp_path / "staged"))
    assert order[-1] == MANIFEST_FILE and len(order) == 3


def test_incomplete_version_is_invisible_and_replaced(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    (root / "ds" / "v1").mkdir(parents=True)
    (root / "ds" / "v1" / "half-written.parquet").write_text("partial")
    registry = Registry(str(root))
    assert registry.versions("ds") == [] and registry.datasets() == []
    registry.write_version("ds", "v1", make_version(tmp_path / "staged"))
    assert not (root / "ds" / "v1" / "half-written.parquet").exists()
    assert registry.versions("ds") == ["v1"]


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
    registry.write_version("ds", "v1", make_version(tmp_path / "staged"))
    assert registry.versions("ds") == ["v1"]
    with pytest.raises(ValueError, match="invalid version name"):
        registry.write_version("ds", "../v2", tmp_path / "staged")
