"""The registered-model flow against the tracking server stack: `mlflow server` on PostgreSQL with its
artifacts proxied to the (emulated) GCS bucket. The `test` stage's registration, then
`cybulde predict -m models:/NAME@candidate` and `mlflow models serve -m models:/NAME@candidate`."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest

from cybulde.config.schema import Config
from cybulde.publishing import publish_served_model
from cybulde.tracking.run import PipelineRun
from tests.helpers.model_server import SERVE_STARTUP_S, serve_command, serve_environment
from tests.helpers.ports import free_port
from tests.helpers.reference import reference_scores
from tests.helpers.services import MlflowServer, Postgres, background_process, http_ok, wait_until
from tests.helpers.tiny_model import make_data_dir, make_model_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXTS = ["the cat idiot stupid hate", "a sunny day &amp; park", "loser\ttrash"]


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tracking_server: MlflowServer):
    from mlflow import MlflowClient

    base = tmp_path_factory.mktemp("server-registry")
    model_dir = make_model_dir(base / "model", make_data_dir(base / "data"), head="softmax")
    client = MlflowClient(tracking_server.url)
    experiment = client.create_experiment(f"registry-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment, tags={"data.dvc_md5": "abc.dir",
                                                 "mlflow.source.git.commit": "1" * 40}).info.run_id
    cfg = Config()
    cfg.mlflow.registered_model = f"cybulde-{uuid.uuid4().hex[:8]}"
    cfg.serving.precision = "32-true"
    run = PipelineRun(client, run_id, tracking_server.url)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)
        first = publish_served_model(cfg, run, model_dir, {"macro_f1": 0.75, "threshold": None}, batch_size=8)
        again = publish_served_model(cfg, run, model_dir, {"macro_f1": 0.75, "threshold": None}, batch_size=8)
    return {"first": first, "again": again, "client": client, "model_dir": model_dir, "base": base}


def test_one_version_with_its_tags_and_the_candidate_alias(registered, postgres: Postgres):
    first, again, client = registered["first"], registered["again"], registered["client"]
    assert (first.version, first.created, again.version, again.created) == ("1", True, "1", False)
    version = client.get_model_version_by_alias(first.name, "candidate")
    assert str(version.version) == "1"
    assert {key: version.tags[key] for key in ("data.dvc_md5", "git.commit", "test.macro_f1")} == {
        "data.dvc_md5": "abc.dir", "git.commit": "1" * 40, "test.macro_f1": "0.750000"}
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT version FROM model_versions WHERE name = %s", (first.name,))
        assert cursor.fetchall() == [(1,)]
        cursor.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (first.name,))
        assert cursor.fetchall() == [("candidate", 1)]


def test_predict_loads_the_candidate_from_the_server(registered, tracking_server: MlflowServer, tmp_path):
    from cybulde.cli import main

    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    output = tmp_path / "out.jsonl"
    assert main(["predict", str(source), "-m", registered["first"].alias_uri, "--tracking-uri", tracking_server.url,
                 "-o", str(output), "--precision", "32-true"]) == 0
    table = pd.DataFrame([json.loads(line) for line in output.read_text().splitlines()])
    expected = reference_scores(registered["model_dir"], TEXTS)
    assert table["label"].tolist() == expected["label"].tolist()
    assert table["prob_offensive"].tolist() == pytest.approx(expected["prob_offensive"].tolist(), abs=1e-5)


def test_mlflow_models_serve_serves_the_candidate(registered, tracking_server: MlflowServer, tmp_path):
    import urllib.request

    port = free_port()
    argv = serve_command(registered["first"].alias_uri, port)
    log_path = tmp_path / "serve.log"
    with background_process(argv, log_path, env=serve_environment(tracking_server.url)) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(http_ok(f"{url}/ping"), "mlflow models serve", log_path, process, timeout_s=SERVE_STARTUP_S)
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"inputs": TEXTS}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = pd.DataFrame(json.loads(response.read())["predictions"])
    expected = reference_scores(registered["model_dir"], TEXTS)
    assert answer["label"].tolist() == expected["label"].tolist()
    assert answer["prob_offensive"].tolist() == pytest.approx(expected["prob_offensive"].tolist(), abs=1e-5)
