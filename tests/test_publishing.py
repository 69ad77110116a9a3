"""Publishing the served model: logged into the run and registered as the candidate, against a SQLite store.

(The same flow against the PostgreSQL-backed tracking server: tests/integration/test_registry_on_server.py.)
"""

import hashlib

import pandas as pd
import pytest

from cybulde.config.schema import Config
from cybulde.publishing import CANDIDATE_ALIAS, publish_served_model
from cybulde.tracking.run import PipelineRun
from tests.helpers.reference import reference_scores
from tests.helpers.tiny_model import make_data_dir, make_model_dir

pytestmark = pytest.mark.slow

NAME = "toxicity-test"
DATA_MD5 = "0123456789abcdef0123456789abcdef.dir"
COMMIT = "f" * 40


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    base = tmp_path_factory.mktemp("registry")
    data_dir = make_data_dir(base / "data", num_labels=2)
    models = {head: make_model_dir(base / f"model_{head}", data_dir, head=head) for head in ("softmax", "sigmoid")}
    uri = f"sqlite:///{base / 'mlflow.db'}"
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment("cybulde", artifact_location=(base / "artifacts").as_uri())
    return {"uri": uri, "client": client, "experiment": experiment, "models": models}


def new_run(store) -> PipelineRun:
    client = store["client"]
    run_id = client.create_run(store["experiment"], tags={"data.dvc_md5": DATA_MD5,
                                                          "mlflow.source.git.commit": COMMIT}).info.run_id
    return PipelineRun(client, run_id, store["uri"])


def config(name=NAME) -> Config:
    cfg = Config()
    cfg.mlflow.registered_model = name
    cfg.serving.precision = "32-true"
    return cfg


def file_sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_sha256(model_dir) -> str:
    return file_sha256(model_dir / "model.safetensors")


def test_the_test_stage_registers_a_tagged_candidate_once(store, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)  # no dvc.lock or git repo here: the tags come from the run
    model_dir = store["models"]["softmax"]
    run = new_run(store)

    first = publish_served_model(config(), run, model_dir, {"macro_f1": 0.61234567, "threshold": None}, batch_size=8)

    client = store["client"]
    assert (first.name, first.version, first.created) == (NAME, "1", True)
    version = client.get_model_version(NAME, "1")
    assert version.tags == {"data.dvc_md5": DATA_MD5, "git.commit": COMMIT, "test.macro_f1": "0.612346",
                            "cybulde.model_sha256": weights_sha256(model_dir),
                            "cybulde.config_sha256": file_sha256(model_dir / "config.json"),
                            "cybulde.tokenizer_sha256": file_sha256(model_dir / "tokenizer" / "tokenizer.json")}
    assert version.run_id == run.run_id
    assert str(client.get_model_version_by_alias(NAME, CANDIDATE_ALIAS).version) == "1"

    again = publish_served_model(config(), run, model_dir, {"macro_f1": 0.61234567, "threshold": None}, batch_size=8)
    assert (again.version, again.created) == ("1", False)
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
    assert len(client.get_run(run.run_id).outputs.model_outputs) == 1  # the logged model is reused too

    source = tmp_path / "in.txt"
    texts = ["the cat idiot stupid hate", "a sunny day &amp; park"]
    source.write_text("\n".join(texts) + "\n")
    from cybulde.cli import main

    output = tmp_path / "out.csv"
    assert main(["predict", str(source), "-m", first.alias_uri, "--tracking-uri", store["uri"], "-o", str(output),
                 "--precision", "32-true"]) == 0
    table = pd.read_csv(output)
    expected = reference_scores(model_dir, texts)
    assert table["label"].tolist() == expected["label"].tolist()
    assert table["prob_offensive"].tolist() == pytest.approx(expected["prob_offensive"].tolist(), abs=1e-5)


def test_a_new_model_becomes_the_candidate(store, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    name = "toxicity-second"
    first = publish_served_model(config(name), new_run(store), store["models"]["softmax"],
                                 {"macro_f1": 0.5, "threshold": None}, batch_size=8)
    second = publish_served_model(config(name), new_run(store), store["models"]["sigmoid"],
                                  {"macro_f1": 0.7, "threshold": 0.4}, batch_size=8)
    assert (first.version, second.version, second.created) == ("1", "2", True)
    client = store["client"]
    assert str(client.get_model_version_by_alias(name, CANDIDATE_ALIAS).version) == "2"
    assert client.get_model_version(name, "2").tags["cybulde.model_sha256"] == weights_sha256(
        store["models"]["sigmoid"])


def test_an_empty_name_registers_nothing(store, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    run = new_run(store)
    registered = [model.name for model in store["client"].search_registered_models()]
    assert publish_served_model(config(""), run, store["models"]["softmax"], {"macro_f1": 0.5, "threshold": None},
                                batch_size=8) is None
    assert len(store["client"].get_run(run.run_id).outputs.model_outputs) == 1  # logged, not registered
    assert [model.name for model in store["client"].search_registered_models()] == registered
