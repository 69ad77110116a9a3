"""Metrics and tags for one MLflow run, sent by a background thread so that training never waits for
(or dies with) the tracking server.

`log_metrics` and `set_tags` only queue. A daemon thread sends the queue in batches; when the server
does not answer, it logs one warning, keeps everything queued (up to `max_pending` metrics; the
oldest beyond that are dropped and counted) and tries again every `retry_s` seconds, so an outage of
any length costs training nothing and the metrics arrive once the server is back. `close` waits up
to a deadline for the queue to drain and reports, in a warning, how many metrics and tags were never
sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

BATCH_METRICS = 1000  # the most MLflow's log_batch accepts in one request
MAX_PENDING = 100_000
RETRY_S = 5.0


class MetricBuffer:
    def __init__(self, client: Any, run_id: str, retry_s: float = RETRY_S, max_pending: int = MAX_PENDING) -> None:
        self.client, self.run_id = client, run_id
        self.retry_s, self.max_pending = retry_s, max_pending
        self.sent = 0  # metrics delivered
        self.dropped = 0  # metrics given up on (queue overflow, or still queued at close)
        self.dropped_tags = 0
        self._metrics: deque[Any] = deque()
        self._tags: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._outage_since: float | None = None
        self._closed = False
        self._last_error = ""
        self._thread = threading.Thread(target=self._run, name="cybulde-mlflow-sender", daemon=True)
        self._thread.start()

    # -- producers (the training thread) ------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        # every training process imports this module, only rank 0 logs: MLflow only when it sends
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with self._lock:
            for key, value in metrics.items():
                self._metrics.append(Metric(key, float(value), now, int(step)))
            overflow = len(self._metrics) - self.max_pending
            for _ in range(max(0, overflow)):
                self._metrics.popleft()
            self.dropped += max(0, overflow)
        self._wake.set()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        with self._lock:
            self._tags.update({key: str(value) for key, value in tags.items()})
        self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._metrics) + len(self._tags)

    # -- the sender thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=self.retry_s)
            self._wake.clear()
            while self._send_one_batch():
                pass
            if self._stop.is_set():
                return
            if self._outage_since is not None:
                self._stop.wait(self.retry_s)  # back off; close() cuts the wait short

    def _send_one_batch(self) -> bool:
        """Send the oldest batch; True if something was sent and more may be waiting."""
        from mlflow.entities import RunTag

        with self._lock:
            metrics = [self._metrics[index] for index in range(min(BATCH_METRICS, len(self._metrics)))]
            tags = dict(self._tags)
        if not metrics and not tags:
            return False
        try:
            self.client.log_batch(self.run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as error:  # any failure of the server or the network: keep the data, retry later
            self._note_outage(error)
            return False
        with self._lock:
            if self._closed:
                return False  # close() has counted and cleared the queue meanwhile
            for _ in metrics:
                self._metrics.popleft()
            for key, value in tags.items():
                if self._tags.get(key) == value:
                    del self._tags[key]
        self.sent += len(metrics)
        self._note_recovery()
        return True

    def _note_outage(self, error: Exception) -> None:
        self._last_error = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("the MLflow tracking server did not take metrics for run %s (%s); training goes on, "
                        "metrics are kept and sent when it answers again", self.run_id, self._last_error)

    def _note_recovery(self) -> None:
        if self._outage_since is not None:
            log.warning("the MLflow tracking server answers again after %.0f s; buffered metrics are being sent",
                        time.monotonic() - self._outage_since)
            self._outage_since = None

    # -- shutdown -------------------------------------------------------------------------------------
    def close(self, timeout_s: float) -> int:
        """Send what is queued within `timeout_s`, then stop; returns how many metrics were dropped in all."""
        deadline = time.monotonic() + timeout_s
        while self.pending and self._thread.is_alive() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._closed = True
            self.dropped += len(self._metrics)
            self.dropped_tags += len(self._tags)
            self._metrics.clear()
            self._tags.clear()
        if self.dropped or self.dropped_tags:
            log.warning("%d metrics and %d tags of MLflow run %s were not logged: the tracking server did not "
                        "take them (last error: %s)", self.dropped, self.dropped_tags, self.run_id,
                        self._last_error or "queue full")
        return self.dropped
