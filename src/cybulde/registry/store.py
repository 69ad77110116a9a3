"""The data registry: `<registry>/<dataset>/<version>/` folders of immutable dataset versions.

A version exists once its manifest.json exists, and nothing ever deletes or rewrites a version
that has one. Publishing (`write_version`) is safe against a second publisher of the same version,
on a local disk and on GCS alike:

1. the files are uploaded under `<version>/content-<sha256 of the manifest>/`: publishers of
   different content never write the same names, publishers of identical content write identical
   bytes (each file replaced atomically);
2. manifest.json is then *created* with a precondition (`storage.create_exclusive`: a hard link on a
   local disk, `ifGenerationMatch=0` on GCS), so exactly one publisher wins;
3. a loser gets `VersionExistsError` and removes its own content folder, unless it is the winner's
   (identical content). A publish that fails otherwise leaves its uploads (invisible: no manifest
   names them) rather than risk deleting files an identical concurrent publish is about to commit.

`download` reads only the folder that the manifest names, so leftovers never reach a fetched copy.
Versions written before format 2 keep their files beside manifest.json and download as before.
A registry is not trusted to stay inside its folders: names must match `NAME_PATTERN` in full (no
`..`, no trailing newline), the manifest's keys are checked as it is read (`check_file_key`), every
download target must resolve inside the destination, and a local registry's version must hold
plain files and folders only (a symbolic link could bring in any file of the machine).

Every storage call goes through `_call`: transient errors (dropped connections, timeouts, HTTP
408/429/5xx) are retried with bounded exponential backoff (`storage.with_retries`), and whatever
still fails becomes one `RegistryUnreachableError` line naming the URL and the cause.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from cybulde.files import sha256_file
from cybulde.registry.errors import (
    ChecksumMismatchError,
    InvalidNameError,
    ManifestDigestError,
    ManifestError,
    MissingFileError,
    RegistryUnreachableError,
    UnexpectedFileError,
    UnknownDatasetError,
    UnknownVersionError,
    UnsafePathError,
    VersionExistsError,
)
from cybulde.registry.manifest import CONTENT_DIR_PREFIX, MANIFEST_FILE, Manifest, path_inside
from cybulde.registry.storage import (
    Location,
    RetryPolicy,
    create_exclusive,
    is_temporary_name,
    is_transient,
    open_location,
    put_atomic,
    storage_error_types,
    with_retries,
)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # of a whole name (`is_valid_name`)
# Files copied at once to or from a remote registry (local copies are made one by one).
TRANSFER_THREADS = 8
DEFAULT_RETRY = RetryPolicy()  # every registry's storage calls, unless given another
T = TypeVar("T")


def is_valid_name(name: str) -> bool:
    """Whether `name` may be a dataset or version name: all of it matches `NAME_PATTERN` (`re.match`
    with `$` would accept a trailing newline)."""
    return NAME_PATTERN.fullmatch(name) is not None


def check_name(kind: str, name: str) -> str:
    if not is_valid_name(name):
        raise InvalidNameError(f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-' "
                         "(starting with a letter or digit)")
    return name


class Registry:
    """Read and write dataset versions under a local folder, `file://` or `gs://` URL."""

    def __init__(self, url: str, retry: RetryPolicy | None = None) -> None:
        self.url = url
        self.retry = retry or DEFAULT_RETRY
        try:
            self.location: Location = open_location(url)
        except Exception as error:  # credentials or client errors surface here for gs://
            raise RegistryUnreachableError(f"cannot open registry {url}: {_cause(error)}") from error

    @property
    def fs(self):  # noqa: ANN201 - an fsspec filesystem
        return self.location.fs

    def version_path(self, dataset: str, version: str) -> str:
        return self.location.join(dataset, version)

    # ---- reading -----------------------------------------------------------------------------

    def datasets(self) -> list[str]:
        """Datasets that have at least one complete version."""
        return [name for name in self._children(self.location.root) if self.versions(name)]

    def versions(self, dataset: str) -> list[str]:
        """Complete versions (those with a manifest.json) of `dataset`, sorted by name."""
        return [version for version in self._children(self.location.join(dataset))
                if self._exists(self.location.join(dataset, version, MANIFEST_FILE))]

    def exists(self, dataset: str, version: str) -> bool:
        return self._exists(self.location.join(dataset, version, MANIFEST_FILE))

    def manifest(self, dataset: str, version: str) -> Manifest:
        """The manifest of a complete version, or an error listing the datasets/versions that exist."""
        return Manifest.from_json(self._manifest_bytes(dataset, version),
                                  origin=f"{self.url}/{dataset}/{version}/{MANIFEST_FILE}")

    def _manifest_bytes(self, dataset: str, version: str) -> bytes:
        for kind, name, error in (("dataset", dataset, UnknownDatasetError), ("version", version, UnknownVersionError)):
            if not is_valid_name(name):  # also keeps names like "../x" from leaving the registry
                raise error(f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-'")
        self._require_root()
        path = self.location.join(dataset, version, MANIFEST_FILE)
        self._refuse_links([self.location.join(dataset), self.location.join(dataset, version), path])
        if not self._exists(path):
            self._raise_unknown(dataset, version)
        return self._call("read", path, lambda: self.fs.cat_file(path))

    def files_root(self, dataset: str, version: str, manifest: Manifest) -> str:
        """Where the registry keeps the files of a version (see `Manifest.content_dir`)."""
        return self.location.join(dataset, version, manifest.content_dir)

    def download(self, dataset: str, version: str, destination: str | Path,
                 expected_sha256: str | None = None) -> Manifest:
        """Copy a complete version into the empty folder `destination` and verify every file.

        Checks that the manifest is the one whose sha256 is `expected_sha256` (when given), that the
        version's files folder holds exactly the manifest's files (no symbolic link in a local
        registry), and that each downloaded file stays inside `destination` and has the manifest's
        sha256 (several files at once from a remote registry). Leaves `destination` to the caller to
        clean on failure.
        """
        manifest_bytes = self._manifest_bytes(dataset, version)
        manifest = Manifest.from_json(manifest_bytes, origin=f"{self.url}/{dataset}/{version}/{MANIFEST_FILE}")
        if expected_sha256 and manifest.sha256 != expected_sha256:
            raise ManifestDigestError(
                f"the manifest of {dataset}/{version} in registry {self.url} has sha256 {manifest.sha256}, "
                f"expected {expected_sha256}: the version changed in the registry while it was fetched")
        files_root = self.files_root(dataset, version, manifest)
        self._refuse_links([files_root], below=True)
        remote = self._files_under(files_root)
        missing = sorted(set(manifest.files) - set(remote))
        if missing:
            raise MissingFileError(f"{dataset}/{version} in registry {self.url} lacks files listed in its "
                                   f"manifest: {', '.join(missing)}")
        # Not the version's: a crashed local writer's temporary files, and (format 1, files beside the
        # manifest) the content folders of later publish attempts.
        extra = sorted(name for name in set(remote) - set(manifest.files) - {MANIFEST_FILE}
                       if not is_temporary_name(name)
                       and not (not manifest.content_dir and name.startswith(CONTENT_DIR_PREFIX)))
        if extra:
            raise UnexpectedFileError(f"{dataset}/{version} in registry {self.url} holds files its manifest "
                                      f"does not list: {', '.join(extra)}")
        destination = Path(destination)

        def fetch_one(relative: str) -> None:
            target = path_inside(destination, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._call("download", remote[relative], lambda: self.fs.get_file(remote[relative], str(target)))
            actual, expected = sha256_file(target), manifest.files[relative]
            if actual != expected:
                raise ChecksumMismatchError(
                    f"checksum mismatch for {relative} of {dataset}/{version} in registry {self.url}: "
                    f"manifest says sha256 {expected}, file has {actual}")

        self._each(fetch_one, sorted(manifest.files))
        (destination / MANIFEST_FILE).write_bytes(manifest_bytes)
        return manifest

    # ---- writing -----------------------------------------------------------------------------

    def write_version(self, dataset: str, version: str, source_dir: str | Path) -> str:
        """Publish `source_dir` (its files and a format-2 manifest.json) as a new version; see the
        module docstring for how a concurrent publisher of the same version is handled."""
        check_name("dataset", dataset)
        check_name("version", version)
        source_dir = Path(source_dir)
        if not (source_dir / MANIFEST_FILE).is_file():
            raise ValueError(f"{source_dir} has no {MANIFEST_FILE}: nothing to publish")
        manifest_bytes = (source_dir / MANIFEST_FILE).read_bytes()
        manifest = Manifest.from_json(manifest_bytes, origin=str(source_dir / MANIFEST_FILE))
        if not manifest.content_dir:
            raise ManifestError(f"{source_dir / MANIFEST_FILE} has format_version {manifest.format_version}: "
                                "new versions are published in format 2")
        self.refuse_existing(dataset, version)
        content_root = self.files_root(dataset, version, manifest)
        files = sorted(p for p in source_dir.rglob("*")
                       if p.is_file() and p.relative_to(source_dir).as_posix() != MANIFEST_FILE)
        self._each(lambda path: self._call(
            "write", content_root, lambda: put_atomic(
                self.fs, path, f"{content_root}/{path.relative_to(source_dir).as_posix()}")), files)
        manifest_path = self.location.join(dataset, version, MANIFEST_FILE)
        if not self._create_manifest(manifest_path, manifest_bytes):
            self._lost_race(dataset, version, manifest, content_root)
        return f"{self.url.rstrip('/')}/{dataset}/{version}"

    def refuse_existing(self, dataset: str, version: str) -> None:
        if self.exists(dataset, version):
            raise VersionExistsError(
                f"{dataset}/{version} already exists in registry {self.url}; versions are immutable: "
                f"publish under a new version (existing: {', '.join(self.versions(dataset))})")

    def _create_manifest(self, path: str, data: bytes) -> bool:
        """Create manifest.json exclusively; True if it now holds `data` because of this publish.

        A retried create can find the manifest created by its own earlier try (the reply was lost):
        a manifest with exactly our bytes after such a retry counts as ours.
        """
        tries = 0

        def attempt() -> bool:
            nonlocal tries
            tries += 1
            return create_exclusive(self.fs, path, data)

        if self._call("create", path, attempt):
            return True
        return tries > 1 and self._call("read", path, lambda: self.fs.cat_file(path)) == data

    def _lost_race(self, dataset: str, version: str, manifest: Manifest, content_root: str) -> None:
        winner = self.manifest(dataset, version)
        if winner.sha256 != manifest.sha256:  # our content folder is ours alone: no manifest names it
            self._call("clean up", content_root, lambda: self.fs.rm(content_root, recursive=True))
        raise VersionExistsError(
            f"{dataset}/{version} already exists in registry {self.url}: another publisher created it "
            f"while this one ran (manifest sha256 {winner.sha256}); versions are immutable: publish "
            "under a new version")

    # ---- helpers -----------------------------------------------------------------------------

    def _call(self, action: str, target: str, call: Callable[[], T]) -> T:
        """One storage call, retried on transient errors; a failure becomes a one-line error."""
        try:
            return with_retries(call, self.retry)
        except FileNotFoundError:
            raise
        except storage_error_types() as error:
            raise RegistryUnreachableError(
                f"cannot {action} {_display(self.location, target)} in registry {self.url}: {_cause(error)}"
                f"{f' (after {self.retry.attempts} tries)' if is_transient(error) else ''}") from error

    def _each(self, action: Callable[[T], None], items: list[T]) -> None:
        """`action(item)` for every item: in a bounded thread pool for a remote registry."""
        if self.location.is_local or len(items) < 2:
            for item in items:
                action(item)
            return
        with ThreadPoolExecutor(max_workers=min(TRANSFER_THREADS, len(items))) as pool:
            for future in [pool.submit(action, item) for item in items]:
                future.result()

    def _refuse_links(self, paths: list[str], below: bool = False) -> None:
        """In a local registry, refuse a symbolic link at any of `paths` (and, with `below`, anywhere
        under them); an object store has none."""
        if not self.location.is_local:
            return
        for path in paths:
            for link in [path] + (_links_below(path) if below else []):
                if os.path.islink(link):
                    raise UnsafePathError(
                        f"{_display(self.location, link)} in registry {self.url} is a symbolic link; a registry "
                        "version holds plain files and folders only")

    def _require_root(self) -> None:
        if not self._exists(self.location.root):
            raise RegistryUnreachableError(f"registry {self.url} does not exist or cannot be reached")

    def _raise_unknown(self, dataset: str, version: str) -> None:
        datasets = self.datasets()
        if dataset not in datasets:
            raise UnknownDatasetError(f"dataset {dataset!r} not found in registry {self.url}; "
                                      f"available datasets: {', '.join(datasets) or '(none)'}")
        raise UnknownVersionError(f"version {version!r} of dataset {dataset!r} not found in registry {self.url}; "
                                  f"available versions: {', '.join(self.versions(dataset))}")

    def _children(self, path: str) -> list[str]:
        try:
            entries = self._call("list", path, lambda: self.fs.ls(path, detail=True))
        except FileNotFoundError:
            return []
        names = {entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in entries
                 if entry.get("type") == "directory"}
        return sorted(name for name in names if is_valid_name(name))

    def _files_under(self, root: str) -> dict[str, str]:
        """Files below `root`, keyed by their posix path relative to it."""
        try:
            found = self._call("list", root, lambda: self.fs.find(root))
        except FileNotFoundError:
            return {}
        prefix = self.fs._strip_protocol(root).rstrip("/") + "/"
        return {path[len(prefix):]: path for path in (self.fs._strip_protocol(p) for p in found)
                if path.startswith(prefix)}

    def _exists(self, path: str) -> bool:
        # `info`, not `exists`: fsspec's generic `exists` answers False for *any* error, which
        # would make an unreachable registry look like a missing version.
        try:
            self._call("check", path, lambda: self.fs.info(path))
        except FileNotFoundError:
            return False
        return True


def _links_below(folder: str) -> list[str]:
    """The symbolic links anywhere under the local `folder` (links to folders are not followed)."""
    return [os.path.join(parent, name) for parent, folders, files in os.walk(folder)
            for name in folders + files if os.path.islink(os.path.join(parent, name))]


def _cause(error: BaseException) -> str:
    """An exception as one line: its type and its message's first line."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _display(location: Location, target: str) -> str:
    """`target` relative to the registry root, for messages (the URL is named beside it)."""
    root = location.root.rstrip("/")
    return target[len(root) + 1:] if target.startswith(root + "/") else target
