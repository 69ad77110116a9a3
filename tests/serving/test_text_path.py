"""One text path: raw text scored by `predict` and by the served model gives what the `test` stage
wrote in predictions/test.parquet, whose scores came from the token ids publish stored.

On a real dataset version with HTML entities (Davidson, published small by the real `publish`), a
tiny model trained by the real `train` code, validated and tested by the real stage code, logged
and registered: the comparison's expected side never goes through the scorer under test.
The same check on the pipeline's own model/ (the default MiniLM one) runs when the project holds
a trained model and its predictions (after `make pipeline` / `dvc repro`).
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cybulde.hardware import BF16, resolve_precision

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REGISTERED = "davidson-text-path"
# Scored at the precision the `test` stage used: predictions/*.parquet round probabilities to 6
# decimals, and the evaluation and predict batch the rows alike (shortest first, 64 a batch), so each
# row sees the same padding and kernel shapes, in bf16 as in float32.
SAME_PRECISION = 1e-6
# predict in bf16 against a float32 evaluation: bf16's rounding, up to 2e-3 measured on a MiniLM model.
BF16_AGAINST_FP32 = 1e-2


@pytest.fixture(scope="module")
def davidson_project(tmp_path_factory):
    """A project whose `test` stage ran: data/fetched (Davidson, small), model/, predictions/, an MLflow run."""
    from cybulde.preparation.publish import default_datasets_dir, publish
    from cybulde.training import train as train_module
    from tests.helpers import tiny_train

    raw = default_datasets_dir() / "davidson2017"
    if not (raw / "labeled_data.csv").is_file():
        pytest.skip(f"the Davidson dataset is not in {raw}")
    base = tmp_path_factory.mktemp("text-path")
    registry = base / "registry"
    publish("davidson2017", raw, str(registry), "v1", tokenizer="wordpiece", vocab_size=400, max_length=24,
            max_rows_per_split=90, echo=None)
    project = base / "project"
    shutil.copytree(registry / "davidson2017" / "v1", project / "data" / "fetched")
    tiny_train.write_params(project, {"data.dataset": "davidson2017", "train.epochs": 2,
                                      "mlflow.tracking_uri": f"sqlite:///{base / 'mlflow.db'}",
                                      "mlflow.registered_model": REGISTERED, "serving.precision": "32-true"})
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setattr(train_module, "start_tracking", train_module.start_tracking)  # the real MLflow run
        cfg = tiny_train.load(project)
        train_module.train(cfg)
        importlib.import_module("stages.validate").evaluate(cfg)
        importlib.import_module("stages.test").evaluate_publish_and_probe(cfg)
    return {"project": project, "tracking_uri": cfg.mlflow.tracking_uri}


def test_the_test_split_is_raw_text_with_html_entities(davidson_project):
    texts = pq.read_table(davidson_project["project"] / "predictions" / "test.parquet").column("text").to_pylist()
    assert sum("&amp;" in text or "&#" in text for text in texts) >= 5
    assert json.loads((davidson_project["project"] / "model" / "config.json").read_text())["metadata"]["cleaning"] \
        == "html-unescape+collapse-whitespace/v1"


def test_the_scorer_makes_the_token_ids_publish_stored(davidson_project):
    from cybulde.registry.splits import read_split_columns
    from cybulde.serving.scorer import TextScorer

    stored = read_split_columns(davidson_project["project"] / "data" / "fetched", "test", ("text", "input_ids"))
    scorer = TextScorer.from_dir(davidson_project["project"] / "model")
    assert scorer.token_ids(stored["text"]) == stored["input_ids"]
    assert max(map(len, stored["input_ids"])) == 24  # some texts were truncated, and still agree


def predict_file(project: Path, model: str, precision: str, tracking_uri: str, scratch: Path) -> pd.DataFrame:
    source = project / "predictions" / "test.parquet"
    output = scratch / f"scored-{precision}.parquet"
    command = [str(Path(sys.executable).parent / "cybulde"), "predict", "-m", model, str(source), "-o", str(output),
               "--precision", precision, "--tracking-uri", tracking_uri]
    finished = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return pd.read_parquet(output)


def assert_same_scores(scored: pd.DataFrame, expected: pd.DataFrame, tolerance: float) -> None:
    probabilities = [column for column in expected.columns if column.startswith("prob_")]
    assert scored["text"].tolist() == expected["text"].tolist()
    for column in probabilities:
        assert scored[column].tolist() == pytest.approx(expected[column].tolist(), abs=tolerance), column
    if tolerance == SAME_PRECISION:
        assert scored["label"].tolist() == expected["predicted"].tolist()


def test_predict_on_raw_test_texts_equals_the_test_stage(davidson_project, tmp_path):
    project = davidson_project["project"]
    expected = pd.read_parquet(project / "predictions" / "test.parquet")
    assert_same_scores(predict_file(project, "model", "32-true", davidson_project["tracking_uri"], tmp_path), expected,
                       SAME_PRECISION)
    assert_same_scores(predict_file(project, "model", BF16, davidson_project["tracking_uri"], tmp_path), expected,
                       BF16_AGAINST_FP32)


def test_the_registered_served_model_equals_the_test_stage(davidson_project, monkeypatch, tmp_path):
    import mlflow

    project = davidson_project["project"]
    expected = pd.read_parquet(project / "predictions" / "test.parquet")
    alias = f"models:/{REGISTERED}@candidate"
    assert_same_scores(predict_file(project, alias, "32-true", davidson_project["tracking_uri"], tmp_path), expected,
                       SAME_PRECISION)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    mlflow.set_tracking_uri(davidson_project["tracking_uri"])
    served = mlflow.pyfunc.load_model(alias).predict(expected[["text"]])
    assert_same_scores(pd.concat([expected[["text"]], served], axis=1), expected, SAME_PRECISION)


def test_the_pipeline_model_scores_like_its_test_predictions(tmp_path):
    """The default pipeline's model/ against its predictions/test.parquet, at the precision the
    `test` stage evaluated with (params.yaml: train.precision)."""
    from cybulde.config.loader import load_config

    model, predictions = REPO / "model", REPO / "predictions" / "test.parquet"
    if not ((model / "config.json").is_file() and predictions.is_file()):
        pytest.skip("no trained model/ and predictions/test.parquet in this checkout: run the pipeline first")
    if (model / "config.json").stat().st_mtime > predictions.stat().st_mtime:
        pytest.skip("model/ is newer than predictions/test.parquet: run the `test` stage first")
    precision = resolve_precision(load_config(REPO / "params.yaml").train.precision, "cpu").precision
    assert_same_scores(predict_file(REPO, "model", precision, "sqlite:///unused.db", tmp_path),
                       pd.read_parquet(predictions), SAME_PRECISION)
