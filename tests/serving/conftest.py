"""Shared by the serving tests: tiny exported models, one logged into a SQLite store, and one real
`mlflow models serve` of it on loopback for the whole session (started on first use)."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.evaluation.eval_fixtures import make_data_dir, make_model_dir
from tests.integration.services import background_process, free_port, http_ok, wait_until

THRESHOLD = 0.35
SERVE_STARTUP_S = 180.0


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised tiny models exported like `train` does: softmax and binary sigmoid heads."""
    base = tmp_path_factory.mktemp("serving-models")
    data_dir = make_data_dir(base / "data", num_labels=2)
    return {head: make_model_dir(base / f"model_{head}", data_dir, head=head) for head in ("softmax", "sigmoid")}


@dataclass(frozen=True)
class LoggedModel:
    tracking_uri: str
    run_id: str
    model_id: str
    model_dir: Path  # the exported folder it was logged from
    artifacts: Path  # where the store keeps the logged model's files


@pytest.fixture(scope="session")
def logged_model(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> LoggedModel:
    """The sigmoid model logged (threshold THRESHOLD, fp32, batches of 4) into a fresh SQLite store."""
    from mlflow import MlflowClient

    from cybulde.publishing import log_pyfunc_model
    from cybulde.serving.pyfunc import serving_config

    base = tmp_path_factory.mktemp("serving-store")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("cybulde", artifact_location=(base / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    logged = log_pyfunc_model(run_id, tiny_models["sigmoid"], tracking_uri=uri,
                              config=serving_config(threshold=THRESHOLD, batch_size=4, precision="32-true"))
    location = client.get_logged_model(logged.model_id).artifact_location
    return LoggedModel(uri, run_id, logged.model_id, tiny_models["sigmoid"], Path(location.removeprefix("file://")))


@dataclass(frozen=True)
class ModelServer:
    url: str  # http://127.0.0.1:PORT
    log_path: Path

    def post(self, payload: bytes | dict[str, Any] | list[Any], content_type: str = "application/json",
             timeout_s: float = 120.0) -> tuple[int, bytes]:
        """(HTTP status, body) of a POST to /invocations."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}/invocations", data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def serve_command(model_uri: str, port: int, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)]


def serve_environment(tracking_uri: str) -> dict[str, str]:
    # The server execs `uvicorn` from PATH: the one installed beside this interpreter.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": tracking_uri, "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}


@pytest.fixture(scope="session")
def model_server(tmp_path_factory: pytest.TempPathFactory, logged_model: LoggedModel) -> Iterator[ModelServer]:
    """`mlflow models serve -m runs:/<run>/model` of `logged_model` on a free loopback port."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("serving-server") / "serve.log"
    argv = serve_command(f"runs:/{logged_model.run_id}/model", port)
    with background_process(argv, log_path, env=serve_environment(logged_model.tracking_uri)) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(http_ok(f"{url}/ping"), "mlflow models serve", log_path, process, timeout_s=SERVE_STARTUP_S)
        yield ModelServer(url, log_path)
