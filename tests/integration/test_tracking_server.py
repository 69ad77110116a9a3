"""The project's tracking code against a real `mlflow server` (PostgreSQL store, artifacts in GCS)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cybulde.config.schema import Config
from cybulde.tracking.client import MODEL_TAG
from cybulde.tracking.lineage import model_digest
from cybulde.tracking.run import PipelineRun
from tests.helpers.services import ARTIFACTS_PREFIX, GcsEmulator, MlflowServer, Postgres, list_bucket

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _server_config(server: MlflowServer) -> Config:
    config = Config()
    config.mlflow.tracking_uri = server.url
    config.mlflow.experiment = f"integration-{uuid.uuid4().hex[:8]}"
    return config


def _fake_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"not really weights " + uuid.uuid4().bytes)
    (folder / "config.json").write_text(json.dumps({"num_labels": 2}))
    return folder


@pytest.fixture
def logged_run(tracking_server: MlflowServer, isolated_project: Path) -> tuple[PipelineRun, Path]:
    """A run opened and finished through PipelineRun, with a metric, a dict and a folder of artifacts."""
    config = _server_config(tracking_server)
    model_dir = _fake_model(isolated_project / "model")
    run = PipelineRun.for_model(config, model_dir)
    with run.stage("test", final=True):
        run.log_metrics({"test/macro_f1": 0.75}, step=1)
        run.log_dict({"threshold": 0.5}, "metrics/validation.json")
        run.log_artifact(model_dir, "model")
    return run, model_dir


def test_run_rows_are_stored_in_postgres(logged_run: tuple[PipelineRun, Path], tracking_server: MlflowServer,
                                         postgres: Postgres) -> None:
    run, model_dir = logged_run
    fetched = MlflowClient(tracking_server.url).get_run(run.run_id)
    assert fetched.info.status == "FINISHED"
    assert fetched.data.metrics["test/macro_f1"] == pytest.approx(0.75)
    assert fetched.data.params["model.head"] == "softmax"
    assert fetched.data.tags[MODEL_TAG] == model_digest(model_dir)
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.run_id,))
        assert cursor.fetchall() == [("FINISHED",)]
        cursor.execute("SELECT value FROM metrics WHERE run_uuid = %s AND key = %s",
                       (run.run_id, "test/macro_f1"))
        assert [row[0] for row in cursor.fetchall()] == [pytest.approx(0.75)]


def test_artifacts_land_in_the_bucket(logged_run: tuple[PipelineRun, Path], tracking_server: MlflowServer,
                                      gcs_bucket_emulator: GcsEmulator) -> None:
    run, model_dir = logged_run
    listed = {a.path for a in MlflowClient(tracking_server.url).list_artifacts(run.run_id, "model")}
    assert listed == {"model/model.safetensors", "model/config.json"}
    objects = list_bucket(gcs_bucket_emulator.endpoint, gcs_bucket_emulator.bucket, ARTIFACTS_PREFIX)
    run_objects = {name.split(f"/{run.run_id}/artifacts/", 1)[1]: size
                   for name, size in objects.items() if f"/{run.run_id}/artifacts/" in name}
    weights_size = (model_dir / "model.safetensors").stat().st_size
    assert run_objects["model/model.safetensors"] == weights_size
    assert {"model/config.json", "metrics/validation.json"} <= run_objects.keys()


def test_store_password_never_reaches_the_run_or_the_server_log(
        logged_run: tuple[PipelineRun, Path], tracking_server: MlflowServer, postgres: Postgres) -> None:
    run, _ = logged_run
    data = MlflowClient(tracking_server.url).get_run(run.run_id).data
    recorded = json.dumps({"params": data.params, "tags": data.tags})
    assert postgres.password not in recorded
    assert postgres.password not in tracking_server.log_text()
    assert postgres.password not in tracking_server.command_line()
