"""MetricBuffer: metrics reach the run after an outage, the caller never waits, losses are counted."""

import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cybulde.tracking.buffer import MetricBuffer


class Outage(ConnectionError):
    pass


class SwitchableClient:
    """A real MLflow client (SQLite store) whose log_batch hangs, then fails, while `down` is set."""

    def __init__(self, uri: str) -> None:
        self.real = MlflowClient(uri)
        self.down = threading.Event()
        self.attempts = 0

    def log_batch(self, run_id, metrics=(), tags=()):
        self.attempts += 1
        if self.down.is_set():
            time.sleep(0.3)  # a request that times out
            raise Outage("connection refused")
        self.real.log_batch(run_id, metrics=list(metrics), tags=list(tags))


@pytest.fixture
def client(tmp_path: Path) -> SwitchableClient:
    return SwitchableClient(f"sqlite:///{tmp_path}/mlflow.db")


def new_run(client: SwitchableClient) -> str:
    experiment = client.real.create_experiment("buffer")
    return client.real.create_run(experiment).info.run_id


def test_metrics_logged_during_an_outage_arrive_when_the_server_is_back(client, caplog):
    run_id = new_run(client)
    buffer = MetricBuffer(client, run_id, retry_s=0.2)
    client.down.set()
    started = time.monotonic()
    for step in range(50):
        buffer.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    buffer.set_tags({"cybulde.model_sha256": "abc"})
    assert time.monotonic() - started < 0.2  # the caller never waits for the server
    time.sleep(1.0)
    assert client.attempts >= 2 and buffer.pending == 51  # retried, nothing lost, nothing sent
    client.down.clear()
    assert buffer.close(timeout_s=10) == 0

    history = client.real.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (step, 1.0 / (step + 1)) for step in range(50)]
    assert client.real.get_run(run_id).data.tags["cybulde.model_sha256"] == "abc"
    assert "did not take metrics" in caplog.text and "answers again" in caplog.text


def test_what_never_reaches_the_server_is_counted(client, caplog):
    run_id = new_run(client)
    buffer = MetricBuffer(client, run_id, retry_s=0.1)
    buffer.log_metrics({"a": 1.0, "b": 2.0}, step=0)
    buffer.close(timeout_s=5)
    client.down.set()
    late = MetricBuffer(client, run_id, retry_s=0.1)
    late.log_metrics({"a": 3.0, "b": 4.0, "c": 5.0}, step=1)
    late.set_tags({"t": "x"})
    assert late.close(timeout_s=1.0) == 3
    assert "3 metrics and 1 tags of MLflow run" in caplog.text
    assert {key: m.value for key, m in ((k, client.real.get_metric_history(run_id, k)[-1]) for k in "ab")} == {
        "a": 1.0, "b": 2.0}


def test_a_full_queue_drops_the_oldest_and_counts_them(client):
    run_id = new_run(client)
    client.down.set()
    buffer = MetricBuffer(client, run_id, retry_s=0.05, max_pending=10)
    for step in range(25):
        buffer.log_metrics({"m": float(step)}, step=step)
    assert buffer.dropped == 15
    client.down.clear()
    buffer.close(timeout_s=10)
    assert sorted(m.step for m in client.real.get_metric_history(run_id, "m")) == list(range(15, 25))
