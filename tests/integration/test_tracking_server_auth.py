"""The authenticated tracking server: infra/tracking-server/start.sh with its default basic-auth app on
PostgreSQL, the users made by users.py (an admin, the CI identity, a viewer), and proxy.sh's TLS and
body cap in front of it (nginx, with a certificate made here). Real processes on loopback only."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric

from cybulde.config.schema import Config
from cybulde.files import sha256_file
from cybulde.publishing import publish_served_model
from cybulde.reproducibility.check import tool_env
from cybulde.tracking.client import TrackingError, check_reachable
from cybulde.tracking.run import PipelineRun
from tests.helpers import tiny_train
from tests.helpers.services import (
    ARTIFACTS_PREFIX,
    GcsEmulator,
    MlflowServer,
    Postgres,
    create_database,
    nginx_binary,
    self_signed_certificate,
    start_mlflow_server,
    start_tls_proxy,
)
from tests.helpers.tiny_model import make_data_dir, make_model_dir
from tests.helpers.tiny_project import make_tiny_project, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
USERS_SCRIPT = ROOT / "infra" / "tracking-server" / "users.py"
TRAIN_STAGE = ROOT / "stages" / "train.py"
ADMIN, CI, VIEWER = "admin", "ci-pipeline", "viewer"
EXPERIMENT, MODEL = "cybulde-auth", "cybulde-auth-classifier"
API = "/api/2.0/mlflow"


@dataclass(frozen=True)
class AuthServer:
    server: MlflowServer
    passwords: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def session(self, user: str | None) -> requests.Session:
        session = requests.Session()
        if user is not None:
            session.auth = (user, self.passwords[user])
        return session


def _make_user(url: str, admin_password: str, role: str, name: str, password: str, experiment: str = EXPERIMENT,
               model: str = MODEL) -> str:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": ADMIN,
           "MLFLOW_TRACKING_PASSWORD": admin_password, "NEW_USER_PASSWORD": password}
    result = subprocess.run([sys.executable, str(USERS_SCRIPT), role, name, "--experiment", experiment,
                             "--registered-model", model], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres,
                gcs_bucket_emulator: GcsEmulator) -> Iterator[AuthServer]:
    """start.sh with authentication on (its default), its own database; the CI identity and a viewer."""
    database = f"mlflow_auth_{uuid.uuid4().hex[:8]}"
    create_database(postgres, database)
    passwords = {name: secrets.token_urlsafe(18) for name in (ADMIN, CI, VIEWER)}
    destination = f"gs://{gcs_bucket_emulator.bucket}/{ARTIFACTS_PREFIX}-auth"
    extra_env = {**gcs_bucket_emulator.environment(), "MLFLOW_AUTH_ADMIN_PASSWORD": passwords[ADMIN]}
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-auth"), {**postgres.libpq_environment(),
                             "PGDATABASE": database}, destination, extra_env) as server:
        printed = _make_user(server.url, passwords[ADMIN], "ci", CI, passwords[CI])
        printed += _make_user(server.url, passwords[ADMIN], "viewer", VIEWER, passwords[VIEWER])
        assert not any(password in printed for password in passwords.values())
        yield AuthServer(server, passwords)


def _as_user(monkeypatch: pytest.MonkeyPatch, server: AuthServer, user: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.passwords[user])


@dataclass(frozen=True)
class Published:
    experiment_id: str
    run_id: str
    version: str


@pytest.fixture(scope="module")
def ci_published(auth_server: AuthServer, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """The CI identity logs a run through PipelineRun and registers it as the `test` stage does."""
    base = tmp_path_factory.mktemp("ci-publish")
    model_dir = make_model_dir(base / "model", make_data_dir(base / "data"), head="softmax")
    config = Config()
    config.mlflow.tracking_uri, config.mlflow.experiment = auth_server.url, EXPERIMENT
    config.mlflow.registered_model = MODEL
    config.serving.precision = "32-true"
    with pytest.MonkeyPatch.context() as patch:
        _as_user(patch, auth_server, CI)
        patch.chdir(base)
        run = PipelineRun.for_model(config, model_dir)
        with run.stage("test", final=True):
            run.log_metrics({"test/macro_f1": 0.75}, step=1)
            version = publish_served_model(config, run, model_dir, {"macro_f1": 0.75, "threshold": None},
                                           batch_size=8)
    assert version is not None
    return Published(run.experiment_id, run.run_id, str(version.version))


def test_anonymous_requests_are_refused(auth_server: AuthServer) -> None:
    anonymous = auth_server.session(None)
    assert anonymous.get(f"{auth_server.url}{API}/experiments/search", params={"max_results": 1}).status_code == 401
    assert anonymous.post(f"{auth_server.url}{API}/experiments/create", json={"name": "x"}).status_code == 401
    assert auth_server.session(VIEWER).get(f"{auth_server.url}{API}/experiments/search",
                                           params={"max_results": 1}).status_code == 200


def test_the_ci_identity_logs_a_run_registers_a_version_and_moves_the_alias(
        auth_server: AuthServer, ci_published: Published, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_user(monkeypatch, auth_server, VIEWER)
    client = MlflowClient(auth_server.url)
    assert client.get_run(ci_published.run_id).info.status == "FINISHED"
    assert client.get_model_version_by_alias(MODEL, "candidate").version == ci_published.version


def test_a_viewer_cannot_move_an_alias_delete_a_run_or_write_an_artifact(
        auth_server: AuthServer, ci_published: Published, monkeypatch: pytest.MonkeyPatch) -> None:
    viewer, url = auth_server.session(VIEWER), auth_server.url
    assert viewer.get(f"{url}{API}/runs/get", params={"run_id": ci_published.run_id}).status_code == 200
    moved = viewer.post(f"{url}{API}/registered-models/alias", json={"name": MODEL, "alias": "candidate",
                                                                     "version": ci_published.version})
    deleted = viewer.post(f"{url}{API}/runs/delete", json={"run_id": ci_published.run_id})
    artifact = (f"{url}/api/2.0/mlflow-artifacts/artifacts/{ci_published.experiment_id}/{ci_published.run_id}"
                "/artifacts/served_model/model_code.py")
    written = viewer.put(artifact, data=b"import os; os.system('id')\n")
    assert (moved.status_code, deleted.status_code, written.status_code) == (403, 403, 403)
    _as_user(monkeypatch, auth_server, ADMIN)
    client = MlflowClient(url)
    assert client.get_run(ci_published.run_id).info.lifecycle_stage == "active"
    assert client.get_model_version_by_alias(MODEL, "candidate").version == ci_published.version


def test_no_password_reaches_the_server_log_or_its_command_line(auth_server: AuthServer,
                                                                ci_published: Published) -> None:
    seen = auth_server.server.log_text() + auth_server.server.command_line()
    assert not any(password in seen for password in auth_server.passwords.values())
    assert "--app-name basic-auth" in auth_server.server.command_line()


def _without_mlflow_settings(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if "MLFLOW" not in name}


# -- the pipeline itself, as the CI identity ----------------------------------------------------------------
PIPELINE_EXPERIMENT, PIPELINE_MODEL = "cybulde-auth-pipeline", "cybulde-auth-pipeline-classifier"


@dataclass(frozen=True)
class PipelineRepro:
    project: Path
    output: str  # what `dvc repro` printed


@pytest.fixture(scope="module")
def ci_pipeline(auth_server: AuthServer, tmp_path_factory: pytest.TempPathFactory) -> PipelineRepro:
    """`dvc repro` of a tiny project (two DDP ranks, every stage) with the CI identity's credential in its
    environment and nowhere else; the CI identity gets EDIT on the project's experiment and model."""
    _make_user(auth_server.url, auth_server.passwords[ADMIN], "ci", CI, auth_server.passwords[CI],
               PIPELINE_EXPERIMENT, PIPELINE_MODEL)
    project = make_tiny_project(tmp_path_factory.mktemp("ci-pipeline"), auth_server.url,
                                extra_overrides=[f"mlflow.experiment={PIPELINE_EXPERIMENT}",
                                                 f"mlflow.registered_model={PIPELINE_MODEL}", "train.epochs=1"])
    env = {**_without_mlflow_settings(tool_env()), "MLFLOW_TRACKING_USERNAME": CI,
           "MLFLOW_TRACKING_PASSWORD": auth_server.passwords[CI]}
    return PipelineRepro(project, run(project, "dvc", "repro", env=env))


