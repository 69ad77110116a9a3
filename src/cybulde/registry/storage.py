"""fsspec access to a local folder, `file://` or `gs://` location.

gcsfs hangs against `gcp-storage-emulator` unless its experimental hierarchical-namespace support is
switched off *before* gcsfs is imported, hence the environment default at the top of this module.
`STORAGE_EMULATOR_HOST` (read by gcsfs itself) points gs:// URLs at an emulator; anonymous
credentials are used then, so no real account is looked up.

Also here: which storage errors are transient (`is_transient`) and the bounded retry around one
storage call (`with_retries`), and the two writes whose atomicity the registry relies on
(`put_atomic`, `create_exclusive`).
"""

from __future__ import annotations

import os

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import errno  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TypeVar  # noqa: E402

import fsspec  # noqa: E402
from fsspec import AbstractFileSystem  # noqa: E402
from fsspec.implementations.local import LocalFileSystem  # noqa: E402

# HTTP statuses worth another try: request timeout, too many requests, server errors.
TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT,
                               errno.EAGAIN, errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH})
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")
T = TypeVar("T")


@dataclass(frozen=True)
class Location:
    """A folder on some filesystem: `fs` plus `root` in that filesystem's path syntax."""

    fs: AbstractFileSystem
    root: str
    url: str

    @property
    def is_local(self) -> bool:
        return is_local(self.fs)

    def join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *(part.strip("/") for part in parts if part)])


def open_location(url: str) -> Location:
    """The filesystem and root path for `url`: a local path, `file://...` or `gs://bucket/prefix`."""
    if url.startswith("gs://") or url.startswith("gcs://"):
        return Location(_gcs_filesystem(), url.split("://", 1)[1].rstrip("/"), url)
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" in url:
        fs, root = fsspec.core.url_to_fs(url)
        return Location(fs, root.rstrip("/"), url)
    root = str(Path(url).expanduser().resolve())
    return Location(LocalFileSystem(), root, root)


def is_local(fs: AbstractFileSystem) -> bool:
    """Whether `fs` is the local disk (also when wrapped by a filesystem that declares so)."""
    return isinstance(fs, LocalFileSystem) or bool(getattr(fs, "wraps_local", False))


def _gcs_filesystem() -> AbstractFileSystem:
    # gcsfs (and its aiohttp) only for gs:// locations
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
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


# ---- errors and retries --------------------------------------------------------------------------

def storage_error_types() -> tuple[type[BaseException], ...]:
    """What a storage call raises when the storage, not the caller, is at fault (OS and network
    errors, and gcsfs's `HttpError`, which is not an OSError)."""
    types: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    try:
        import aiohttp
        from gcsfs.retry import HttpError

        types += [HttpError, aiohttp.ClientError]
    except ImportError:  # pragma: no cover - gcsfs is a dependency; kept for a bare fsspec install
        pass
    return tuple(types)


def is_transient(error: BaseException) -> bool:
    """Whether another try of the same call may succeed: a dropped or refused connection, a timeout,
    an HTTP 408/429/5xx. Missing files, permissions and bad requests are not transient."""
    if isinstance(error, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                          NotADirectoryError)):
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    status = getattr(error, "code", None)
    if status is not None and type(error).__name__ == "HttpError":
        try:
            return int(status) in TRANSIENT_HTTP_STATUSES
        except (TypeError, ValueError):
            return False
    try:
        import aiohttp

        if isinstance(error, (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


@dataclass(frozen=True)
class RetryPolicy:
    """At most `attempts` tries; before try k+1 wait min(`first_delay_s` * 2**(k-1), `max_delay_s`);
    no new try once `deadline_s` have passed since the first (gcsfs already retries each HTTP
    request for up to about half a minute, so a dead service must not be waited on four times)."""

    attempts: int = 4
    first_delay_s: float = 0.5
    max_delay_s: float = 4.0
    deadline_s: float = 60.0

    def delay_s(self, failed_attempts: int) -> float:
        return min(self.first_delay_s * 2 ** (failed_attempts - 1), self.max_delay_s)


def with_retries(call: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> T:
    """`call()`, tried again after a transient storage error (see `is_transient`) with exponential
    backoff, at most `policy.attempts` times in all and not after `policy.deadline_s`; the last
    error (or a non-transient one) is raised."""
    failures, started = 0, clock()
    while True:
        try:
            return call()
        except Exception as error:
            failures += 1
            delay = policy.delay_s(failures)
            if (failures >= policy.attempts or not is_transient(error)
                    or clock() - started + delay > policy.deadline_s):
                raise
            sleep(delay)


# ---- atomic writes -------------------------------------------------------------------------------

def temporary_name(target: Path) -> Path:
    """Where `put_atomic` / `create_exclusive` write `target` before it is renamed or linked into place."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")


def is_temporary_name(name: str) -> bool:
    """Whether `name` (a path's last part) is a `temporary_name` a crashed writer may have left."""
    return bool(_TEMPORARY.fullmatch(name.rsplit("/", 1)[-1]))


def put_atomic(fs: AbstractFileSystem, local: str | Path, remote: str) -> None:
    """Upload `local` to `remote` so that readers see the old file or the whole new one, never a part
    (an object store's upload already is; on a local disk a temporary file is renamed into place)."""
    if not is_local(fs):
        fs.put_file(str(local), remote)
        return
    target = Path(remote)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(target)
    try:
        fs.put_file(str(local), str(temporary))
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def create_exclusive(fs: AbstractFileSystem, remote: str, data: bytes) -> bool:
    """Create `remote` holding `data` unless it exists: True if this call created it, False if it
    existed. Atomic against concurrent creators: on a local disk the complete file is hard-linked
    into place (`link` fails if the name exists); on GCS the upload carries `ifGenerationMatch=0`
    (gcsfs `mode="create"`), so the service refuses it (412) once the object exists."""
    if not is_local(fs):
        try:
            fs.pipe_file(remote, data, mode="create")
        except FileExistsError:
            return False
        return True
    target = Path(remote)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(target)
    try:
        fs.pipe_file(str(temporary), data)
        try:
            os.link(temporary, target)
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)
