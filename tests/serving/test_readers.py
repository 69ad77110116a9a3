"""The readers of `predict` and the served model: clear errors by hand-written example, then fuzzing.

Property: whatever the bytes (or the request values), a reader returns texts that are non-blank
strings within the limits, or raises a `ServingError` (one-line message); never another exception,
never a hang (each example has a deadline).
"""

import io
import json
from datetime import timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cybulde.serving.errors import (
    EmptyInputError,
    EmptyTextError,
    InputEncodingError,
    InputLimitError,
    MalformedInputError,
    MissingColumnError,
    NonTextValueError,
    ServingError,
    UnsupportedFormatError,
)
from cybulde.serving.readers import Limits, parse_input, read_input, texts_from_request

LIMITS = Limits(max_rows=50, max_chars=200)
FUZZ = settings(max_examples=150, deadline=timedelta(seconds=5), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- by example ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "data", "error", "message"), [
    ("lines", b"\n  \n\t\n", EmptyInputError, "standard input holds no texts"),
    ("csv", b"", EmptyInputError, "standard input is empty"),
    ("csv", b"id,text\n", EmptyInputError, "holds no texts"),
    ("csv", b"id,body\n1,hello\n", MissingColumnError,
     r"no column 'text'; available columns: \['id', 'body'\]. Choose one with --text-column"),
    ("csv", "text\ncafé\n".encode("latin-1"), InputEncodingError, r"not UTF-8 encoded text \(byte 0xe9 at offset 8\)"),
    ("csv", b'text\n"unterminated\n', MalformedInputError, "cannot parse standard input as CSV"),
    ("csv", b"text\nok\n   \n\" \"\n", EmptyTextError, r"column 'text': row 2 is blank"),
    ("jsonl", b'{"text": "fine"}\n{"text": broken\n', MalformedInputError, "line 2 is not valid JSON"),
    ("jsonl", b'{"text": "fine"}\n["a list"]\n', MalformedInputError, "line 2 is not a JSON object"),
    ("jsonl", b'{"text": "fine"}\n{"text": null}\n{"other": 1}\n', NonTextValueError,
     r"rows 2, 3 are not text \(missing\)"),
    ("jsonl", b'{"text": 12}\n{"text": true}\n{"text": ["a"]}\n', NonTextValueError,
     r"rows 1, 2, 3 are not text \(bool, int, list\)"),
    ("jsonl", b"[" * 100_000, MalformedInputError, "line 1 is not valid JSON"),
    ("jsonl", b'{"text": ' + b"9" * 5000 + b"}", MalformedInputError, "line 1 is not valid JSON"),
    ("parquet", b"PAR1 not really", MalformedInputError, "cannot read standard input as Parquet"),
    ("lines", b"x\n" * 51, InputLimitError,
     r"holds more than 50 texts, over the limit of 50 \(--max-rows\); split the input"),
    ("jsonl", b'{"text": "x"}\n' * 51, InputLimitError, "holds more than 50 texts, over the limit of 50"),
    ("csv", b"text\n" + b"x\n" * 51, InputLimitError, "holds more than 50 texts, over the limit of 50"),
    ("lines", b"ok\n" + b"y" * 201 + b"\n", InputLimitError,
     r"row 2 is longer than the limit of 200 characters per text \(--max-chars; the longest has 201\)"),
])
def test_bad_input_gets_a_specific_error(kind, data, error, message):
    with pytest.raises(error, match=message):
        parse_input(data, kind, "standard input", LIMITS)


@pytest.mark.parametrize("kind", ["lines", "csv", "jsonl", "parquet"])
def test_input_over_the_byte_limit_is_refused(kind, tmp_path):
    limits = Limits(max_rows=50, max_chars=200, max_bytes=1000)
    data = b"text\n" + b"y" * 1000
    with pytest.raises(InputLimitError, match=r"larger than the limit of 1,000 bytes \(--max-bytes\)"):
        parse_input(data, kind, "standard input", limits)
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    with pytest.raises(InputLimitError, match=r"in.txt is larger than the limit of 1,000 bytes"):
        read_input(str(path), limits)


def test_parquet_with_numbers_in_the_text_column_is_refused(tmp_path):
    path = tmp_path / "in.parquet"
    pd.DataFrame({"text": [1, 2]}).to_parquet(path)
    with pytest.raises(NonTextValueError, match=r"rows 1, 2 are not text \(int\)"):
        read_input(str(path), LIMITS)


