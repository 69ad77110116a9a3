import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from cybulde.evaluation.inference import TextScorer  # noqa: E402
from cybulde.tracking.pyfunc import PyfuncInputError, log_pyfunc_model, texts_from_input  # noqa: E402
from tests.evaluation.eval_fixtures import make_data_dir, make_model_dir

TEXTS = ["the cat idiot stupid hate", "a sunny day in the park", "loser trash dumb awful ugly",
         "my friend walks home", "ünïcödé text 你好", ""]
THRESHOLD = 0.35


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory):
    """A tiny binary sigmoid model logged into a run of a fresh SQLite store."""
    from mlflow import MlflowClient

    base = tmp_path_factory.mktemp("pyfunc")
    data_dir = make_data_dir(base / "data", num_labels=2)
    model_dir = make_model_dir(base / "model", data_dir, head="sigmoid")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("cybulde", artifact_location=(base / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    info = log_pyfunc_model(run_id, model_dir, tracking_uri=uri, threshold=THRESHOLD, batch_size=4)
    return {"uri": uri, "run_id": run_id, "model_dir": model_dir, "client": client, "info": info}


def expected_predictions(model_dir):
    return TextScorer.from_dir(model_dir, threshold=THRESHOLD).score(TEXTS)


def test_logging_leaves_the_run_status_alone(logged_model):
    run = logged_model["client"].get_run(logged_model["run_id"])
    assert run.info.status == "RUNNING"
    assert run.info.end_time is None


def test_runs_uri_loads_and_predicts_like_the_model_dir(logged_model, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged_model["uri"])
    mlflow.set_tracking_uri(logged_model["uri"])
    model = mlflow.pyfunc.load_model(f"runs:/{logged_model['run_id']}/model")
    expected = expected_predictions(logged_model["model_dir"])

    from_frame = model.predict(pd.DataFrame({"text": TEXTS}))
    from_list = model.predict(TEXTS)
    assert list(from_frame.columns) == ["label", "prob_not_offensive", "prob_offensive"]
    pd.testing.assert_frame_equal(from_frame, expected, check_dtype=False)
    pd.testing.assert_frame_equal(from_list, expected, check_dtype=False)
    # The recorded threshold is applied, not the argmax.
    assert (from_frame["label"] == ["offensive" if p >= THRESHOLD else "not_offensive"
                                    for p in from_frame["prob_offensive"]]).all()
    assert model.metadata.signature.outputs.input_names() == ["label", "prob_not_offensive",
                                                              "prob_offensive"]


def test_log_pyfunc_model_accepts_a_pipeline_run(logged_model):
    from cybulde.tracking.run import PipelineRun

    client = logged_model["client"]
    run_id = client.create_run(client.get_run(logged_model["run_id"]).info.experiment_id).info.run_id
    run = PipelineRun(client, run_id, logged_model["uri"])
    info = log_pyfunc_model(run, logged_model["model_dir"])
    assert info.run_id == run_id
    assert client.get_run(run_id).info.status == "RUNNING"


def test_texts_from_input_shapes():
    assert texts_from_input(pd.DataFrame({"text": ["a", "b"], "id": [1, 2]})) == ["a", "b"]
    assert texts_from_input(pd.DataFrame({0: ["a"]})) == ["a"]
    assert texts_from_input(["a", "b"]) == ["a", "b"]
    assert texts_from_input("a") == ["a"]
    assert texts_from_input({"text": ["a"]}) == ["a"]
    with pytest.raises(PyfuncInputError, match=r"no 'text' column; columns: \['body', 'id'\]"):
        texts_from_input(pd.DataFrame({"body": ["a"], "id": [1]}))
    with pytest.raises(PyfuncInputError, match="must be a string"):
        texts_from_input(["a", 3])


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post_json(url, payload):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def wait_until_up(url, server, deadline_s=180):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited early with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    raise AssertionError(f"the model server did not answer {url} within {deadline_s} s")


@pytest.mark.slow
def test_served_model_answers_rest_requests_on_loopback(logged_model, tmp_path):
    port = free_port()
    # The server execs `uvicorn` from PATH: the one installed beside this interpreter.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": logged_model["uri"],
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve",
             "-m", f"runs:/{logged_model['run_id']}/model", "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_until_up(f"http://127.0.0.1:{port}/ping", server)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log_path.read_text()[-3000:]}") from error
        expected = expected_predictions(logged_model["model_dir"])
        url = f"http://127.0.0.1:{port}/invocations"

        split_answer = post_json(url, {"dataframe_split": {"columns": ["text"],
                                                           "data": [[text] for text in TEXTS]}})
        inputs_answer = post_json(url, {"inputs": TEXTS})
        for answer in (split_answer, inputs_answer):
            served = pd.DataFrame(answer["predictions"])
            assert served["label"].tolist() == expected["label"].tolist()
            for column in ("prob_not_offensive", "prob_offensive"):
                assert served[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-6)
    finally:
        stop_server(server)


def stop_server(server):
    """SIGTERM to the server's own process group (uvicorn runs in a child), SIGKILL if it hangs."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
