"""`cybulde predict`: input and output formats, cleaning, thresholds, progress, model sources.

Expected scores come from `tests/helpers/reference.py` (one text at a time, the cleaning and
truncation written out), not from the scorer under test. The bad-input matrix is in
test_bad_inputs.py, the readers' own tests in test_readers.py.
"""

import io
import json
import sys

import pandas as pd
import pytest

from cybulde.cli import main
from cybulde.serving import predict as predict_module
from cybulde.serving.errors import ModelSourceError, ServingError, UnknownCleaningError
from cybulde.serving.predict import predict
from tests.helpers.cpus import WITH_BF16, WITHOUT_BF16, fake_cpu
from tests.helpers.reference import reference_scores
from tests.helpers.tiny_model import make_data_dir, make_model_dir

TEXTS = ["the cat idiot stupid hate", "a sunny day in the park", "loser trash dumb awful ugly",
         "café naïve 你好", "my friend walks home"]
PROB_COLUMNS = ["prob_not_offensive", "prob_offensive"]
FP32 = "32-true"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict_models")
    data_dir = make_data_dir(base / "data", num_labels=2)
    return {head: make_model_dir(base / f"model_{head}", data_dir, head=head) for head in ("softmax", "sigmoid")}


@pytest.fixture(scope="module")
def expected(models):
    return reference_scores(models["softmax"], TEXTS)


def assert_scores(table, expected, texts=TEXTS):
    assert table["text"].tolist() == texts
    assert table["label"].tolist() == expected["label"].tolist()
    for column in PROB_COLUMNS:
        assert table[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-5)


# ---- good input --------------------------------------------------------------------------------

@pytest.mark.parametrize("output_name", ["out.csv", "out.parquet", "out.jsonl"])
def test_csv_with_ids_to_each_output_format(tmp_path, models, expected, output_name, capsys):
    source = tmp_path / "in.csv"
    pd.DataFrame({"id": [f"c{i}" for i in range(len(TEXTS))], "text": TEXTS,
                  "extra": range(len(TEXTS))}).to_csv(source, index=False)
    output = tmp_path / output_name

    assert main(["predict", str(source), "--model", str(models["softmax"]), "--output", str(output),
                 "--batch-size", "2", "--precision", FP32]) == 0

    if output.suffix == ".csv":
        table = pd.read_csv(output, keep_default_na=False)
    elif output.suffix == ".parquet":
        table = pd.read_parquet(output)
    else:
        table = pd.DataFrame([json.loads(line) for line in output.read_text().splitlines()])
    assert list(table.columns) == ["id", "text", "label", *PROB_COLUMNS]
    assert table["id"].tolist() == [f"c{i}" for i in range(len(TEXTS))]
    assert_scores(table, expected)
    assert [path.name for path in tmp_path.iterdir()] == sorted(["in.csv", output_name])  # no temp file left
    assert capsys.readouterr().out == ""


def test_stdin_lines_to_stdout_jsonl(models, expected):
    stdin = io.BytesIO(("\n".join(TEXTS[:2]) + "\n\n   \n" + "\n".join(TEXTS[2:]) + "\n").encode())
    stdout = io.StringIO()
    predict("-", str(models["softmax"]), stdin=stdin, stdout=stdout, precision=FP32)
    rows = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [row["text"] for row in rows] == TEXTS  # blank lines skipped
    assert_scores(pd.DataFrame(rows), expected)
    assert "café naïve 你好" in stdout.getvalue()  # not escaped


def test_jsonl_parquet_and_txt_inputs(tmp_path, models, expected):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": text, "n": i}) for i, text in enumerate(TEXTS)), encoding="utf-8")
    assert_scores(predict(str(jsonl), str(models["softmax"]), text_column="body", stdout=io.StringIO(),
                          precision=FP32), expected)
    parquet = tmp_path / "in.parquet"
    pd.DataFrame({"text": TEXTS}).to_parquet(parquet)
    assert_scores(predict(str(parquet), str(models["softmax"]), stdout=io.StringIO(), precision=FP32), expected)
    txt = tmp_path / "in.txt"
    txt.write_text("\r\n".join(TEXTS) + "\r\n", encoding="utf-8")
    assert_scores(predict(str(txt), str(models["softmax"]), stdout=io.StringIO(), precision=FP32), expected)


