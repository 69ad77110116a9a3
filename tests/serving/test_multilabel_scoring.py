"""A multi-label model in `cybulde predict` and as the served pyfunc model: per question a probability
and a decision by that question's threshold; the signature lists those columns.

Expected probabilities come from a reference written out here (one text at a time, the cleaning
spelled out, Hugging Face's truncation, a plain sigmoid), not from the scorer under test.
"""

from __future__ import annotations

import html

import numpy as np
import pytest

from cybulde.cli import main
from cybulde.publishing import log_pyfunc_model, model_signature
from cybulde.serving.errors import ServingError
from cybulde.serving.predict import predict
from cybulde.serving.pyfunc import serving_config
from tests.helpers.tiny_data import QUESTIONS, make_multilabel_data_dir
from tests.helpers.tiny_model import make_data_dir, make_model_dir

TEXTS = ["the cat idiot stupid hate", "a sunny day in the park", "loser trash vermin dumb",
         "you &amp; me\tidiot", "my friend walks home", "hate hate vermin idiot"]
COLUMNS = ["abusive_probability", "abusive_prediction", "hate_probability", "hate_prediction"]
FP32 = "32-true"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("multilabel_serving")
    data_dir = make_multilabel_data_dir(base / "data")
    return make_model_dir(base / "model", data_dir, head="multilabel")


@pytest.fixture(scope="module")
def reference(model_dir):
    """{question: [probability per text]} computed one text at a time."""
    import torch

    from cybulde.models.export import load_model

    loaded = load_model(model_dir)
    probabilities = []
    with torch.no_grad():
        for text in TEXTS:
            cleaned = " ".join(html.unescape(text).split())
            ids = loaded.tokenizer(cleaned, truncation=True, max_length=int(loaded.config["max_length"]))["input_ids"]
            logits = loaded.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones((1, len(ids)), dtype=torch.long))
            probabilities.append(torch.sigmoid(logits.float())[0].tolist())
    table = np.array(probabilities)
    return {question: table[:, index] for index, question in enumerate(QUESTIONS)}


def middle_threshold(values):
    """A threshold between the two middle probabilities: decisions of both kinds."""
    ordered = np.sort(values)
    return float((ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2)


def assert_answers(table, reference, thresholds):
    assert [column for column in table.columns if column not in ("id", "text")] == COLUMNS
    for question in QUESTIONS:
        assert table[f"{question}_probability"].tolist() == pytest.approx(reference[question].tolist(), abs=1e-5)
        expected = (reference[question] >= thresholds[question]).astype(int).tolist()
        assert table[f"{question}_prediction"].tolist() == expected
        assert 0 < sum(expected) < len(expected) or thresholds[question] == 0.5


def test_predict_gives_each_question_a_probability_and_a_decision(tmp_path, model_dir, reference):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    hate = middle_threshold(reference["hate"])
    abusive = middle_threshold(reference["abusive"])

    table = predict(str(source), str(model_dir), precision=FP32, batch_size=4, question_thresholds={"hate": hate},
                    threshold=abusive, output=str(tmp_path / "out.parquet"))
    assert table["text"].tolist() == TEXTS
    assert_answers(table, reference, {"abusive": abusive, "hate": hate})

    # Without thresholds every question is decided at 0.5.
    plain = predict(str(source), str(model_dir), precision=FP32, output=str(tmp_path / "plain.jsonl"))
    assert_answers(plain, reference, {"abusive": 0.5, "hate": 0.5})


def test_the_command_line_takes_per_question_thresholds(tmp_path, model_dir, reference, capsys):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    output = tmp_path / "out.csv"
    thresholds = {question: middle_threshold(reference[question]) for question in QUESTIONS}
    assert main(["predict", str(source), "--model", str(model_dir), "--output", str(output), "--precision", FP32,
                 *[arg for q, value in thresholds.items() for arg in ("--question-threshold", f"{q}={value}")]]) == 0
    import pandas as pd

    assert_answers(pd.read_csv(output), reference, thresholds)


def test_per_question_thresholds_need_a_multilabel_model_and_its_questions(tmp_path, model_dir):
    source = tmp_path / "in.txt"
    source.write_text("one text\n")
    single = make_model_dir(tmp_path / "single", make_data_dir(tmp_path / "data"), head="softmax")
    with pytest.raises(ServingError, match="applies to a multi-label model"):
        predict(str(source), str(single), question_thresholds={"hate": 0.4})
    with pytest.raises(ServingError, match=r"names \['threat'\], which the model does not answer"):
        predict(str(source), str(model_dir), question_thresholds={"threat": 0.4})


def test_the_signature_lists_each_questions_probability_and_decision():
    outputs = model_signature(QUESTIONS, multilabel=True).outputs.to_dict()
    assert [(column["name"], column["type"]) for column in outputs] == [
        ("abusive_probability", "double"), ("abusive_prediction", "long"),
        ("hate_probability", "double"), ("hate_prediction", "long")]
    single = model_signature(["not_offensive", "offensive"]).outputs.to_dict()
    assert [column["name"] for column in single] == ["label", "prob_not_offensive", "prob_offensive"]
    assert serving_config(thresholds={"hate": 0.3})["thresholds"] == {"hate": 0.3}
    assert "thresholds" not in serving_config(threshold=0.4)


def test_the_served_model_applies_the_logged_thresholds(tmp_path, model_dir, reference, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("cybulde", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    thresholds = {question: middle_threshold(reference[question]) for question in QUESTIONS}
    log_pyfunc_model(run_id, model_dir, tracking_uri=uri,
                     config=serving_config(batch_size=4, precision=FP32, thresholds=thresholds))

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert [column["name"] for column in served.metadata.get_output_schema().to_dict()] == COLUMNS
    import pandas as pd

    assert_answers(served.predict(pd.DataFrame({"text": TEXTS})), reference, thresholds)

    # `cybulde predict` on the logged model applies the same thresholds.
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    table = predict(str(source), f"runs:/{run_id}/model", tracking_uri=uri, precision=FP32,
                    output=str(tmp_path / "out.jsonl"))
    assert_answers(table, reference, thresholds)
