"""The MLflow pyfunc model: logged from code (nothing pickled), limits, thread safety, served over REST.

Expected scores come from `tests/helpers/reference.py`, not from the scorer under test.
"""

import os
import pickle
import re
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from cybulde.publishing import log_pyfunc_model
from cybulde.serving.errors import EmptyTextError, InputLimitError, MissingColumnError, NonTextValueError
from cybulde.serving.pyfunc import serving_config
from cybulde.serving.readers import Limits, texts_from_request
from cybulde.serving.scorer import ThreadTokenizers
from tests.helpers.model_server import THRESHOLD
from tests.helpers.reference import reference_scores

TEXTS = ["the cat idiot stupid hate", "a sunny day in the park", "loser trash dumb awful ugly",
         "my friend walks home", "ünïcödé text 你好", "you &amp; me\tidiot"]
COLUMNS = ["label", "prob_not_offensive", "prob_offensive"]


def load(logged_model, monkeypatch=None):
    import mlflow

    if monkeypatch is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", logged_model.tracking_uri)
    mlflow.set_tracking_uri(logged_model.tracking_uri)
    return mlflow.pyfunc.load_model(f"runs:/{logged_model.run_id}/model")


def assert_matches_reference(answer, model_dir, texts=TEXTS):
    expected = reference_scores(model_dir, texts, threshold=THRESHOLD)
    assert list(answer.columns) == COLUMNS
    assert answer["label"].tolist() == expected["label"].tolist()
    for column in COLUMNS[1:]:
        assert answer[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-5)


# ---- what is logged ---------------------------------------------------------------------------

