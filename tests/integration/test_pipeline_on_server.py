"""The whole pipeline (`dvc repro` on a tiny config) logging into the tracking server stack:
`mlflow server` on PostgreSQL with its artifacts proxied into the (emulated) GCS bucket."""

from __future__ import annotations

import json
import uuid

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from tests.helpers.services import ARTIFACTS_PREFIX, GcsEmulator, MlflowServer, Postgres, list_bucket
from tests.helpers.tiny_project import make_tiny_project, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Two DDP ranks are covered by tests/e2e; here one rank and one epoch keep the run short.
QUICKER = ["launch.nproc_per_node=1", "train.global_batch_size=8", "train.epochs=1"]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, tracking_server: MlflowServer) -> Run:
    """The one run `dvc repro` of a tiny project created on the server."""
    experiment = f"pipeline-{uuid.uuid4().hex[:8]}"
    project = make_tiny_project(tmp_path_factory.mktemp("server-pipeline"), tracking_server.url,
                                extra_overrides=[f"mlflow.experiment={experiment}", *QUICKER])
    run(project, "dvc", "repro")
    client = MlflowClient(tracking_server.url)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(found) == 1, [r.info.run_id for r in found]
    return found[0]


def _artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> dict[str, int]:
    files: dict[str, int] = {}
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            files.update(_artifact_files(client, run_id, info.path))
        else:
            files[info.path] = int(info.file_size or 0)
    return files


def test_pipeline_run_rows_are_in_postgres(pipeline_run: Run, postgres: Postgres) -> None:
    assert pipeline_run.info.status == "FINISHED"
    assert {"validation/macro_f1", "test/macro_f1"} <= pipeline_run.data.metrics.keys()
    assert pipeline_run.data.params["model.backbone"] == "scratch"
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_uuid = %s", (pipeline_run.info.run_id,))
        assert cursor.fetchall() == [("FINISHED",)]
        cursor.execute("SELECT key, value FROM params WHERE run_uuid = %s", (pipeline_run.info.run_id,))
        assert dict(cursor.fetchall()) == pipeline_run.data.params
        cursor.execute("SELECT DISTINCT key FROM latest_metrics WHERE run_uuid = %s", (pipeline_run.info.run_id,))
        assert {row[0] for row in cursor.fetchall()} == set(pipeline_run.data.metrics)


def test_pipeline_artifacts_are_objects_in_the_bucket(pipeline_run: Run, tracking_server: MlflowServer,
                                                       gcs_bucket_emulator: GcsEmulator) -> None:
    run_id = pipeline_run.info.run_id
    logged = _artifact_files(MlflowClient(tracking_server.url), run_id)
    assert logged, "the pipeline logged no artifacts"
    prefix = f"{ARTIFACTS_PREFIX}/{pipeline_run.info.experiment_id}/{run_id}/artifacts/"
    stored = {name[len(prefix):]: size for name, size in
              list_bucket(gcs_bucket_emulator.endpoint, gcs_bucket_emulator.bucket, prefix).items()}
    assert stored == logged


def test_pipeline_run_holds_no_store_password(pipeline_run: Run, postgres: Postgres,
                                              tracking_server: MlflowServer) -> None:
    recorded = json.dumps({"params": pipeline_run.data.params, "tags": pipeline_run.data.tags})
    assert postgres.password not in recorded
    assert postgres.password not in tracking_server.log_text()
