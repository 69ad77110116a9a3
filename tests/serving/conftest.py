"""Fixtures of the serving tests: tiny exported models, one logged into a SQLite store, and one real
`mlflow models serve` of it on loopback for the whole session (started on first use)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.model_server import (
    SERVE_STARTUP_S,
    THRESHOLD,
    LoggedModel,
    ModelServer,
    serve_command,
    serve_environment,
)
from tests.helpers.ports import free_port
from tests.helpers.services import background_process, http_ok, wait_until
from tests.helpers.tiny_model import make_data_dir, make_model_dir


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised tiny models exported like `train` does: softmax and binary sigmoid heads."""
    base = tmp_path_factory.mktemp("serving-models")
    data_dir = make_data_dir(base / "data", num_labels=2)
    return {head: make_model_dir(base / f"model_{head}", data_dir, head=head) for head in ("softmax", "sigmoid")}


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
