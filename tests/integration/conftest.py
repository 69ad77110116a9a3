"""Session-wide real services for the integration tests: PostgreSQL, GCS emulator, MLflow server."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.gcs import make_gcs_bucket
from tests.helpers.services import (
    ARTIFACTS_PREFIX,
    GcsEmulator,
    MlflowServer,
    Postgres,
    ServiceError,
    postgres_bin_dir,
    start_mlflow_server,
    start_postgres,
)

INTEGRATION_BUCKET = "cybulde-integration"


def _postgres_unavailable() -> str:
    if postgres_bin_dir() is None:
        return ("PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) are missing: "
                "apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no `postgres` system user to run the cluster as"
    return ""


@pytest.fixture(scope="session")
def gcs_bucket_emulator(gcs_emulator: str) -> GcsEmulator:
    """The session's GCS emulator (tests/conftest.py) with the bucket the integration tests share."""
    make_gcs_bucket(gcs_emulator, INTEGRATION_BUCKET)
    return GcsEmulator(endpoint=gcs_emulator, bucket=INTEGRATION_BUCKET)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    reason = _postgres_unavailable()
    if reason:
        pytest.skip(reason)
    try:
        with start_postgres() as server:
            yield server
    except ServiceError as error:
        pytest.fail(f"PostgreSQL did not start: {error}")


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres,
                    gcs_bucket_emulator: GcsEmulator) -> Iterator[MlflowServer]:
    """`mlflow server` on PostgreSQL, with artifacts proxied to the emulated bucket; without
    authentication (test_tracking_server_auth.py starts its own server with it)."""
    destination = f"gs://{gcs_bucket_emulator.bucket}/{ARTIFACTS_PREFIX}"
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), postgres.libpq_environment(),
                             destination, gcs_bucket_emulator.environment(), options=["--no-auth"]) as server:
        yield server


@pytest.fixture
def isolated_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as cwd, with no tracking settings leaking in from the caller."""
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path
