"""The bad-input matrix: every case through `cybulde predict` (a real process) and the served model
(HTTP against a real `mlflow models serve`), each outcome written by hand.

Each row ends in a result or a clear error, never a traceback, a server error (5xx) or a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.model_server import THRESHOLD
from tests.helpers.reference import reference_scores

pytestmark = pytest.mark.slow

TEN_MB = "a" * 10_000_000
ROWS_100K = 100_001  # over predict's default --max-rows (100,000) and the served model's 1,000


@dataclass(frozen=True)
class Case:
    name: str
    file_name: str  # what predict reads
    file_bytes: bytes
    predict_status: int
    predict_says: str  # a fragment of stderr (errors) or of the JSON output (status 0)
    body: bytes  # what the served model is sent
    content_type: str
    http_status: int
    http_says: str


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def inputs(values: object) -> bytes:
    return json.dumps({"inputs": values}).encode()


JSON = "application/json"
CASES = [
    Case("empty input", "in.txt", b"", 1, "in.txt holds no texts: nothing to score",
         inputs([]), JSON, 400, "the input holds no texts: nothing to score"),
    Case("whitespace-only rows", "in.csv", b'text\nfine\n"   "\n"\t"\n', 1, "rows 2, 3 are blank",
         inputs(["fine", "   ", "\t"]), JSON, 400, "rows 2, 3 are blank"),
    Case("missing text column", "in.csv", b"id,body\n1,hello\n", 1, "has no column 'text'",
         json.dumps({"dataframe_split": {"columns": ["body", "id"], "data": [["hello", "1"]]}}).encode(), JSON,
         400, "Model is missing inputs ['text']"),
    Case("malformed CSV", "in.csv", b'text\n"never closed\n', 1, "cannot parse",
         b'text\n"never closed\n', "text/csv", 400, ""),
    Case("malformed JSON lines / JSON body", "in.jsonl", b'{"text": "ok"}\n{"text": \n', 1,
         "line 2 is not valid JSON", b'{"inputs": ["ok",', JSON, 400, ""),
    Case("non-UTF-8 bytes", "in.txt", "café crème\n".encode("latin-1"), 1, "not UTF-8 encoded text (byte 0xe9",
         b'{"inputs": ["caf\xe9"]}', JSON, 400, ""),
    Case("NUL bytes", "in.jsonl", jsonl({"text": "idiot\x00 loser"}), 0, '"text": "idiot\\u0000 loser"',
         inputs(["idiot\x00 loser"]), JSON, 200, "predictions"),
    Case("a 10 MB text", "in.txt", TEN_MB.encode(), 1, "longer than the limit of 10,000 characters per text "
         "(--max-chars; the longest has 10,000,000)", inputs([TEN_MB]), JSON, 400,
         "longer than the limit of 10,000 characters per text (serving.max_chars"),
    Case("100k rows", "in.txt", b"hello\n" * ROWS_100K, 1, "holds more than 100,000 texts, over the limit of 100,000 "
         "(--max-rows)", inputs(["hello"] * ROWS_100K), JSON, 400,
         "holds 100,001 texts, over the limit of 1,000 (serving.max_rows)"),
    Case("numbers instead of strings", "in.jsonl", jsonl({"text": 5}, {"text": 2.5}), 1,
         "rows 1, 2 are not text (float, int)", inputs([5, None]), JSON, 400,
         "rows 1, 2 are not text (float, missing); every value to score must be a string"),
    Case("wrong content type / extension", "in.xml", b"<text>hi</text>", 1, "unknown extension '.xml'",
         b"hello", "text/plain", 415, "content types"),
]


def run_predict(model_dir: Path, source: Path) -> subprocess.CompletedProcess:
    cybulde = Path(sys.executable).parent / "cybulde"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([str(cybulde), "predict", "-m", str(model_dir), "--precision", "32-true", str(source)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_matrix(case, tmp_path, logged_model, model_server):
    source = tmp_path / case.file_name
    source.write_bytes(case.file_bytes)
    predicted = run_predict(logged_model.model_dir, source)
    assert predicted.returncode == case.predict_status, predicted.stderr[-2000:]
    assert "Traceback" not in predicted.stderr
    if case.predict_status:
        assert predicted.stderr.startswith("cybulde predict: error: ") and predicted.stderr.count("\n") == 1
        assert case.predict_says in predicted.stderr
        assert predicted.stdout == ""
    else:
        assert case.predict_says in predicted.stdout

    status, body = model_server.post(case.body, case.content_type)
    assert status == case.http_status, body[:2000]
    assert case.http_says in body.decode("utf-8", "replace")
    if status == 400 and case.http_says:
        message = json.loads(body)["message"]
        assert message.rstrip().endswith(case.http_says) or case.http_says in message.splitlines()[-1]


def test_nul_bytes_are_scored_as_the_tokenizer_sees_the_text(tmp_path, logged_model, model_server):
    """The BERT-style tokenizer drops NUL: the scores equal those of the text without it (by hand)."""
    expected = reference_scores(logged_model.model_dir, ["idiot loser"], threshold=THRESHOLD)
    source = tmp_path / "in.jsonl"
    source.write_bytes(jsonl({"text": "idiot\x00 loser"}))
    predicted = json.loads(run_predict(logged_model.model_dir, source).stdout)
    status, body = model_server.post(inputs(["idiot\x00 loser"]))
    served = json.loads(body)["predictions"][0]
    for answer in (predicted, served):
        assert answer["label"] == expected["label"][0]
        assert answer["prob_offensive"] == pytest.approx(expected["prob_offensive"][0], abs=1e-5)


TWENTY_MB = 20_000_000
MARKER = "q7x" * 40  # a run of request text that must never come back


@pytest.mark.parametrize("body", [
    b'{"inputs": ["' + MARKER.encode() * (TWENTY_MB // len(MARKER)),  # not JSON: never closed
    b'{"inputs": ["' + MARKER.encode() * (TWENTY_MB // len(MARKER) // 2) + b'\xff"]}',  # not UTF-8
    inputs([MARKER * (TWENTY_MB // len(MARKER))]),  # one text over max_chars
    inputs([MARKER] * (TWENTY_MB // (len(MARKER) + 3))),  # rows over max_rows
    json.dumps({"dataframe_split": {"columns": ["body"], "data": [[MARKER]] * 100_000}}).encode(),  # no text column
], ids=["malformed JSON", "not UTF-8", "a 20 MB text", "too many rows", "no text column"])
def test_a_20_mb_body_is_refused_without_being_echoed(model_server, body):
    status, answer = model_server.post(body)
    assert status == 400, answer[:2000]
    assert len(answer) < 2000 and MARKER.encode() not in answer, answer[:2000]
    assert "stack_trace" not in json.loads(answer)


@pytest.mark.parametrize("body", [
    b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"dataframe_records": [' + b'{"text": ' * 50_000 + b'"x"' + b"}" * 50_000 + b"]}",
], ids=["lists", "objects"])
def test_deeply_nested_json_is_a_400(model_server, body):
    status, answer = model_server.post(body)
    assert status == 400, answer[:2000]
    assert json.loads(answer)["message"] == "the request is nested too deeply to parse"
