"""Where a publish runs `prepare_batch`: the engines behind `cybulde publish --engine`.

An engine maps a function over a stream of items and yields the results *in order*, holding at
most `window` items in flight (bounded memory whatever the input size). `local` runs it in this
process (`workers=1`) or a pool of worker processes; `dask` (`cybulde.preparation.dask_engine`) runs it as
tasks on a `dask.distributed` cluster. The engines only differ in where the work runs: the results,
and so the published bytes, are the same.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

from cybulde.registry.errors import DataError, PublishOptionError

ENGINES = ("local", "dask")


class Engine(Protocol):
    def map_ordered(self, function: Callable[..., Any], items: Iterable[Any], *arguments: Any) -> Iterator[Any]:
        """`function(item, *arguments)` for each item, yielded in the order of `items`."""
        ...

    def close(self) -> None: ...


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class LocalEngine:
    """In this process (`workers=1`), or in a pool of `workers` processes (spawned, not forked: the
    parent may hold threads, e.g. pyarrow's). The pool is started only for a stream of more than
    one item: a small source is not worth the workers' start-up."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise DataError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: Any = None

    def map_ordered(self, function: Callable[..., Any], items: Iterable[Any], *arguments: Any) -> Iterator[Any]:
        items = iter(items)
        first = next(items, _END)
        second = next(items, _END) if first is not _END else _END
        if self.workers == 1 or second is _END:
            for item in itertools.chain([first, second], items):
                if item is not _END:
                    yield function(item, *arguments)
            return
        pool = self._start_pool()
        yield from ordered_window((pool.submit(function, item, *arguments)
                                   for item in itertools.chain([first, second], items)),
                                  2 * self.workers, lambda future: future.result())

    def _start_pool(self) -> Any:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_END = object()


def ordered_window(submissions: Iterator[Any], window: int, result: Callable[[Any], Any]) -> Iterator[Any]:
    """Results of the futures that `submissions` creates, in order, with at most `window` pending."""
    pending: deque[Any] = deque()
    for future in submissions:
        pending.append(future)
        if len(pending) >= window:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


def open_engine(name: str, workers: int | None = None, scheduler: str | None = None) -> Engine:
    """The engine `name` ("local" or "dask"); checks its options before any work is done."""
    if name == "local":
        if scheduler:
            raise PublishOptionError("--scheduler is an option of --engine dask")
        return LocalEngine(workers or default_workers())
    if name == "dask":
        if not scheduler:
            raise PublishOptionError("--engine dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
        # dask_engine imports this module
        from cybulde.preparation.dask_engine import DaskEngine

        return DaskEngine(scheduler)
    raise DataError(f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}")