def test_files_by_extension_and_ids(tmp_path):
    with pytest.raises(UnsupportedFormatError, match=r"unknown extension '\.xlsx'"):
        read_input(str(tmp_path / "in.xlsx"), LIMITS)
    with pytest.raises(ServingError, match="input file .*absent.csv not found"):
        read_input(str(tmp_path / "absent.csv"), LIMITS)
    csv = tmp_path / "in.CSV"
    csv.write_text("id,text\n7,a\n8,b\n")
    assert read_input(str(csv), LIMITS).ids == ["7", "8"]  # CSV cells are text
    jsonl = tmp_path / "in.ndjson"
    jsonl.write_text('{"id": 1, "text": "a"}\n{"id": "x", "text": "b"}\n')
    inputs = read_input(str(jsonl), LIMITS)
    assert inputs.texts == ["a", "b"] and inputs.ids == ["1", "x"]  # mixed ids become strings


def test_control_characters_are_kept_for_the_model_to_see():
    inputs = parse_input(b"a\x00b\nc\x07d\x1b[0m\n", "lines", "stdin", LIMITS)
    assert inputs.texts == ["a\x00b", "c\x07d\x1b[0m"]
    table = parse_input(b'{"text": "nul\\u0000here"}\n', "jsonl", "stdin", LIMITS)
    assert table.texts == ["nul\x00here"]


def test_stdin_is_read_from_the_given_stream():
    assert read_input("-", LIMITS, stdin=io.BytesIO(b"one\r\ntwo\r\n")).texts == ["one", "two"]


# ---- fuzzing ---------------------------------------------------------------------------------------

def check_result(inputs, limits=LIMITS):
    assert inputs.texts, "an empty result must be an EmptyInputError"
    assert len(inputs.texts) <= limits.max_rows
    for text in inputs.texts:
        assert isinstance(text, str) and text.strip() and len(text) <= limits.max_chars
    assert inputs.ids is None or len(inputs.ids) == len(inputs.texts)


@FUZZ
@given(data=st.binary(max_size=3000), kind=st.sampled_from(["csv", "jsonl", "parquet", "lines"]))
def test_any_bytes_give_texts_or_a_serving_error(data, kind):
    try:
        inputs = parse_input(data, kind, "fuzz", LIMITS)
    except ServingError as error:
        assert "\n" not in str(error).strip()  # one line
        return
    check_result(inputs)


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


@FUZZ
@given(lines=st.lists(TEXT.filter(lambda text: "\n" not in text), max_size=60))
def test_lines_are_the_non_blank_lines(lines):
    data = "\n".join(lines).encode()
    expected = [line.rstrip("\r") for line in lines]
    expected = [line for line in expected if line.strip()]
    try:
        inputs = parse_input(data, "lines", "fuzz", LIMITS)
    except (EmptyInputError, InputLimitError):
        assert not expected or len(expected) > LIMITS.max_rows or max(map(len, expected)) > LIMITS.max_chars
        return
    assert inputs.texts == expected


@FUZZ
@given(cells=st.lists(TEXT, min_size=1, max_size=30), extra=st.sampled_from([None, ",", '"', "\r\n"]))
def test_csv_of_any_cells(cells, extra):
    frame = pd.DataFrame({"id": range(len(cells)), "text": cells})
    data = frame.to_csv(index=False).encode()
    if extra is not None:
        data += extra.encode()
    try:
        inputs = parse_input(data, "csv", "fuzz", LIMITS)
    except ServingError:
        return
    check_result(inputs)
    if extra is None and all(cell.strip() for cell in cells):
        assert inputs.texts == cells


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                           max_leaves=8)


@FUZZ
@given(records=st.lists(st.dictionaries(st.sampled_from(["text", "id", "x"]), JSON_VALUES, max_size=3) | JSON_VALUES,
                        max_size=20))
def test_jsonl_of_any_values(records):
    data = "\n".join(json.dumps(record) for record in records).encode()
    try:
        inputs = parse_input(data, "jsonl", "fuzz", LIMITS)
    except ServingError:
        return
    check_result(inputs)
    assert inputs.texts == [record["text"] for record in records if isinstance(record, dict)]


@FUZZ
@given(values=st.lists(st.none() | st.integers() | st.floats() | TEXT | st.binary(max_size=5), max_size=20))
def test_parquet_of_any_column(values):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.table({"text": pa.array(values)})
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return  # a list pyarrow cannot store: not a Parquet file anyone could give us
    sink = io.BytesIO()
    pq.write_table(table, sink)
    try:
        inputs = parse_input(sink.getvalue(), "parquet", "fuzz", LIMITS)
    except ServingError:
        return
    check_result(inputs)


@FUZZ
@given(request=JSON_VALUES | st.lists(JSON_VALUES, max_size=20)
       | st.builds(lambda rows: pd.DataFrame({"text": rows}), st.lists(JSON_VALUES, max_size=10)))
def test_any_request_gives_texts_or_an_input_error(request):
    try:
        texts = texts_from_request(request, LIMITS)
    except ServingError:
        return
    check_result(type("Inputs", (), {"texts": texts, "ids": None}))

