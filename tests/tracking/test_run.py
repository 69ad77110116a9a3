import random
import re
from pathlib import Path

import pytest

from cybulde.config.paths import redact_uri, tracking_uri
from cybulde.config.schema import Config
from cybulde.tracking.client import (
    DVC_EXPERIMENT_TAG,
    EXPERIMENT_KIND_TAG,
    FAILURE_TAG,
    MODEL_TAG,
    MODEL_TRAINING_KIND,
    TrackingError,
)
from cybulde.tracking.lineage import data_lock_hash, model_digest
from cybulde.tracking.run import PipelineRun

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
    assert data.tags[DVC_EXPERIMENT_TAG] == "tall-oaks"
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


def test_failing_stage_marks_run_failed_and_says_why(project: Config) -> None:
    run = PipelineRun.start_training(project)
    with pytest.raises(RuntimeError, match="boom"), run.stage("train"):
        raise RuntimeError("boom\nthe rest of the message")
    failed = run.client.get_run(run.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags[FAILURE_TAG] == "stage 'train' failed: RuntimeError: boom"
    with run.stage("train"):
        pass  # a resumed run is no longer failed
    assert FAILURE_TAG not in run.client.get_run(run.run_id).data.tags


def test_interrupted_stage_marks_run_killed_with_the_signal(project: Config) -> None:
    run = PipelineRun.start_training(project)
    with pytest.raises(KeyboardInterrupt), run.stage("validate"):
        raise KeyboardInterrupt
    killed = run.client.get_run(run.run_id)
    assert (killed.info.status, killed.data.tags[FAILURE_TAG]) == ("KILLED", "stage 'validate' stopped by SIGINT")


def test_run_is_named_and_sourced_from_what_it_is(project: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    from cybulde.tracking.client import SOURCE_NAME_TAG, SOURCE_TYPE_TAG

    named = PipelineRun.start_training(project)
    assert named.client.get_run(named.run_id).info.run_name == "tall-oaks"  # the DVC experiment's name
    monkeypatch.delenv("DVC_EXP_NAME")
    monkeypatch.setattr("cybulde.tracking.run.git_commit", lambda root: "1a2b3c4d5e6f" + "0" * 28)
    runs = []
    for _ in range(4):
        random.seed(1234)  # what training does before it opens its run
        runs.append(PipelineRun.start_training(project))
    names = [run.client.get_run(run.run_id).info.run_name for run in runs]
    assert all(re.fullmatch(r"tweeteval_offensive-v2-softmax-1a2b3c4-\d{1,3}", name) for name in names), names
    assert len(set(names)) > 1, names  # no seed makes them all the same
    tags = runs[0].client.get_run(runs[0].run_id).data.tags
    assert tags[SOURCE_TYPE_TAG] == "LOCAL" and tags[SOURCE_NAME_TAG]
    assert tags["mlflow.source.git.commit"].startswith("1a2b3c4") and DVC_EXPERIMENT_TAG not in tags


def test_experiment_is_a_model_training_one(project: Config) -> None:
    run = PipelineRun.start_training(project)
    assert run.client.get_experiment(run.experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    run.client.delete_experiment_tag(run.experiment_id, EXPERIMENT_KIND_TAG)  # a store from before
    PipelineRun.start_training(project)
    assert run.client.get_experiment(run.experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    run.client.set_experiment_tag(run.experiment_id, EXPERIMENT_KIND_TAG, "finetuning")  # the user's choice
    PipelineRun.start_training(project)
    assert run.client.get_experiment(run.experiment_id).tags[EXPERIMENT_KIND_TAG] == "finetuning"


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
    assert redact_uri("postgresql://bob:secret@db:5432/mlflow") == "postgresql://bob:***@db:5432/mlflow"


# -- runs whose stage is gone ------------------------------------------------------------------------
STAGE_SCRIPT = """
import sys, time
from cybulde.config.schema import Config
from cybulde.entrypoint import exit_on_sigterm
from cybulde.tracking.run import PipelineRun

exit_on_sigterm()
config = Config()
config.mlflow.tracking_uri = sys.argv[1]
run = PipelineRun.start_training(config)
with run.stage("train"):
    print(run.run_id, flush=True)
    time.sleep(600)
"""


def _stage_in_a_process(project: Path, store: str) -> tuple:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", STAGE_SCRIPT, store], cwd=project, stdout=subprocess.PIPE,
                               text=True)
    return process, process.stdout.readline().strip()


def _status(store: str, run_id: str):
    from mlflow import MlflowClient

    run = MlflowClient(store).get_run(run_id)
    return run.info.status, run.data.tags.get(FAILURE_TAG, "")


@pytest.mark.slow
def test_runs_of_killed_stages_are_closed_by_the_next_stage(project: Config, tmp_path: Path) -> None:
    import signal

    store = f"sqlite:///{tmp_path}/mlflow.db"
    project.mlflow.tracking_uri = store
    with PipelineRun.start_training(project).stage("validate"):
        pass  # creates the store; this run now waits between stages, owned by no process
    between = PipelineRun.start_training(project)
    with between.stage("train"):
        pass
    killed, killed_id = _stage_in_a_process(tmp_path, store)
    terminated, terminated_id = _stage_in_a_process(tmp_path, store)
    try:
        with PipelineRun.start_training(project).stage("train"):
            pass
        assert _status(store, killed_id) == ("RUNNING", "")  # its stage is still alive
        killed.send_signal(signal.SIGKILL)
        terminated.send_signal(signal.SIGTERM)
        assert killed.wait(timeout=30) == -signal.SIGKILL and terminated.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        for process in (killed, terminated):
            if process.poll() is None:
                process.kill()
    # The stage said so itself on the way out.
    assert _status(store, terminated_id) == ("KILLED", "stage 'train' stopped by SIGTERM")
    assert _status(store, killed_id)[0] == "RUNNING"  # SIGKILL: nobody could say so yet

    with PipelineRun.for_model(project, _model(tmp_path / "model", b"w")).stage("validate"):
        pass
    status, reason = _status(store, killed_id)
    assert status == "KILLED" and "stage 'train'" in reason and "ended without closing the run" in reason
    assert f"pid {killed.pid}" in reason and "closed by stage 'validate'" in reason
    assert _status(store, between.run_id) == ("RUNNING", "")  # between stages: left for the next stage


def test_an_owner_on_another_host_is_gone_once_its_heartbeat_is_old() -> None:
    from cybulde.tracking.run import STALE_AFTER_S, owner_is_gone

    elsewhere = {"host": "another-host", "boot": "b", "pid": 1, "started": "1", "stage": "train"}
    assert owner_is_gone(elsewhere, heartbeat=1000.0, now=1000.0 + STALE_AFTER_S - 1) == ""
    assert "no heartbeat for" in owner_is_gone(elsewhere, heartbeat=1000.0, now=1000.0 + STALE_AFTER_S + 1)
