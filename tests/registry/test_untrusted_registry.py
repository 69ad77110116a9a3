"""A registry that someone else can write to: crafted versions are refused by `fetch`, with one line
naming the key or file, and nothing is written outside fetch's staging folder.

Each attack runs against a local registry folder and an fsspec `memory://` registry (an object
store: a key `../../x` is a legal object name there, as on GCS, and a listing returns it as it is).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from cybulde.cli import main as cli_main
from cybulde.files import sha256_bytes
from cybulde.registry.errors import (
    ChecksumMismatchError,
    InvalidNameError,
    ManifestDigestError,
    UnknownDatasetError,
    UnknownVersionError,
    UnsafePathError,
)
from cybulde.registry.fetch import fetch
from cybulde.registry.manifest import MANIFEST_FILE, Manifest, files_dir, path_inside
from cybulde.registry.store import Registry, check_name
from tests.helpers.raw_data import fetch_config
from tests.helpers.snapshots import snapshot

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "stages" / "fetch.py"
DATASET, VERSION = "tweeteval_offensive", "v1"
TOKENIZER_KEY = "tokenizer/tokenizer.json"
Version = tuple[dict[str, Any], dict[str, bytes]]  # a manifest (as a dict) and its files (key -> bytes)


# ---- crafting versions --------------------------------------------------------------------------

@pytest.fixture
def original(published_registry: Path) -> Version:
    """The published version's manifest and files."""
    version = published_registry / DATASET / VERSION
    return json.loads((version / MANIFEST_FILE).read_bytes()), snapshot(files_dir(version))


