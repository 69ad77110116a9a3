"""The MLflow client's plumbing: HTTP limits, the reachability check, the global tracking URI, the git commit."""

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from cybulde.config.schema import Config
from cybulde.tracking.client import (
    TrackingError,
    check_reachable,
    configure_http,
    git_commit,
    global_tracking_uri,
)


def test_http_limits_come_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TIMEOUT", "MAX_RETRIES", "BACKOFF_FACTOR", "BACKOFF_JITTER"):
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{name}", raising=False)
    config = Config()
    config.mlflow.http_timeout_s = 7
    config.mlflow.http_max_retries = 3
    configure_http(config)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] == "0"


def test_only_http_stores_are_checked_for_an_answer() -> None:
    check_reachable("sqlite:///nowhere/mlflow.db", timeout_s=0.1)  # a file store needs no server
    with pytest.raises(TrackingError, match=r"cannot reach the MLflow tracking server at http://127\.0\.0\.1:9"):
        check_reachable("http://127.0.0.1:9", timeout_s=2)


def test_the_global_tracking_uri_is_restored_after_the_block_even_on_error(tmp_path: Path) -> None:
    before = mlflow.get_tracking_uri()
    inside = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with global_tracking_uri(inside):
        assert mlflow.get_tracking_uri() == inside
    assert mlflow.get_tracking_uri() == before
    with pytest.raises(RuntimeError), global_tracking_uri(inside):
        raise RuntimeError("the block failed")
    assert mlflow.get_tracking_uri() == before


def test_git_commit_of_a_repository_and_of_a_plain_folder(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == ""
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", *identity, "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert git_commit(tmp_path) == head and len(head) == 40


@pytest.fixture
def refusing_server() -> Iterator[tuple[str, list[int]]]:
    """A loopback HTTP server answering every request with the status at the head of its list."""
    statuses = [401]

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the handler's API
            self.send_response(statuses[0])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", statuses
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_credential_is_one_line_naming_the_server_not_the_secret(
        refusing_server: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, statuses = refusing_server
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TrackingError, match=rf"^the MLflow tracking server at {url} refused an anonymous request "
                                            r"\(401\): set MLFLOW_TRACKING_USERNAME"):
        check_reachable(url, timeout_s=5)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ci")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-value")
    with pytest.raises(TrackingError) as refused:
        check_reachable(url, timeout_s=5)
    assert str(refused.value) == (f"the MLflow tracking server at {url} refused the credential of user 'ci' (401): "
                                  "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    statuses[0] = 403
    with pytest.raises(TrackingError, match=r"refused user 'ci' \(403\)") as forbidden:
        check_reachable(url, timeout_s=5)
    assert "s3cret" not in str(refused.value) + str(forbidden.value)
    statuses[0] = 404  # any other answer: the server is there, the probe is not for it
    check_reachable(url, timeout_s=5)
