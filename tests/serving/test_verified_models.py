"""A registered version whose files were changed in the artifact store after registration: `cybulde
predict -m models:/...` (a real process) and `mlflow models serve` refuse it with one line naming the
file and both digests; an untouched version scores."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers.bounded import cybulde_command, run_bounded
from tests.helpers.model_server import SERVE_STARTUP_S, serve_command, serve_environment
from tests.helpers.ports import free_port
from tests.helpers.services import background_process

pytestmark = pytest.mark.slow

NAME = "cybulde-classifier"
SCORING_VM_MIB = 4096


@dataclass(frozen=True)
class Registered:
    tracking_uri: str
    version: str
    artifacts: Path  # the logged model's files in the artifact store
    model_dir: Path  # the exported folder it was logged from


@pytest.fixture
def registered(tmp_path, tiny_models) -> Registered:
    """The sigmoid model logged and registered as NAME version 1, in a store of this test's own."""
    from mlflow import MlflowClient

    from cybulde.publishing import log_pyfunc_model, register_candidate
    from cybulde.serving.integrity import digest_tags
    from cybulde.serving.pyfunc import serving_config
    from cybulde.tracking.client import global_tracking_uri

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("cybulde", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    logged = log_pyfunc_model(run_id, tiny_models["sigmoid"], tracking_uri=uri,
                              config=serving_config(threshold=0.5, batch_size=4, precision="32-true"))
    with global_tracking_uri(uri):
        version = register_candidate(client, NAME, logged.model_id, run_id, digest_tags(tiny_models["sigmoid"]))
    location = client.get_logged_model(logged.model_id).artifact_location
    return Registered(uri, version.version, Path(location.removeprefix("file://")), tiny_models["sigmoid"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def change_weights(model_dir: Path) -> None:
    """One byte of the tensor data changed: still a valid safetensors file with the same shapes."""
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40
    weights.write_bytes(bytes(data))


def swap_labels(model_dir: Path) -> None:
    config = model_dir / "config.json"
    config.write_text(config.read_text().replace('"not_offensive"', '"@@"').replace('"offensive"', '"not_offensive"')
                      .replace('"@@"', '"offensive"'))


def change_tokenizer(model_dir: Path) -> None:
    tokenizer = model_dir / "tokenizer" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"idiot"', '"idiom"'))


def change_threshold(model_root: Path) -> None:
    mlmodel = model_root / "MLmodel"
    document = yaml.safe_load(mlmodel.read_text())
    document["flavors"]["python_function"]["config"]["threshold"] = 0.0001
    mlmodel.write_text(yaml.safe_dump(document))


def predict_version(registered: Registered, source: Path) -> subprocess.CompletedProcess:
    return run_bounded(cybulde_command("predict", "-m", f"models:/{NAME}/{registered.version}", "--tracking-uri",
                                       registered.tracking_uri, "--precision", "32-true", str(source)),
                       SCORING_VM_MIB, timeout_s=300)


@pytest.mark.parametrize(("tamper", "file_name"), [(change_weights, "model.safetensors"),
                                                   (swap_labels, "config.json"),
                                                   (change_tokenizer, "tokenizer/tokenizer.json")])
def test_predict_refuses_a_file_changed_after_registration(registered, tmp_path, tamper, file_name):
    source = tmp_path / "in.txt"
    source.write_text("you are a wonderful person\n")
    assert predict_version(registered, source).returncode == 0  # untouched, it scores

    stored = registered.artifacts / "artifacts" / registered.model_dir.name
    before = sha256(stored / file_name)
    tamper(stored)
    after = sha256(stored / file_name)
    finished = predict_version(registered, source)
    assert finished.returncode == 1
    assert finished.stderr.count("\n") == 1 and "Traceback" not in finished.stderr, finished.stderr[-2000:]
    assert f"{file_name} of models:/{NAME}/1 has sha256 {after}, but {NAME} version 1 records {before}" \
        in finished.stderr
    assert finished.stdout == ""


def test_predict_refuses_a_changed_serving_config(registered, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("you are a wonderful person\n")
    change_threshold(registered.artifacts)
    finished = predict_version(registered, source)
    assert finished.returncode == 1
    assert "model_config (threshold, limits) differs from the serving config its logged model records" \
        in finished.stderr


def test_the_served_model_refuses_changed_weights(registered, tmp_path):
    stored = registered.artifacts / "artifacts" / registered.model_dir.name
    before = sha256(stored / "model.safetensors")
    change_weights(stored)
    after = sha256(stored / "model.safetensors")
    log_path = tmp_path / "serve.log"
    argv = serve_command(f"models:/{NAME}/{registered.version}", free_port())
    with background_process(argv, log_path, env=serve_environment(registered.tracking_uri)) as process:
        status = process.wait(timeout=SERVE_STARTUP_S)
    log = log_path.read_text(errors="replace")
    assert status != 0, log[-3000:]
    assert (f"model.safetensors of the served model has sha256 {after}, but its model_config records {before}"
            in log), log[-3000:]


