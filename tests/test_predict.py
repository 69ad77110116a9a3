import argparse
import io
import json
import sys

import pandas as pd
import pytest

from cybulde import predict as predict_module  # noqa: E402
from cybulde.evaluation.inference import TextScorer  # noqa: E402
from cybulde.predict import (  # noqa: E402
    EmptyInputError,
    InputEncodingError,
    MissingColumnError,
    ModelSourceError,
    PredictError,
    UnsupportedFormatError,
    add_predict_arguments,
    predict,
    read_input,
    run_predict,
)
from tests.evaluation.eval_fixtures import make_data_dir, make_model_dir

TEXTS = ["the cat idiot stupid hate", "a sunny day in the park", "loser trash dumb awful ugly",
         "café naïve 你好", "my friend walks home"]
PROB_COLUMNS = ["prob_not_offensive", "prob_offensive"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict_models")
    data_dir = make_data_dir(base / "data", num_labels=2)
    return {head: make_model_dir(base / f"model_{head}", data_dir, head=head)
            for head in ("softmax", "sigmoid")}


@pytest.fixture(scope="module")
def expected(models):
    return TextScorer.from_dir(models["softmax"]).score(TEXTS)


def assert_scores(table, expected, texts=TEXTS):
    assert table["text"].tolist() == texts
    assert table["label"].tolist() == expected["label"].tolist()
    for column in PROB_COLUMNS:
        assert table[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-6)


def parse(argv):
    parser = argparse.ArgumentParser()
    add_predict_arguments(parser)
    return parser.parse_args(argv)


# ---- good input --------------------------------------------------------------------------------

@pytest.mark.parametrize("output_name", ["out.csv", "out.parquet", "out.jsonl"])
def test_csv_with_ids_to_each_output_format(tmp_path, models, expected, output_name):
    source = tmp_path / "in.csv"
    pd.DataFrame({"id": [f"c{i}" for i in range(len(TEXTS))], "text": TEXTS,
                  "extra": range(len(TEXTS))}).to_csv(source, index=False)
    output = tmp_path / output_name

    assert run_predict(parse([str(source), "--model", str(models["softmax"]),
                              "--output", str(output), "--batch-size", "2"])) == 0

    if output.suffix == ".csv":
        table = pd.read_csv(output, keep_default_na=False)
    elif output.suffix == ".parquet":
        table = pd.read_parquet(output)
    else:
        table = pd.DataFrame([json.loads(line) for line in output.read_text().splitlines()])
    assert list(table.columns) == ["id", "text", "label", *PROB_COLUMNS]
    assert table["id"].tolist() == [f"c{i}" for i in range(len(TEXTS))]
    assert_scores(table, expected)


def test_stdin_lines_to_stdout_jsonl(models, expected):
    stdin = io.BytesIO(("\n".join(TEXTS[:2]) + "\n\n   \n" + "\n".join(TEXTS[2:]) + "\n").encode())
    stdout = io.StringIO()
    predict("-", str(models["softmax"]), stdin=stdin, stdout=stdout)
    rows = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [row["text"] for row in rows] == TEXTS  # blank lines skipped
    assert_scores(pd.DataFrame(rows), expected)
    assert "café naïve 你好" in stdout.getvalue()  # not escaped


def test_jsonl_parquet_and_txt_inputs(tmp_path, models, expected):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": text, "n": i}) for i, text in enumerate(TEXTS)),
                     encoding="utf-8")
    table = predict(str(jsonl), str(models["softmax"]), text_column="body", stdout=io.StringIO())
    assert_scores(table, expected)

    parquet = tmp_path / "in.parquet"
    pd.DataFrame({"text": TEXTS}).to_parquet(parquet)
    assert_scores(predict(str(parquet), str(models["softmax"]), stdout=io.StringIO()), expected)

    txt = tmp_path / "in.txt"
    txt.write_text("\r\n".join(TEXTS) + "\r\n", encoding="utf-8")
    assert_scores(predict(str(txt), str(models["softmax"]), stdout=io.StringIO()), expected)


def test_threshold_for_a_sigmoid_model_folder(tmp_path, models):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS), encoding="utf-8")
    positive = sorted(TextScorer.from_dir(models["sigmoid"]).score(TEXTS)["prob_offensive"])
    threshold = (positive[1] + positive[2]) / 2  # two texts below, three above
    table = predict(str(source), str(models["sigmoid"]), threshold=threshold, stdout=io.StringIO())
    assert table["label"].tolist() == ["offensive" if p >= threshold else "not_offensive"
                                       for p in table["prob_offensive"]]
    assert table["label"].tolist().count("offensive") == 3


def test_progress_bar_on_long_input_when_stderr_is_a_terminal(models, monkeypatch, capsys):
    monkeypatch.setattr(predict_module, "LONG_INPUT", 3)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    stdin = io.BytesIO("\n".join(TEXTS).encode())
    predict("-", str(models["softmax"]), stdin=stdin, stdout=io.StringIO(), batch_size=2)
    assert "scoring" in capsys.readouterr().err