def test_the_pipeline_logs_and_registers_as_the_ci_identity(auth_server: AuthServer, ci_pipeline: PipelineRepro,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _as_user(monkeypatch, auth_server, VIEWER)
    client = MlflowClient(auth_server.url)
    runs = client.search_runs([client.get_experiment_by_name(PIPELINE_EXPERIMENT).experiment_id])
    assert [found.info.status for found in runs] == ["FINISHED"]
    assert {"validation/macro_f1", "test/macro_f1"} <= runs[0].data.metrics.keys()
    version = client.get_model_version_by_alias(PIPELINE_MODEL, "candidate")
    assert (version.version, version.run_id) == ("1", runs[0].info.run_id)
    assert version.tags["cybulde.model_sha256"] == sha256_file(ci_pipeline.project / "model" / "model.safetensors")


def test_the_pipeline_leaves_the_password_nowhere(auth_server: AuthServer, ci_pipeline: PipelineRepro,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not in its output, the project (params, dvc.lock, logs, outputs, git), the run or its artifacts."""
    password = auth_server.passwords[CI].encode()
    assert password not in ci_pipeline.output.encode()
    assert [path for path in ci_pipeline.project.rglob("*") if path.is_file() and password in path.read_bytes()] == []
    _as_user(monkeypatch, auth_server, ADMIN)
    client = MlflowClient(auth_server.url)
    run_ = client.search_runs([client.get_experiment_by_name(PIPELINE_EXPERIMENT).experiment_id])[0]
    assert password.decode() not in json.dumps({"params": run_.data.params, "tags": run_.data.tags})
    artifacts = Path(client.download_artifacts(run_.info.run_id, "", str(tmp_path)))
    files = [path for path in artifacts.rglob("*") if path.is_file()]
    assert files and not [path for path in files if password in path.read_bytes()]


def _train_stage(project: Path, tracking_uri: str, credential: dict[str, str]) -> tuple[subprocess.CompletedProcess,
                                                                                        float]:
    env = {**_without_mlflow_settings(tool_env()), **credential}
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(TRAIN_STAGE), f"mlflow.tracking_uri={tracking_uri}",
                             f"mlflow.experiment={EXPERIMENT}"], cwd=project, capture_output=True, text=True,
                            timeout=120, env=env)
    return result, time.monotonic() - started


@pytest.mark.parametrize("credential, line", [
    ({"MLFLOW_TRACKING_USERNAME": CI, "MLFLOW_TRACKING_PASSWORD": "wrong-" + secrets.token_hex(8)},
     f"refused the credential of user '{CI}' (401): check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
    ({}, "refused an anonymous request (401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the "
         "environment"),
], ids=["wrong-password", "no-credential"])
def test_a_refused_credential_fails_the_stage_in_one_line(auth_server: AuthServer, tmp_path: Path,
                                                          credential: dict[str, str], line: str) -> None:
    project = tiny_train.make_project(tmp_path / "project")
    result, seconds = _train_stage(project, auth_server.url, credential)
    assert result.returncode == 1 and seconds < 30, result.stderr[-3000:]
    assert result.stderr == f"train: error: the MLflow tracking server at {auth_server.url} {line}\n"
    for secret in (*credential.values(), *auth_server.passwords.values()):
        if secret != CI:
            assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "starting" not in result.stderr


# -- TLS and the body cap through the proxy --------------------------------------------------------------
@dataclass(frozen=True)
class TlsProxy:
    url: str
    certificate: Path


@pytest.fixture(scope="module")
def tls_proxy(auth_server: AuthServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsProxy]:
    if nginx_binary() is None:
        pytest.skip("nginx is missing (apt-get install nginx): proxy.sh runs Debian's nginx")
    workdir = tmp_path_factory.mktemp("tls-proxy")
    certificate, key = self_signed_certificate(workdir / "tls")
    upstream = auth_server.url.removeprefix("http://")
    with start_tls_proxy(workdir, upstream, certificate, key, {"MAX_BODY_SIZE": "1m"}) as url:
        yield TlsProxy(url, certificate)


def test_the_ci_identity_logs_through_tls_with_the_servers_certificate(
        auth_server: AuthServer, tls_proxy: TlsProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _as_user(monkeypatch, auth_server, CI)
    monkeypatch.delenv("MLFLOW_TRACKING_INSECURE_TLS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH", raising=False)
    with pytest.raises(TrackingError, match=r"^the MLflow tracking server at https://127\.0\.0\.1:\d+ failed TLS "
                                            r"verification: set MLFLOW_TRACKING_SERVER_CERT_PATH"):
        check_reachable(tls_proxy.url, timeout_s=10)
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tls_proxy.certificate))
    check_reachable(tls_proxy.url, timeout_s=10)
    client = MlflowClient(tls_proxy.url)
    run_id = client.create_run(client.get_experiment_by_name(EXPERIMENT).experiment_id).info.run_id
    client.log_text(run_id, "x" * 2_000_000, "through-the-proxy.txt")  # above MAX_BODY_SIZE: an artifact may be
    assert [a.path for a in client.list_artifacts(run_id)] == ["through-the-proxy.txt"]
    # A body and an answer above nginx's buffers (16 KB) go through its temporary files
    client.log_batch(run_id, metrics=[Metric(f"m{index:04d}", index, 0, 0) for index in range(1000)])
    assert len(client.get_run(run_id).data.metrics) == 1000
    downloaded = Path(client.download_artifacts(run_id, "through-the-proxy.txt", str(tmp_path)))
    assert downloaded.read_text() == "x" * 2_000_000


def test_the_proxy_refuses_a_20_mb_body_without_echoing_it(auth_server: AuthServer, tls_proxy: TlsProxy) -> None:
    marker = b"ECHO-MARKER-" + secrets.token_hex(8).encode()
    body = marker + b"x" * (20 * 1024 * 1024)
    response = requests.post(f"{tls_proxy.url}{API}/runs/log-batch", data=body, auth=(CI, auth_server.passwords[CI]),
                             headers={"Content-Type": "application/json"}, verify=str(tls_proxy.certificate),
                             timeout=60)
    assert response.status_code == 413
    assert marker.decode() not in response.text and len(response.content) < 1000
