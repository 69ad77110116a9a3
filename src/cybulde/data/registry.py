"""The data registry: `<registry>/<dataset>/<version>/` folders of immutable dataset versions.

A version becomes visible when its manifest.json exists, and manifest.json is written last, so an
interrupted publish leaves an incomplete version that listings, fetches and `exists` ignore (and a
later publish of the same version replaces). A complete version is never overwritten.
"""

from __future__ import annotations

import re
from pathlib import Path

from cybulde.data.errors import (
    ChecksumMismatchError,
    InvalidNameError,
    MissingFileError,
    RegistryUnreachableError,
    UnexpectedFileError,
    UnknownDatasetError,
    UnknownVersionError,
    VersionExistsError,
)
from cybulde.data.manifest import MANIFEST_FILE, Manifest
from cybulde.data.storage import Location, open_location, sha256_file

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# What gcsfs / the network / the OS raise when a location cannot be reached at all.
_UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError)


def check_name(kind: str, name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidNameError(f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-' "
                         "(starting with a letter or digit)")
    return name


class Registry:
    """Read and write dataset versions under a local folder, `file://` or `gs://` URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.location: Location = open_location(url)
        except Exception as error:  # credentials or client errors surface here for gs://
            raise RegistryUnreachableError(f"cannot open registry {url}: {error}") from error

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
            if not NAME_PATTERN.match(name):  # also keeps names like "../x" from leaving the registry
                raise error(f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-'")
        self._require_root()
        path = self.location.join(dataset, version, MANIFEST_FILE)
        if not self._exists(path):
            self._raise_unknown(dataset, version)
        try:
            return self.fs.cat_file(path)
        except _UNREACHABLE_ERRORS as error:
            raise RegistryUnreachableError(f"cannot read {path} from registry {self.url}: {error}") from error

    def download(self, dataset: str, version: str, destination: str | Path) -> Manifest:
        """Copy a complete version into the empty folder `destination` and verify every file.

        Checks that the registry holds exactly the manifest's files, and that each downloaded
        file has the manifest's sha256. Leaves `destination` to the caller to clean on failure.
        """
        manifest_bytes = self._manifest_bytes(dataset, version)
        manifest = Manifest.from_json(manifest_bytes, origin=f"{self.url}/{dataset}/{version}/{MANIFEST_FILE}")
        root = self.version_path(dataset, version)
        remote = self._files_under(root)
        missing = sorted(set(manifest.files) - set(remote))
        if missing:
            raise MissingFileError(f"{dataset}/{version} in registry {self.url} lacks files listed in its "
                                   f"manifest: {', '.join(missing)}")
        extra = sorted(set(remote) - set(manifest.files) - {MANIFEST_FILE})
        if extra:
            raise UnexpectedFileError(f"{dataset}/{version} in registry {self.url} holds files its manifest "
                                      f"does not list: {', '.join(extra)}")
        destination = Path(destination)
        for relative, expected in sorted(manifest.files.items()):
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            self._get(remote[relative], target)
            actual = sha256_file(target)
            if actual != expected:
                raise ChecksumMismatchError(
                    f"checksum mismatch for {relative} of {dataset}/{version} in registry {self.url}: "
                    f"manifest says sha256 {expected}, file has {actual}")
        (destination / MANIFEST_FILE).write_bytes(manifest_bytes)
        return manifest

    # ---- writing -----------------------------------------------------------------------------

    def write_version(self, dataset: str, version: str, source_dir: str | Path) -> str:
        """Upload `source_dir` (which holds a manifest.json) as a new version; the manifest goes last."""
        check_name("dataset", dataset)
        check_name("version", version)
        source_dir = Path(source_dir)
        if not (source_dir / MANIFEST_FILE).is_file():
            raise ValueError(f"{source_dir} has no {MANIFEST_FILE}: nothing to publish")
        self.refuse_existing(dataset, version)
        root = self.version_path(dataset, version)
        try:
            if self.fs.exists(root):  # leftovers of an interrupted publish: never visible, safe to replace
                self.fs.rm(root, recursive=True)
            files = sorted(p for p in source_dir.rglob("*")
                           if p.is_file() and p.relative_to(source_dir).as_posix() != MANIFEST_FILE)
            for path in files:
                self._put(path, self.location.join(dataset, version, path.relative_to(source_dir).as_posix()))
            self._put(source_dir / MANIFEST_FILE, self.location.join(dataset, version, MANIFEST_FILE))
        except _UNREACHABLE_ERRORS as error:
            raise RegistryUnreachableError(f"cannot write {dataset}/{version} to registry {self.url}: "
                                           f"{error}") from error
        return f"{self.url.rstrip('/')}/{dataset}/{version}"

    def refuse_existing(self, dataset: str, version: str) -> None:
        if self.exists(dataset, version):
            raise VersionExistsError(
                f"{dataset}/{version} already exists in registry {self.url}; versions are immutable: "
                f"publish under a new version (existing: {', '.join(self.versions(dataset))})")

    # ---- helpers -----------------------------------------------------------------------------

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
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        except _UNREACHABLE_ERRORS as error:
            raise RegistryUnreachableError(f"cannot list {path} in registry {self.url}: {error}") from error
        names = {entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in entries
                 if entry.get("type") == "directory"}
        return sorted(name for name in names if NAME_PATTERN.match(name))

    def _files_under(self, root: str) -> dict[str, str]:
        """Files below `root`, keyed by their posix path relative to it."""
        try:
            found = self.fs.find(root)
        except _UNREACHABLE_ERRORS as error:
            raise RegistryUnreachableError(f"cannot list {root} in registry {self.url}: {error}") from error
        prefix = self.fs._strip_protocol(root).rstrip("/") + "/"
        return {path[len(prefix):]: path for path in (self.fs._strip_protocol(p) for p in found)
                if path.startswith(prefix)}

    def _exists(self, path: str) -> bool:
        try:
            return bool(self.fs.exists(path))
        except _UNREACHABLE_ERRORS as error:
            raise RegistryUnreachableError(f"cannot reach registry {self.url}: {error}") from error

    def _get(self, remote: str, local: Path) -> None:
        try:
            self.fs.get_file(remote, str(local))
        except _UNREACHABLE_ERRORS as error:
            raise RegistryUnreachableError(f"cannot download {remote} from registry {self.url}: {error}") from error

    def _put(self, local: Path, remote: str) -> None:
        if self.location.is_local:
            Path(remote).parent.mkdir(parents=True, exist_ok=True)
        self.fs.put_file(str(local), remote)