def test_no_progress_bar_when_stderr_is_not_a_terminal(models, monkeypatch, capsys):
    monkeypatch.setattr(predict_module, "LONG_INPUT", 3)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    predict("-", str(models["softmax"]), stdin=io.BytesIO("\n".join(TEXTS).encode()),
            stdout=io.StringIO())
    assert capsys.readouterr().err == ""


# ---- bad input -----------------------------------------------------------------------------------

def test_empty_inputs(tmp_path):
    with pytest.raises(EmptyInputError, match="standard input holds no texts"):
        read_input("-", stdin=io.BytesIO(b"\n  \n"))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(EmptyInputError, match="empty"):
        read_input(str(empty))
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,text\n")
    with pytest.raises(EmptyInputError, match="no texts"):
        read_input(str(header_only))


def test_missing_text_column_lists_the_available_columns(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,body\n1,hello\n")
    with pytest.raises(MissingColumnError,
                       match=r"no column 'text'; available columns: \['id', 'body'\].*--text-column"):
        read_input(str(source))


def test_non_utf8_file_and_stdin(tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes("text\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(InputEncodingError, match=r"not UTF-8 encoded.*0xe9 at offset 8"):
        read_input(str(source))
    with pytest.raises(InputEncodingError, match="standard input is not UTF-8"):
        read_input("-", stdin=io.BytesIO(b"ok\n\xff\xfe bad\n"))


def test_unknown_input_and_output_extensions(tmp_path, models):
    source = tmp_path / "in.xlsx"
    source.write_bytes(b"whatever")
    with pytest.raises(UnsupportedFormatError, match=r"unknown extension '\.xlsx'"):
        read_input(str(source))
    good = tmp_path / "in.txt"
    good.write_text("hello\n")
    with pytest.raises(UnsupportedFormatError, match=r"cannot write .*out\.xml"):
        predict(str(good), str(models["softmax"]), output=str(tmp_path / "out.xml"))


def test_malformed_rows(tmp_path):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(PredictError, match="line 2 is not valid JSON"):
        read_input(str(jsonl))
    jsonl.write_text('{"text": "fine"}\n["a list"]\n')
    with pytest.raises(PredictError, match="line 2 is not a JSON object"):
        read_input(str(jsonl))
    with_null = tmp_path / "null.jsonl"
    with_null.write_text('{"text": "fine"}\n{"text": null}\n')
    with pytest.raises(PredictError, match=r"no text in row\(s\) 2"):
        read_input(str(with_null))
    with pytest.raises(PredictError, match="not found"):
        read_input(str(tmp_path / "absent.csv"))


def test_bad_model_and_threshold(tmp_path, models):
    source = tmp_path / "in.txt"
    source.write_text("hello\n")
    with pytest.raises(ModelSourceError, match="neither a folder nor an MLflow model URI"):
        predict(str(source), str(tmp_path / "no-model"))
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ModelSourceError, match="cannot load the model"):
        predict(str(source), str(tmp_path / "not-a-model"))
    with pytest.raises(PredictError, match="binary sigmoid head"):
        predict(str(source), str(models["softmax"]), threshold=0.3)
    with pytest.raises(PredictError, match="model folder only"):
        predict(str(source), "runs:/0123/model", threshold=0.3)


def test_run_predict_prints_one_line_and_returns_2(tmp_path, models, capsys):
    source = tmp_path / "in.csv"
    source.write_text("id,body\n1,hello\n")
    assert run_predict(parse([str(source), "--model", str(models["softmax"])])) == 2
    err = capsys.readouterr().err
    assert err.startswith("cybulde predict: error:") and len(err.strip().splitlines()) == 1


def test_argument_validation():
    with pytest.raises(SystemExit):
        parse(["--model", "m", "--batch-size", "0"])
    with pytest.raises(SystemExit):
        parse(["--model", "m", "--threshold", "1.5"])
    assert parse(["--model", "m"]).input == "-"


# ---- MLflow model URI ----------------------------------------------------------------------------

@pytest.mark.slow
def test_mlflow_runs_uri(tmp_path, models, expected, monkeypatch):
    from mlflow import MlflowClient

    from cybulde.tracking.pyfunc import log_pyfunc_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("cybulde", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(experiment).info.run_id
    log_pyfunc_model(run_id, models["softmax"], tracking_uri=uri)
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(source, index=False)
    output = tmp_path / "out.parquet"

    assert run_predict(parse([str(source), "--model", f"runs:/{run_id}/model",
                              "--tracking-uri", uri, "--output", str(output),
                              "--batch-size", "2"])) == 0
    assert_scores(pd.read_parquet(output), expected)

    with pytest.raises(ModelSourceError, match="cannot load MLflow model"):
        predict(str(source), "runs:/0000000000/model", tracking_uri=uri)
