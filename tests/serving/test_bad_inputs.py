"""The bad-input matrix: every case through `cybulde predict` (a real process) and the served model
(HTTP against a real `mlflow models serve`), each outcome written by hand.

Each row ends in a result or a clear error, never a traceback, a server error (5xx) or a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers.bounded import under_memory_limit
from tests.helpers.model_server import SERVE_STARTUP_S, THRESHOLD, LoggedModel, serve_command, serve_environment
from tests.helpers.ports import free_port
from tests.helpers.processes import peak_rss_mib
from tests.helpers.reference import reference_scores
from tests.helpers.services import (
    background_process,
    http_ok,
    nginx_binary,
    self_signed_certificate,
    start_tls_proxy,
    wait_until,
)

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


# -- behind the reverse proxy: infra/tracking-server/proxy.sh (nginx) with its default 10 MB body cap ----
SERVER_VM_MIB = 4096  # `ulimit -v` of the served model: its scoring worker (uvicorn) peaks near 2.5 GiB


@dataclass(frozen=True)
class ProxiedServer:
    url: str  # https://127.0.0.1:PORT: the proxy
    certificate: Path
    server_pid: int  # `mlflow models serve` (its scoring workers run below it)

    def post(self, body: bytes) -> tuple[int, bytes]:
        response = requests.post(f"{self.url}/invocations", data=body, headers={"Content-Type": "application/json"},
                                 verify=str(self.certificate), timeout=120)
        return response.status_code, response.content


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory: pytest.TempPathFactory, logged_model: LoggedModel) -> Iterator[ProxiedServer]:
    """`mlflow models serve` of `logged_model` under `ulimit -v`, behind proxy.sh with its defaults."""
    if nginx_binary() is None:
        pytest.skip("nginx is missing (apt-get install nginx): proxy.sh runs Debian's nginx")
    workdir = tmp_path_factory.mktemp("proxied-model")
    port, log_path = free_port(), workdir / "serve.log"
    argv = under_memory_limit(serve_command(f"runs:/{logged_model.run_id}/model", port), SERVER_VM_MIB)
    with background_process(argv, log_path, env=serve_environment(logged_model.tracking_uri)) as process:
        wait_until(http_ok(f"http://127.0.0.1:{port}/ping"), "mlflow models serve", log_path, process,
                   timeout_s=SERVE_STARTUP_S)
        certificate, key = self_signed_certificate(workdir / "tls")
        with start_tls_proxy(workdir, f"127.0.0.1:{port}", certificate, key) as url:
            yield ProxiedServer(url, certificate, process.pid)


def test_behind_the_proxy_a_20_mb_body_is_a_413_without_echo(proxied_server: ProxiedServer) -> None:
    status, answer = proxied_server.post(inputs(["you are a wonderful person"]))
    assert status == 200 and len(json.loads(answer)["predictions"]) == 1, answer[:2000]
    status, answer = proxied_server.post(inputs([MARKER * (TWENTY_MB // len(MARKER))]))
    assert status == 413, answer[:2000]
    assert MARKER.encode() not in answer and len(answer) < 1000


def test_behind_the_proxy_concurrent_24_mb_bodies_never_reach_the_served_model(proxied_server: ProxiedServer) -> None:
    """Four at once (the served model alone grew by about 1 GB): each a 413, the server's peak unchanged."""
    assert proxied_server.post(inputs(["warm up"]))[0] == 200
    before = peak_rss_mib(proxied_server.server_pid)
    body = inputs([MARKER * (24_000_000 // len(MARKER))])
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: proxied_server.post(body), range(4)))
    assert [status for status, _ in answers] == [413] * 4
    assert not any(MARKER.encode() in answer for _, answer in answers)
    assert peak_rss_mib(proxied_server.server_pid) < before + 20


def test_behind_the_proxy_deep_nesting_is_a_400(proxied_server: ProxiedServer) -> None:
    status, answer = proxied_server.post(b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
    assert status == 400, answer[:2000]
    assert json.loads(answer)["message"] == "the request is nested too deeply to parse"