def test_the_model_is_logged_as_code_without_any_pickle(logged_model):
    files = {path.relative_to(logged_model.artifacts).as_posix()
             for path in logged_model.artifacts.rglob("*") if path.is_file()}
    top_level = {name for name in files if not name.startswith(("code/", "artifacts/"))}
    assert top_level == {"MLmodel", "model_code.py", "conda.yaml", "python_env.yaml", "requirements.txt",
                         "input_example.json", "serving_input_example.json"}
    exported = f"artifacts/{logged_model.model_dir.name}"
    assert {name for name in files if name.startswith("artifacts/")} == {
        f"{exported}/model.safetensors", f"{exported}/config.json",
        f"{exported}/tokenizer/tokenizer.json", f"{exported}/tokenizer/tokenizer_config.json"}
    assert "code/cybulde/serving/scorer.py" in files
    assert not [name for name in files if name.endswith((".pkl", ".pickle", ".pt", ".bin", ".pyc"))]
    mlmodel = (logged_model.artifacts / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel
    assert "python_model" not in mlmodel.replace("model_code_path", "")


def test_loading_and_predicting_unpickle_nothing(logged_model, monkeypatch):
    import cloudpickle
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    for module, name in ((pickle, "load"), (pickle, "loads"), (cloudpickle, "load"), (cloudpickle, "loads"),
                         (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    model = load(logged_model, monkeypatch)
    assert_matches_reference(model.predict(pd.DataFrame({"text": TEXTS})), logged_model.model_dir)


def test_predictions_follow_the_reference_and_the_logged_threshold(logged_model, monkeypatch):
    model = load(logged_model, monkeypatch)
    from_frame = model.predict(pd.DataFrame({"text": TEXTS}))
    assert_matches_reference(from_frame, logged_model.model_dir)
    assert (from_frame["label"] == ["offensive" if p >= THRESHOLD else "not_offensive"
                                    for p in from_frame["prob_offensive"]]).all()
    assert model.metadata.signature.outputs.input_names() == COLUMNS


def test_logging_leaves_the_run_alone_and_reuses_an_identical_model(logged_model):
    from mlflow import MlflowClient

    client = MlflowClient(logged_model.tracking_uri)
    run = client.get_run(logged_model.run_id)
    assert run.info.status == "RUNNING" and run.info.end_time is None
    config = serving_config(threshold=THRESHOLD, batch_size=4, precision="32-true")
    again = log_pyfunc_model(logged_model.run_id, logged_model.model_dir, tracking_uri=logged_model.tracking_uri,
                             config=config)
    assert again.reused and again.model_id == logged_model.model_id
    outputs = client.get_run(logged_model.run_id).outputs.model_outputs
    assert [output.model_id for output in outputs] == [logged_model.model_id]


@pytest.mark.slow
def test_a_changed_serving_config_is_logged_as_a_new_model(logged_model, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(logged_model.tracking_uri)
    run_id = client.create_run(client.get_run(logged_model.run_id).info.experiment_id).info.run_id
    first = log_pyfunc_model(run_id, logged_model.model_dir, tracking_uri=logged_model.tracking_uri)
    second = log_pyfunc_model(run_id, logged_model.model_dir, tracking_uri=logged_model.tracking_uri,
                              config=serving_config(max_rows=5))
    assert not first.reused and not second.reused and first.model_id != second.model_id
    assert client.get_logged_model(second.model_id).tags["cybulde.serving_config"].startswith(
        '{"batch_size": 64, "max_chars": 10000, "max_rows": 5')


# ---- request checks ------------------------------------------------------------------------------

def test_request_shapes_and_refusals():
    limits = Limits(max_rows=3, max_chars=10, rows_hint="serving.max_rows", chars_hint="serving.max_chars")
    assert texts_from_request(pd.DataFrame({"text": ["a", "b"], "id": [1, 2]}), limits) == ["a", "b"]
    assert texts_from_request(pd.DataFrame({0: ["a"]}), limits) == ["a"]
    assert texts_from_request(pd.Series(["a", "b"]), limits) == ["a", "b"]
    # {"inputs": [...]} reaches the model as one row holding the list (MLflow's conversion)
    assert texts_from_request(pd.DataFrame({"text": [["a", "b"]]}), limits) == ["a", "b"]
    assert texts_from_request(["a", "b"], limits) == ["a", "b"]
    assert texts_from_request("a", limits) == ["a"]
    assert texts_from_request({"text": ["a"]}, limits) == ["a"]
    with pytest.raises(MissingColumnError, match=r"no 'text' column; columns: \['body', 'id'\]"):
        texts_from_request(pd.DataFrame({"body": ["a"], "id": [1]}), limits)
    with pytest.raises(NonTextValueError, match=r"row 2 is not text \(int\)"):
        texts_from_request(["a", 3], limits)
    with pytest.raises(NonTextValueError, match=r"rows 1, 2 are not text \(missing\)"):
        texts_from_request(pd.DataFrame({"text": [None, float("nan"), "x"]}), limits)
    with pytest.raises(EmptyTextError, match=r"row 2 is blank"):
        texts_from_request(["a", " \t\n"], limits)
    with pytest.raises(InputLimitError, match=r"holds 4 texts, over the limit of 3 \(serving.max_rows\)"):
        texts_from_request(["a"] * 4, limits)
    with pytest.raises(InputLimitError, match=r"row 2 is longer than the limit of 10 characters per text "
                                              r"\(serving.max_chars; the longest has 11\)"):
        texts_from_request(["a", "b" * 11], limits)


def test_a_refused_request_is_an_invalid_parameter_error(logged_model, monkeypatch):
    from mlflow.exceptions import MlflowException

    model = load(logged_model, monkeypatch)
    for request, message in ((["ok", None], "row 2 is not text (missing)"), (["x" * 10_001], "serving.max_chars"),
                             (["x"] * 1001, "over the limit of 1,000 (serving.max_rows)")):
        with pytest.raises(MlflowException, match=re.escape(message)) as raised:
            model.predict(pd.DataFrame({"text": request}))
        assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
        assert raised.value.get_http_status_code() == 400


# ---- thread safety -------------------------------------------------------------------------------

class ExclusiveUseProbe:
    """Stands in for a tokenizer and counts the calls that found another thread inside it."""

    def __init__(self, tokenizer, overlaps: list[int]) -> None:
        object.__setattr__(self, "_tokenizer", tokenizer)
        object.__setattr__(self, "_inside", threading.Lock())
        object.__setattr__(self, "_overlaps", overlaps)

    def encode_batch(self, *args, **kwargs):
        alone = self._inside.acquire(blocking=False)
        if not alone:
            self._overlaps.append(threading.get_ident())
        try:
            time.sleep(0.002)  # widen the window a shared tokenizer would be caught in
            return self._tokenizer.encode_batch(*args, **kwargs)
        finally:
            if alone:
                self._inside.release()

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __setattr__(self, name, value):
        setattr(self._tokenizer, name, value)


def probe_tokenizers(monkeypatch, get_tokenizer):
    """Route every tokenizer the scorer uses through one probe per tokenizer instance."""
    overlaps: list[int] = []
    probes: dict[int, ExclusiveUseProbe] = {}
    lock = threading.Lock()

    def get(self):
        tokenizer = get_tokenizer(self)
        with lock:
            return probes.setdefault(id(tokenizer), ExclusiveUseProbe(tokenizer, overlaps))

    monkeypatch.setattr(ThreadTokenizers, "get", get)
    return overlaps, probes


def requests_of_mixed_sizes(count: int) -> list[list[str]]:
    words = "the cat idiot stupid hate sunny day park loser friend &amp; home trash".split()
    return [[" ".join(words[(r + i + k) % len(words)] for k in range(1 + (r * 7 + i * 3) % 40))
             for i in range(1 + r % 9)] for r in range(count)]


def score_from_threads(model, requests, threads: int = 16):
    """Each thread scores every `threads`-th request, all starting together; (answers, errors)."""
    answers: dict[int, pd.DataFrame] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(first: int) -> None:
        start.wait()
        try:
            for index in range(first, len(requests), threads):
                answers[index] = model.predict(pd.DataFrame({"text": requests[index]}))
        except BaseException as error:  # noqa: BLE001 - collected and asserted on
            errors.append(error)

    workers = [threading.Thread(target=work, args=(first,)) for first in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert not any(worker.is_alive() for worker in workers), "a scoring thread hung"
    return answers, errors


def test_concurrent_requests_each_use_their_own_tokenizer_and_get_sequential_answers(logged_model, monkeypatch):
    model = load(logged_model, monkeypatch)
    requests = requests_of_mixed_sizes(64)
    expected = [model.predict(pd.DataFrame({"text": request})) for request in requests]
    overlaps, probes = probe_tokenizers(monkeypatch, ThreadTokenizers.get)

    answers, errors = score_from_threads(model, requests)

    assert errors == []
    assert overlaps == [], "two threads were inside one tokenizer at once"
    assert len(probes) == 16  # one tokenizer per scoring thread
    for index, answer in enumerate(expected):
        pd.testing.assert_frame_equal(answers[index], answer)


def test_the_probe_catches_a_tokenizer_shared_between_threads(logged_model, monkeypatch):
    """Without per-thread tokenizers (one shared instance) the check above fails."""
    model = load(logged_model, monkeypatch)
    shared = model.unwrap_python_model().scorer.tokenizers.get()
    overlaps, probes = probe_tokenizers(monkeypatch, lambda self: shared)

    _, errors = score_from_threads(model, requests_of_mixed_sizes(64))

    assert errors == [] and len(probes) == 1
    assert overlaps, "16 threads sharing one tokenizer never overlapped: the probe has no power"


# ---- served over HTTP ----------------------------------------------------------------------------

@pytest.mark.slow
def test_served_model_answers_rest_requests_on_loopback(model_server, logged_model):
    import json

    for payload in ({"dataframe_split": {"columns": ["text"], "data": [[text] for text in TEXTS]}},
                    {"inputs": TEXTS}, {"dataframe_records": [{"text": text} for text in TEXTS]}):
        status, body = model_server.post(payload)
        assert status == 200, body[:500]
        assert_matches_reference(pd.DataFrame(json.loads(body)["predictions"]), logged_model.model_dir)


@pytest.mark.slow
def test_served_model_is_correct_under_16_concurrent_clients(model_server, logged_model):
    import json
    from concurrent.futures import ThreadPoolExecutor

    requests = requests_of_mixed_sizes(96)
    flat = reference_scores(logged_model.model_dir, [text for request in requests for text in request],
                            threshold=THRESHOLD)
    starts = [0]
    for request in requests:
        starts.append(starts[-1] + len(request))
    expected = [flat.iloc[begin:end].reset_index(drop=True) for begin, end in zip(starts[:-1], starts[1:], strict=True)]

    def ask(request):
        return model_server.post({"inputs": request})

    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(ask, requests))

    assert [status for status, _ in replies] == [200] * len(requests), [body[:300] for _, body in replies]
    for (_, body), reference in zip(replies, expected, strict=True):
        answer = pd.DataFrame(json.loads(body)["predictions"])
        assert answer["label"].tolist() == reference["label"].tolist()
        assert answer["prob_offensive"].tolist() == pytest.approx(reference["prob_offensive"].tolist(), abs=1e-5)
    assert "Already borrowed" not in Path(model_server.log_path).read_text()
    assert os.path.getsize(model_server.log_path) < 5_000_000