def test_raw_text_is_cleaned_as_at_publish(models):
    """HTML entities and whitespace runs score exactly like the text publish would have tokenized."""
    raw = ["you &amp; me &#8220;idiot&#8221;\tloser", "a  sunny\n\nday &lt;3", "hate&nbsp;trash"]
    cleaned = ["you & me \u201cidiot\u201d loser", "a sunny day <3", "hate trash"]  # written by hand
    tables = {name: predict_table(models["softmax"], texts) for name, texts in (("raw", raw), ("cleaned", cleaned))}
    assert tables["raw"]["label"].tolist() == tables["cleaned"]["label"].tolist()
    for column in PROB_COLUMNS:
        assert tables["raw"][column].tolist() == tables["cleaned"][column].tolist()
    reference = reference_scores(models["softmax"], raw)
    assert tables["raw"][PROB_COLUMNS[1]].tolist() == pytest.approx(reference[PROB_COLUMNS[1]].tolist(), abs=1e-5)


def json_lines(texts):
    return "\n".join(json.dumps({"text": text}) for text in texts).encode()


def predict_table(model_dir, texts, **options):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "in.jsonl"
        source.write_bytes(json_lines(texts))
        return predict(str(source), str(model_dir), stdout=io.StringIO(), precision=FP32, **options)


def test_threshold_for_a_sigmoid_model_folder(models):
    positive = sorted(reference_scores(models["sigmoid"], TEXTS)["prob_offensive"])
    threshold = (positive[1] + positive[2]) / 2  # two texts below, three above
    table = predict_table(models["sigmoid"], TEXTS, threshold=threshold)
    assert table["label"].tolist() == ["offensive" if p >= threshold else "not_offensive"
                                       for p in table["prob_offensive"]]
    assert table["label"].tolist().count("offensive") == 3


def test_precision_auto_follows_the_hardware_rule(models, monkeypatch, tmp_path):
    """auto is bf16 on a CPU with AVX512-BF16 and fp32 without; bf16 stays close to fp32. Without a
    precision asked for, the model's own train.precision decides (these models record none: 32-true)."""
    from cybulde.serving.scorer import TextScorer

    fake_cpu(tmp_path, monkeypatch, WITH_BF16)
    assert TextScorer.from_dir(models["softmax"], precision="auto").precision == "bf16-mixed"
    assert TextScorer.from_dir(models["softmax"]).precision == FP32
    fake_cpu(tmp_path, monkeypatch, WITHOUT_BF16)
    assert TextScorer.from_dir(models["softmax"], precision="auto").precision == FP32
    bf16 = TextScorer.from_dir(models["softmax"], precision="bf16-mixed").score(TEXTS)
    reference = reference_scores(models["softmax"], TEXTS)
    assert bf16["prob_offensive"].tolist() == pytest.approx(reference["prob_offensive"].tolist(), abs=0.02)


# ---- progress --------------------------------------------------------------------------------------

def test_progress_bar_on_long_input_when_stderr_is_a_terminal(models, monkeypatch, capsys):
    monkeypatch.setattr(predict_module, "LONG_INPUT", 3)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    predict("-", str(models["softmax"]), stdin=io.BytesIO("\n".join(TEXTS).encode()), stdout=io.StringIO(),
            batch_size=2)
    assert "scoring" in capsys.readouterr().err