@pytest.fixture(params=["local", "memory"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty registry: a local folder, or a `memory://` one (removed after the test)."""
    if request.param == "local":
        yield str(tmp_path / "registry")
        return
    url = f"memory://cybulde-{uuid.uuid4().hex}/registry"
    yield url
    fsspec.filesystem("memory").rm(url.split("://", 1)[1].split("/", 1)[0], recursive=True)


def craft(url: str, manifest: dict[str, Any], files: dict[str, bytes]) -> str:
    """Write `DATASET/VERSION` into the registry at `url` as a publisher with write access could:
    `files` under `content-<manifest sha256>/` joined as plain strings (no path normalisation; a
    local folder cannot hold a key that leads out of it, so none is written), then manifest.json;
    return the manifest's sha256."""
    registry = Registry(url)
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    digest = sha256_bytes(data)
    version = registry.version_path(DATASET, VERSION)
    if registry.location.is_local and Path(version).exists():
        shutil.rmtree(version)
    elif not registry.location.is_local and registry.fs.exists(version):
        registry.fs.rm(version, recursive=True)
    for key, content in files.items():
        path = f"{version}/content-{digest}/{key}"
        if registry.location.is_local:
            if not Path(path).resolve().is_relative_to(Path(version).resolve()):
                continue
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        registry.fs.pipe_file(path, content)
    registry.fs.pipe_file(f"{version}/{MANIFEST_FILE}", data)
    return digest


def with_file(manifest: dict[str, Any], files: dict[str, bytes], key: str, content: bytes) -> Version:
    """The version with `key` added (or replaced), its manifest entry consistent with its bytes."""
    return ({**manifest, "files": {**manifest["files"], key: sha256_bytes(content)}}, {**files, key: content})


def tree(folder: Path, leave_out: str = "registry") -> list[str]:
    """Every path under `folder` (files and folders), but those under `leave_out`."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.relative_to(folder).parts[0] != leave_out)


def refused(tmp_path: Path, registry: str, error: type[Exception], message: str, **config: str) -> None:
    """`fetch` into `tmp_path/work/data/fetched` raises `error` (one line matching `message`), and
    leaves `tmp_path` as it was (but the registry): no staging folder, no file where a key pointed."""
    destination = tmp_path / "work" / "data" / "fetched"
    destination.parent.mkdir(parents=True, exist_ok=True)
    before = tree(tmp_path)
    cfg = fetch_config(registry, destination)
    for key, value in config.items():
        setattr(cfg.data, key, value)
    with pytest.raises(error, match=message) as caught:
        fetch(cfg)
    assert "\n" not in str(caught.value)
    assert tree(tmp_path) == before


# ---- the attacks ----------------------------------------------------------------------------------

def test_the_untampered_version_fetches_from_both_kinds_of_registry(registry_url: str, tmp_path: Path,
                                                                      original: Version) -> None:
    digest = craft(registry_url, *original)
    destination = tmp_path / "fetched"
    fetch(fetch_config(registry_url, destination))
    assert Manifest.load(destination).sha256 == digest


@pytest.mark.parametrize("key", ["../../x", "tokenizer/../../../x", "../../../../x"])
def test_a_traversal_key_is_refused_and_nothing_is_written_outside_staging(registry_url: str, tmp_path: Path,
                                                                           original: Version, key: str) -> None:
    craft(registry_url, *with_file(*original, key, b"planted"))
    refused(tmp_path, registry_url, UnsafePathError, f"file key '{key}' is refused: it has an empty, '.' or '..'")
    assert not (tmp_path / "x").exists() and not (tmp_path / "work" / "x").exists()


def test_an_absolute_key_is_refused(registry_url: str, tmp_path: Path, original: Version) -> None:
    target = tmp_path / "work" / "planted"
    craft(registry_url, *with_file(*original, str(target), b"planted"))
    refused(tmp_path, registry_url, UnsafePathError, f"file key '{target}' is refused: it is absolute")
    assert not target.exists()


@pytest.mark.parametrize(("key", "problem"), [
    ("tokenizer\\..\\..\\x", "a backslash"), ("train.parquet\n", "a control character"),
    ("a\x1b[2Jb", "a control character"), ("a//b", "an empty"), ("./a", "'.'"), ("", "empty")])
def test_keys_with_backslashes_control_characters_or_odd_parts_are_refused(registry_url: str, tmp_path: Path,
                                                                           original: Version, key: str,
                                                                           problem: str) -> None:
    manifest, files = with_file(*original, key, b"planted")
    craft(registry_url, manifest, {name: content for name, content in files.items() if name != key})
    refused(tmp_path, registry_url, UnsafePathError, f"file key {re.escape(repr(key))} is refused: .*{problem}")


def test_a_resolved_path_outside_the_destination_is_refused(tmp_path: Path) -> None:
    """The second guard: even a plain key may not resolve out of the folder (through a link in it)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    destination = tmp_path / "destination"
    destination.mkdir()
    (destination / "tokenizer").symlink_to(outside, target_is_directory=True)
    assert path_inside(destination, "train.parquet") == destination / "train.parquet"
    with pytest.raises(UnsafePathError, match="file key 'tokenizer/tokenizer.json' leads outside"):
        path_inside(destination, "tokenizer/tokenizer.json")


def make_link(version: Path, place: str, outside: Path) -> None:
    """Replace `place` of a local registry's version by a symbolic link to an identical copy outside
    the registry (so only the link itself is wrong: every byte still has the manifest's sha256)."""
    content = files_dir(version)
    path = {"shard": content / "train-00000-of-00001.parquet", "tokenizer folder": content / "tokenizer",
            "manifest": version / MANIFEST_FILE, "version folder": version, "dataset folder": version.parent}[place]
    copy = outside / path.name
    (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy)
    (shutil.rmtree if path.is_dir() else Path.unlink)(path)
    path.symlink_to(copy, target_is_directory=copy.is_dir())


@pytest.mark.parametrize("place", ["shard", "tokenizer folder", "manifest", "version folder", "dataset folder"])
def test_a_symbolic_link_in_a_local_registry_is_refused(published_registry: Path, tmp_path: Path,
                                                        place: str) -> None:
    registry = Path(shutil.copytree(published_registry, tmp_path / "registry"))
    outside = tmp_path / "registry-outside"
    outside.mkdir()
    make_link(registry / DATASET / VERSION, place, outside)
    before = snapshot(outside)
    refused(tmp_path, str(registry), UnsafePathError, "is a symbolic link; a registry version holds plain files")
    assert snapshot(outside) == before


def test_a_swapped_tokenizer_is_refused(registry_url: str, tmp_path: Path, original: Version) -> None:
    """tokenizer.json replaced together with its entry in `files`: only `tokenizer.sha256` tells."""
    manifest, files = original
    swapped = json.loads(files[TOKENIZER_KEY])
    swapped["added_tokens"][0]["content"] = "[SWAPPED]"
    craft(registry_url, *with_file(manifest, files, TOKENIZER_KEY, json.dumps(swapped).encode()))
    refused(tmp_path, registry_url, ChecksumMismatchError,
            f"{TOKENIZER_KEY} in {DATASET}/{VERSION}: the manifest's tokenizer.sha256 is {manifest['tokenizer']['sha256']}")


def test_a_changed_version_is_refused_against_the_pin(registry_url: str, tmp_path: Path,
                                                      original: Version) -> None:
    manifest, files = original
    pinned = craft(registry_url, manifest, files)
    destination = tmp_path / "work" / "data" / "fetched"
    cfg = fetch_config(registry_url, destination)
    cfg.data.manifest_sha256 = pinned
    fetch(cfg)
    fetched = snapshot(destination)
    changed = craft(registry_url, {**manifest, "label_names": list(reversed(manifest["label_names"]))}, files)
    with pytest.raises(ManifestDigestError, match=f"data.manifest_sha256 pins manifest sha256 {pinned}, but "
                       f"{DATASET}/{VERSION} in registry .* has manifest sha256 {changed}") as caught:
        fetch(cfg)
    assert "\n" not in str(caught.value)
    assert snapshot(destination) == fetched and tree(tmp_path) == ["work", "work/data", "work/data/fetched",
                                                                  *(f"work/data/fetched/{name}" for name in
                                                                    tree(destination))]


def test_a_version_changed_between_reading_and_downloading_is_refused(registry_url: str, tmp_path: Path,
                                                                      original: Version) -> None:
    digest = craft(registry_url, *original)
    destination = tmp_path / "destination"
    destination.mkdir()
    with pytest.raises(ManifestDigestError, match=f"has sha256 {digest}, expected {'0' * 64}: the version changed"):
        Registry(registry_url).download(DATASET, VERSION, destination, expected_sha256="0" * 64)
    assert os.listdir(destination) == []


# ---- the fetch stage: the pin in its message, a mismatch in one line --------------------------------

def run_stage(project: Path, registry: Path, pin: str) -> subprocess.CompletedProcess:
    (project / "params.yaml").write_text(f"data:\n  registry: {registry}\n  dataset: {DATASET}\n  version: {VERSION}\n"
                                         f"  fetched_dir: data/fetched\n  manifest_sha256: '{pin}'\n")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "src"), "HOME": str(project)}
    return subprocess.run([sys.executable, str(STAGE)], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_stage_prints_the_pin_and_refuses_a_changed_version(published_registry: Path, tmp_path: Path,
                                                                original: Version) -> None:
    registry = tmp_path / "registry"
    digest = craft(str(registry), *original)
    project = tmp_path / "project"
    project.mkdir()
    unpinned = run_stage(project, registry, "")
    assert unpinned.returncode == 0, unpinned.stderr
    assert "is not pinned (data.manifest_sha256 is empty" in unpinned.stderr
    assert f"pin its manifest with data.manifest_sha256={digest}" in unpinned.stderr
    assert unpinned.stdout.rstrip().endswith(f"(data.manifest_sha256={digest})")
    fetched = snapshot(project / "data" / "fetched")
    pinned = run_stage(project, registry, digest)
    assert pinned.returncode == 0 and "not pinned" not in pinned.stderr, pinned.stderr
    manifest, files = original
    changed = craft(str(registry), {**manifest, "publish_params": {**manifest["publish_params"], "seed": 1}}, files)
    refused_run = run_stage(project, registry, digest)
    assert refused_run.returncode == 1
    assert refused_run.stderr.count("\n") == 1 and refused_run.stderr.startswith(
        f"fetch: error: data.manifest_sha256 pins manifest sha256 {digest}, but {DATASET}/{VERSION} in registry "
        f"{registry} has manifest sha256 {changed}")
    assert snapshot(project / "data" / "fetched") == fetched and sorted(os.listdir(project / "data")) == ["fetched"]


def test_publish_prints_the_pin(published_registry: Path, capsys: pytest.CaptureFixture) -> None:
    digest = Registry(str(published_registry)).manifest(DATASET, VERSION).sha256
    assert cli_main(["publish", "--source", DATASET, "--raw-dir", "unused", "--registry", str(published_registry),
                     "--version", VERSION, "--if-missing", "--print-pin"]) == 0
    assert capsys.readouterr().out == f"data.manifest_sha256={digest}\n"


# ---- names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["v1\n", "v1\r", "v1\x00", "v\n1", "../v1"])
def test_names_with_control_characters_are_refused(published_registry: Path, tmp_path: Path, name: str,
                                                   capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(InvalidNameError, match=f"invalid version name {re.escape(repr(name))}"):
        check_name("version", name)
    registry = tmp_path / "new-registry"
    assert cli_main(["publish", "--source", DATASET, "--raw-dir", str(tmp_path), "--registry", str(registry),
                     "--version", name]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid version name" in err and not registry.exists()
    refused(tmp_path, str(published_registry), UnknownVersionError, "invalid version name", version=name)


@pytest.mark.parametrize("name", [f"{DATASET}\n", f"{DATASET}\x1b", "../" + DATASET])
def test_dataset_names_with_control_characters_are_refused(published_registry: Path, tmp_path: Path, name: str,
                                                           capsys: pytest.CaptureFixture) -> None:
    registry = tmp_path / "new-registry"
    assert cli_main(["publish", "--source", DATASET, "--raw-dir", str(tmp_path), "--registry", str(registry),
                     "--dataset", name, "--version", VERSION]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid dataset name" in err and not registry.exists()
    refused(tmp_path, str(published_registry), UnknownDatasetError, "invalid dataset name", dataset=name)


def test_a_folder_named_with_a_newline_is_not_a_version(published_registry: Path, tmp_path: Path) -> None:
    registry = Path(shutil.copytree(published_registry, tmp_path / "registry"))
    shutil.copytree(registry / DATASET / VERSION, registry / DATASET / "v2\n")
    assert Registry(str(registry)).versions(DATASET) == [VERSION]
