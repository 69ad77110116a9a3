"""A fault-injecting fsspec filesystem: it wraps a real one (the local disk, or gcsfs against the
emulator) and makes chosen calls fail, a fixed number of times per call or always."""

from __future__ import annotations

import errno
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from fsspec import AbstractFileSystem

from cybulde.registry.storage import Location, is_local

# The calls the registry makes; each can be made to fail.
WRAPPED = ("info", "ls", "find", "cat_file", "get_file", "put_file", "pipe_file", "rm")
# A local atomic write goes through `.<name>.<uuid hex>.tmp`: its retries count against <name>.
_TEMPORARY = re.compile(r"/\.([^/]+)\.[0-9a-f]{32}\.tmp$")


def http_503() -> Exception:
    from gcsfs.retry import HttpError

    return HttpError({"code": 503, "message": "Service Unavailable"})


def connection_reset() -> Exception:
    return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


class FlakyFileSystem(AbstractFileSystem):
    """Each call of a wrapped method fails `failures` times for a given path before it reaches the
    real filesystem (`failures=None`: it always fails). Methods in `lose_replies` fail *after* the
    real call succeeded (the reply was lost). `calls` counts the attempts per method."""

    protocol = "flaky"
    cachable = False

    def __init__(self, target: AbstractFileSystem, failures: int | None, error: Callable[[], Exception],
                 methods: tuple[str, ...] = WRAPPED, lose_replies: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.target, self.failures, self.error, self.methods = target, failures, error, methods
        self.lose_replies = lose_replies
        self.wraps_local = is_local(target)
        self.calls: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._seen: Counter[tuple[str, str]] = Counter()

    def _strip_protocol(self, path: str) -> str:  # type: ignore[override]
        return self.target._strip_protocol(path)

    def _call(self, method: str, path: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls[method] += 1
        if method in self.methods:
            key = (method, _TEMPORARY.sub(r"/\1", str(path)))
            self._seen[key] += 1
            if self.failures is None or self._seen[key] <= self.failures:
                self.failed[method] += 1
                if method in self.lose_replies:
                    self._forward(method, path, *args, **kwargs)
                raise self.error()
        return self._forward(method, path, *args, **kwargs)

    def _forward(self, method: str, path: Any, *args: Any, **kwargs: Any) -> Any:
        if method == "put_file":
            return self.target.put_file(kwargs.pop("lpath"), path, *args, **kwargs)
        return getattr(self.target, method)(path, *args, **kwargs)

    def info(self, path: str, **kwargs: Any) -> Any:
        return self._call("info", path, **kwargs)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        return self._call("ls", path, detail=detail, **kwargs)

    def find(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self._call("find", path, *args, **kwargs)

    def cat_file(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self._call("cat_file", path, *args, **kwargs)

    def get_file(self, rpath: str, lpath: str, *args: Any, **kwargs: Any) -> Any:
        return self._call("get_file", rpath, lpath, *args, **kwargs)

    def put_file(self, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> Any:
        return self._call("put_file", rpath, *args, lpath=lpath, **kwargs)

    def pipe_file(self, path: str, value: bytes, *args: Any, **kwargs: Any) -> Any:
        return self._call("pipe_file", path, value, *args, **kwargs)

    def rm(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self._call("rm", path, *args, **kwargs)

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self._call("exists", path, **kwargs)


def flaky_location(location: Location, failures: int | None, error: Callable[[], Exception]) -> Location:
    return Location(FlakyFileSystem(location.fs, failures, error), location.root, location.url)
