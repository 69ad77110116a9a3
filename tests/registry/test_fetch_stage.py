import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from cybulde.registry.errors import (
    ChecksumMismatchError,
    MissingFileError,
    RegistryUnreachableError,
    UnexpectedFileError,
    UnknownDatasetError,
    UnknownVersionError,
)
from cybulde.registry.fetch import fetch
from cybulde.registry.manifest import Manifest, files_dir
from tests.helpers.snapshots import snapshot

STAGE = Path(__file__).resolve().parents[2] / "stages" / "fetch.py"


@pytest.fixture
def registry_copy(published_registry: Path, tmp_path: Path) -> Path:
    """A private copy of the published registry that a test may tamper with."""
    return Path(shutil.copytree(published_registry, tmp_path / "registry"))


def test_fetch_twice_gives_identical_bytes(published_registry: Path, tmp_path: Path, make_fetch_config) -> None:
    destination = tmp_path / "data" / "fetched"
    cfg = make_fetch_config(published_registry, destination)
    assert fetch(cfg) == destination
    first = snapshot(destination)
    version = published_registry / "tweeteval_offensive" / "v1"
    assert first == {**snapshot(files_dir(version)), "manifest.json": (version / "manifest.json").read_bytes()}
    (destination / "stale.txt").write_text("from an earlier run")
    fetch(cfg)
    assert snapshot(destination) == first
    assert sorted(os.listdir(destination.parent)) == ["fetched"]  # no temporary folders left


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_fetched_copy_gets_the_umasks_modes(published_registry: Path, tmp_path: Path, make_fetch_config,
                                                umask: int) -> None:
    """The staging folder is made private (mkdtemp); the fetched copy is ordinary data other users may read."""
    destination = tmp_path / "data" / "fetched"
    previous = os.umask(umask)
    try:
        fetch(make_fetch_config(published_registry, destination))
    finally:
        os.umask(previous)
    modes = {path.stat().st_mode & 0o777 for path in [destination, *destination.rglob("*")] if path.is_dir()}
    assert modes == {0o777 & ~umask}
    modes = {path.stat().st_mode & 0o777 for path in destination.rglob("*") if path.is_file()}
    assert modes == {0o666 & ~umask}


def test_tampered_registry_file_is_named_and_nothing_is_left(registry_copy: Path, tmp_path: Path,
                                                            make_fetch_config) -> None:
    with open(files_dir(registry_copy / "tweeteval_offensive" / "v1") / "train-00000-of-00001.parquet", "r+b") as stream:
        stream.seek(100)
        stream.write(b"\x00\x01")
    destination = tmp_path / "out" / "fetched"
    with pytest.raises(ChecksumMismatchError, match="train-00000-of-00001.parquet"):
        fetch(make_fetch_config(registry_copy, destination))
    assert os.listdir(destination.parent) == []


