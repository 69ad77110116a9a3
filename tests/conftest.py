"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.datasets"]  # the raw-dataset fixtures of the data packages

EMULATOR_START_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _emulator_binary() -> str | None:
    beside_python = Path(sys.executable).with_name("gcp-storage-emulator")
    return str(beside_python) if beside_python.is_file() else shutil.which("gcp-storage-emulator")


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gcp-storage-emulator did not listen on 127.0.0.1:{port} within {timeout_s} s")


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A `gcp-storage-emulator` on loopback (in memory) for the whole session; yields its URL.

    Sets STORAGE_EMULATOR_HOST (read by gcsfs and google-cloud-storage) while it runs. Create
    buckets with `make_gcs_bucket(name)`. Skips the test when the emulator is not installed.
    """
    binary = _emulator_binary()
    if binary is None:
        pytest.skip("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    port = _free_port()
    process = subprocess.Popen([binary, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        _wait_for_port(port, process, EMULATOR_START_TIMEOUT_S)
        os.environ["STORAGE_EMULATOR_HOST"] = url
        yield url
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def make_gcs_bucket(emulator_url: str, name: str) -> str:
    """Create bucket `name` in the emulator at `emulator_url` (idempotent); returns `gs://name`."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs

    fs = gcsfs.GCSFileSystem(token="anon", project="test", endpoint_url=emulator_url, skip_instance_cache=True)
    if not fs.exists(name):
        fs.mkdir(name)
    return f"gs://{name}"


@pytest.fixture
def gcs_bucket(gcs_emulator: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket in the session emulator, named after the test; yields `gs://<bucket>`."""
    safe = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:40].strip("-")
    name = f"t-{safe}-{_free_port()}"
    return make_gcs_bucket(gcs_emulator, name)
