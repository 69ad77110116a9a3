"""`cybulde publish --engine dask --scheduler ADDRESS`: the batches' work as `dask.distributed` tasks.

This process (the client) streams the source, submits one task per batch (cleaning, split
assignment, tokenization: `cybulde.preparation.prepare.prepare_batch`) and writes the results in order,
so the shards and manifest are byte for byte those of the local engine. Arguments shared by every
task (the tokenizer) are sent to each worker once. At most `WINDOW_PER_WORKER` tasks per worker
are in flight, which bounds the memory of the client and of the workers.

The workers need this package installed (the training image has it) and nothing else: they read
no files; the client reads the source and writes the version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cybulde.preparation.engine import ordered_window
from cybulde.registry.errors import DataError

WINDOW_PER_WORKER = 3
CONNECT_TIMEOUT_S = 30


class DaskEngine:
    def __init__(self, scheduler: str) -> None:
        # dask's scheduler only when this engine runs
        from distributed import Client

        self.scheduler = scheduler
        try:
            self.client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise DataError(f"cannot reach the dask scheduler {scheduler}: {error}") from error

    def map_ordered(self, function: Callable[..., Any], items: Iterable[Any], *arguments: Any) -> Iterator[Any]:
        shared = [self.client.scatter(argument, broadcast=True, hash=True) if _is_large(argument) else argument
                  for argument in arguments]
        workers = max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))
        submissions = (self.client.submit(function, item, *shared, pure=False) for item in items)
        yield from ordered_window(submissions, WINDOW_PER_WORKER * workers, _result)

    def close(self) -> None:
        self.client.close()


def _result(future: Any) -> Any:
    try:
        return future.result()
    finally:
        future.release()


def _is_large(argument: Any) -> bool:
    return isinstance(argument, str | bytes) and len(argument) > 1 << 16