def test_failed_fetch_keeps_the_previous_copy(registry_copy: Path, published_registry: Path, tmp_path: Path,
                                             make_fetch_config) -> None:
    destination = tmp_path / "fetched"
    fetch(make_fetch_config(published_registry, destination))
    before = snapshot(destination)
    (files_dir(registry_copy / "tweeteval_offensive" / "v1") / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(MissingFileError, match="tokenizer/tokenizer.json"):
        fetch(make_fetch_config(registry_copy, destination))
    assert snapshot(destination) == before and sorted(os.listdir(tmp_path)) == ["fetched", "registry"]


def test_extra_registry_file_is_refused(registry_copy: Path, tmp_path: Path, make_fetch_config) -> None:
    (files_dir(registry_copy / "tweeteval_offensive" / "v1") / "surprise.parquet").write_bytes(b"?")
    with pytest.raises(UnexpectedFileError, match="surprise.parquet"):
        fetch(make_fetch_config(registry_copy, tmp_path / "fetched"))


def test_files_outside_the_manifests_folder_are_ignored(registry_copy: Path, tmp_path: Path,
                                                       make_fetch_config) -> None:
    """A crashed or losing publisher's uploads (another content folder) never reach a fetched copy."""
    version = registry_copy / "tweeteval_offensive" / "v1"
    leftover = version / ("content-" + "f" * 64)
    shutil.copytree(files_dir(version), leftover)
    (leftover / "train-00000-of-00001.parquet").write_bytes(b"someone else's shard")
    destination = tmp_path / "fetched"
    fetch(make_fetch_config(registry_copy, destination))
    assert snapshot(destination) == {**snapshot(files_dir(version)),
                                     "manifest.json": (version / "manifest.json").read_bytes()}


def test_a_format1_version_fetches(tmp_path: Path, make_fetch_config) -> None:
    registry = Path(shutil.copytree(Path(__file__).parent / "fixtures" / "registry-format1", tmp_path / "registry"))
    destination = tmp_path / "fetched"
    fetch(make_fetch_config(registry, destination, dataset="davidson2017"))
    assert snapshot(destination) == snapshot(registry / "davidson2017" / "v1")


def test_a_multilabel_version_fetches_and_verifies(tmp_path: Path, make_fetch_config) -> None:
    from cybulde.preparation.publish import publish_questions
    from cybulde.registry.splits import read_split_columns
    from tests.helpers.raw_data import write_davidson, write_tweeteval

    datasets = tmp_path / "datasets"
    write_tweeteval(datasets / "tweeteval_offensive")
    write_davidson(datasets / "davidson2017")
    write_tweeteval(datasets / "tweeteval_hate", ["not-hate", "hate"])
    questions = Path(__file__).resolve().parents[2] / "configs" / "questions" / "harm.yaml"
    published = publish_questions(questions, str(tmp_path / "registry"), "v1", datasets_dir=datasets,
                                  max_rows_per_split=6, max_length=16, workers=1, echo=None)
    destination = tmp_path / "fetched"
    cfg = make_fetch_config(tmp_path / "registry", destination, dataset="harm")
    cfg.data.manifest_sha256 = published.sha256
    fetch(cfg)
    version = tmp_path / "registry" / "harm" / "v1"
    assert snapshot(destination) == {**snapshot(files_dir(version)),
                                     "manifest.json": (version / "manifest.json").read_bytes()}
    fetched = Manifest.load(destination)
    assert fetched.is_multilabel and fetched.source_names == published.source_names
    assert fetched.splits == published.splits and fetched.label_map == published.label_map
    rows = read_split_columns(destination, "test", ("source", "labels"))
    assert len(rows["labels"]) == 18 and all(len(labels) == 2 for labels in rows["labels"])
    with open(files_dir(version) / "test-00000-of-00001.parquet", "r+b") as stream:  # verified like any other
        stream.seek(100)
        stream.write(b"\x00\x01")
    with pytest.raises(ChecksumMismatchError, match="test-00000-of-00001.parquet"):
        fetch(cfg)


def test_unknown_names_and_unreachable_registry(published_registry: Path, tmp_path: Path,
                                                make_fetch_config) -> None:
    destination = tmp_path / "fetched"
    with pytest.raises(UnknownVersionError, match="available versions: v1"):
        fetch(make_fetch_config(published_registry, destination, version="v2"))
    with pytest.raises(UnknownDatasetError, match="available datasets: tweeteval_offensive"):
        fetch(make_fetch_config(published_registry, destination, dataset="hate"))
    with pytest.raises(RegistryUnreachableError):
        fetch(make_fetch_config(tmp_path / "no-registry", destination))
    assert not destination.exists() and os.listdir(tmp_path) == []


def test_stage_entry_point(published_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "params.yaml").write_text(
        f"data:\n  registry: {published_registry}\n  dataset: tweeteval_offensive\n  version: v1\n"
        "  fetched_dir: data/fetched\n  manifest_sha256: ''\n")
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("fetch_stage", STAGE)
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    assert stage.main([]) == 0
    assert Manifest.load(tmp_path / "data" / "fetched").version == "v1"
    capsys.readouterr()
    assert stage.main(["data.version=v9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fetch: error: version 'v9'") and err.count("\n") == 1
    assert stage.main(["data.nonsense=1"]) == 1
    assert "fetch: error:" in capsys.readouterr().err