def test_plain_progress_lines_when_stderr_is_not_a_terminal(models, monkeypatch, capsys):
    monkeypatch.setattr(predict_module, "LONG_INPUT", 3)
    monkeypatch.setattr(predict_module, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    predict("-", str(models["softmax"]), stdin=io.BytesIO("\n".join(TEXTS).encode()), stdout=io.StringIO(),
            batch_size=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" texts")[0] for line in lines] == ["scoring: 2/5", "scoring: 4/5", "scoring: 5/5",
                                                           "scoring: 5/5"]
    assert "\r" not in "".join(lines)


def test_short_input_is_silent(models, monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    predict("-", str(models["softmax"]), stdin=io.BytesIO("\n".join(TEXTS).encode()), stdout=io.StringIO())
    assert capsys.readouterr().err == ""


# ---- model sources and the error contract --------------------------------------------------------

def test_bad_model_and_threshold(tmp_path, models):
    source = tmp_path / "in.txt"
    source.write_text("hello\n")
    with pytest.raises(ModelSourceError, match="neither a folder nor an MLflow model URI"):
        predict(str(source), str(tmp_path / "no-model"))
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelSourceError, match="not an exported model directory"):
        predict(str(source), str(tmp_path / "not-a-model"))
    with pytest.raises(ServingError, match="binary sigmoid head"):
        predict(str(source), str(models["softmax"]), threshold=0.3)
    with pytest.raises(ServingError, match="model folder only"):
        predict(str(source), "runs:/0123/model", threshold=0.3)


def test_a_model_with_an_unknown_cleaning_is_refused(tmp_path, models, capsys):
    import shutil

    for cleaning, message in ((None, "records no text cleaning"), ("lowercase/v9", "'lowercase/v9'.*does not know")):
        model_dir = tmp_path / f"model-{cleaning}"
        shutil.copytree(models["softmax"], model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        config["metadata"]["cleaning"] = cleaning
        (model_dir / "config.json").write_text(json.dumps(config))
        with pytest.raises(UnknownCleaningError, match=message):
            predict_table(model_dir, TEXTS)
    assert main(["predict", "-m", str(model_dir), str(tmp_path / "in.txt")]) == 1  # input checked first
    assert "input file" in capsys.readouterr().err
    (tmp_path / "in.txt").write_text("hello\n")
    assert main(["predict", "-m", str(model_dir), str(tmp_path / "in.txt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cybulde predict: error: the model in") and "'lowercase/v9'" in err
    assert err.count("\n") == 1


def test_argument_validation(capsys):
    for argv in (["--batch-size", "0"], ["--threshold", "1.5"], ["--max-rows", "x"], ["--precision", "fp8"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", "--model", "m", *argv])
        assert exit_info.value.code == 2
        assert "usage: cybulde predict" in capsys.readouterr().err


@pytest.mark.slow
def test_mlflow_runs_uri_reads_the_logged_files_and_applies_the_logged_threshold(tmp_path, models, monkeypatch):
    from mlflow import MlflowClient

    from cybulde.publishing import log_pyfunc_model
    from cybulde.serving.pyfunc import serving_config

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("cybulde", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(experiment).info.run_id
    positive = sorted(reference_scores(models["sigmoid"], TEXTS)["prob_offensive"])
    threshold = (positive[0] + positive[1]) / 2  # one text below, four above
    logged = log_pyfunc_model(run_id, models["sigmoid"], tracking_uri=uri,
                              config=serving_config(threshold=threshold, precision=FP32))
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(source, index=False)

    for model_uri in (f"runs:/{run_id}/model", logged.model_uri):
        output = tmp_path / "out.parquet"
        assert main(["predict", str(source), "--model", model_uri, "--tracking-uri", uri, "--output", str(output),
                     "--precision", FP32, "--overwrite"]) == 0
        table = pd.read_parquet(output)
        assert_scores(table, reference_scores(models["sigmoid"], TEXTS, threshold=threshold))
        assert table["label"].tolist().count("offensive") == 4

    with pytest.raises(ModelSourceError, match="cannot load MLflow model 'runs:/0000000000/model'"):
        predict(str(source), "runs:/0000000000/model", tracking_uri=uri)
