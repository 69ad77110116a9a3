from pathlib import Path

import pytest

from cybulde.config.schema import Config
from cybulde.tracking.lineage import data_lock_hash, model_digest
from cybulde.tracking.run import MODEL_TAG, PipelineRun, TrackingError, _redact, tracking_uri

LOCK = """schema: '2.0'
stages:
  fetch:
    cmd: python stages/fetch.py
    outs:
    - path: data/fetched
      hash: md5
      md5: 0123456789abcdef0123456789abcdef.dir
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "dvc.lock").write_text(LOCK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "tall-oaks")
    return Config()


def _model(folder: Path, payload: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(payload)
    return folder


def test_default_store_is_sqlite_in_workspace(project: Config, tmp_path: Path) -> None:
    assert tracking_uri(project) == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_training_run_records_context(project: Config) -> None:
    run = PipelineRun.start_training(project)
    data = run.client.get_run(run.run_id).data
    assert data.params["model.head"] == "softmax"
    assert data.tags["data.dvc_md5"] == "0123456789abcdef0123456789abcdef.dir"
    assert data.tags["dvc.exp_name"] == "tall-oaks"
    assert data.tags["world_size"] == "1"
    assert data.tags["device_type"] == "cpu"
    inputs = run.client.get_run(run.run_id).inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == ["0123456789abcdef0123456789abcdef.dir"]


def test_stages_share_one_run_and_status_is_truthful(project: Config, tmp_path: Path) -> None:
    model_dir = _model(tmp_path / "model", b"weights-1")
    run = PipelineRun.start_training(project)
    with run.stage("train"):
        run.mark_model(model_dir)
    assert run.client.get_run(run.run_id).info.status == "RUNNING"

    found = PipelineRun.for_model(project, model_dir)
    assert found.run_id == run.run_id
    with found.stage("validate"):
        found.log_metrics({"validation/macro_f1": 0.5})
    assert run.client.get_run(run.run_id).info.status == "RUNNING"
    with found.stage("test", final=True):
        pass
    assert run.client.get_run(run.run_id).info.status == "FINISHED"
    runs = run.client.search_runs([run.client.get_run(run.run_id).info.experiment_id])
    assert len(runs) == 1


def test_failing_stage_marks_run_failed(project: Config) -> None:
    run = PipelineRun.start_training(project)
    with pytest.raises(RuntimeError, match="boom"), run.stage("train"):
        raise RuntimeError("boom")
    assert run.client.get_run(run.run_id).info.status == "FAILED"


def test_unknown_model_gets_a_new_tagged_run(project: Config, tmp_path: Path) -> None:
    model_dir = _model(tmp_path / "model", b"never-trained-here")
    run = PipelineRun.for_model(project, model_dir)
    assert run.client.get_run(run.run_id).data.tags[MODEL_TAG] == model_digest(model_dir)


def test_explicit_run_id_is_reused_and_checked(project: Config) -> None:
    first = PipelineRun.start_training(project)
    project.mlflow.run_id = first.run_id
    assert PipelineRun.start_training(project).run_id == first.run_id
    project.mlflow.run_id = "0" * 32
    with pytest.raises(TrackingError, match="mlflow.run_id"):
        PipelineRun.start_training(project)


def test_unreachable_server_is_a_clear_error(project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    project.mlflow.tracking_uri = "http://127.0.0.1:9"
    with pytest.raises(TrackingError, match="cannot reach"):
        PipelineRun.start_training(project)


def test_lock_hash_missing_before_fetch_is_locked(tmp_path: Path) -> None:
    assert data_lock_hash(tmp_path, "data/fetched") == ""


def test_credentials_are_redacted() -> None:
    assert _redact("postgresql://bob:secret@db:5432/mlflow") == "postgresql://bob:***@db:5432/mlflow"
