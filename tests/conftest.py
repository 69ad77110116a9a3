"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.helpers.gcs import EMULATOR_START_TIMEOUT_S, emulator_binary, make_gcs_bucket
from tests.helpers.ports import free_port, wait_for_port

pytest_plugins = ["tests.datasets"]  # the raw-dataset fixtures of the data packages


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A `gcp-storage-emulator` on loopback (in memory) for the whole session; yields its URL.

    Sets STORAGE_EMULATOR_HOST (read by gcsfs and google-cloud-storage) while it runs. Create
    buckets with `make_gcs_bucket(name)`. Skips the test when the emulator is not installed.
    """
    binary = emulator_binary()
    if binary is None:
        pytest.skip("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    port = free_port()
    process = subprocess.Popen([binary, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        wait_for_port(port, process, EMULATOR_START_TIMEOUT_S, "gcp-storage-emulator")
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


@pytest.fixture
def gcs_bucket(gcs_emulator: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket in the session emulator, named after the test; yields `gs://<bucket>`."""
    safe = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:40].strip("-")
    name = f"t-{safe}-{free_port()}"
    return make_gcs_bucket(gcs_emulator, name)
