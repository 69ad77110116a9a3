"""fsspec access to a local folder, `file://` or `gs://` location.

gcsfs hangs against `gcp-storage-emulator` unless its experimental hierarchical-namespace support is
switched off *before* gcsfs is imported, hence the environment default at the top of this module.
`STORAGE_EMULATOR_HOST` (read by gcsfs itself) points gs:// URLs at an emulator; anonymous
credentials are used then, so no real account is looked up.
"""

from __future__ import annotations

import os

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import hashlib  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from fsspec import AbstractFileSystem  # noqa: E402

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Location:
    """A folder on some filesystem: `fs` plus `root` in that filesystem's path syntax."""

    fs: AbstractFileSystem
    root: str
    url: str

    @property
    def is_local(self) -> bool:
        from fsspec.implementations.local import LocalFileSystem

        return isinstance(self.fs, LocalFileSystem)

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *(part.strip("/") for part in parts if part)])


def open_location(url: str) -> Location:
    """The filesystem and root path for `url`: a local path, `file://...` or `gs://bucket/prefix`."""
    if url.startswith("gs://") or url.startswith("gcs://"):
        return Location(_gcs_filesystem(), url.split("://", 1)[1].rstrip("/"), url)
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" in url:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url)
        return Location(fs, root.rstrip("/"), url)
    from fsspec.implementations.local import LocalFileSystem

    root = str(Path(url).expanduser().resolve())
    return Location(LocalFileSystem(), root, root)


def _gcs_filesystem() -> AbstractFileSystem:
    import gcsfs

    options: dict[str, object] = {
        # Instances are cached per arguments, not per environment: a new emulator must get a new one.
        "skip_instance_cache": True,
        # Listings must see files written by other processes (e.g. a publish running elsewhere).
        "use_listings_cache": False,
    }
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        options.update(token="anon", project="emulator", endpoint_url=_with_scheme(emulator))
    return gcsfs.GCSFileSystem(**options)


def _with_scheme(host: str) -> str:
    return host if "://" in host else f"http://{host}"


def quiet_storage_logs() -> None:
    """Command-line entry points report storage errors themselves, in one line: silence gcsfs's
    own tracebacks of failed retries (it logs them before raising)."""
    import logging

    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
