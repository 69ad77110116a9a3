"""What `predict` and the served model accept as texts to score, and the limits they enforce.

Files (`read_input`): .csv, .parquet, .jsonl/.ndjson with a text column (and an optional `id`
column carried into the output), or .txt / standard input with one text per line (blank lines
skipped). Requests to the served model (`texts_from_request`): a DataFrame with a `text` column (or
a single column), a Series, a list of strings or one string.

Every text must be a non-blank string: numbers, nulls and other values are refused, not converted,
and so are blank texts (empty or whitespace only: publish drops such rows, the model never saw
one). Control characters, NUL included, are accepted: they reach the model through the same
cleaning and tokenizer as the training texts did (BERT-style tokenizers drop them).

`Limits` bounds the rows per input (a file for `predict`, a request for the served model) and the
characters per text; they are checked as soon as the input is parsed, before any model work.
Every failure is an `InputError` (or `UnsupportedFormatError`) with a one-line message.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cybulde.errors import first_line
from cybulde.serving.errors import (
    EmptyInputError,
    EmptyTextError,
    InputEncodingError,
    InputError,
    InputLimitError,
    MalformedInputError,
    MissingColumnError,
    NonTextValueError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:
    import pandas as pd

STDIN = "-"
TEXT_COLUMN = "text"
ID_COLUMN = "id"
INPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                 ".ndjson": "jsonl", ".txt": "lines"}
SHOWN_ROWS = 5  # rows named in an error message
DEFAULT_MAX_CHARS = 10_000  # characters per text, in a `predict` input and a served request alike


@dataclass(frozen=True)
class Limits:
    """At most `max_rows` texts per input and `max_chars` characters per text.

    `rows_hint` / `chars_hint` name the setting that raises each limit, for the error message.
    """

    max_rows: int
    max_chars: int
    rows_hint: str = "--max-rows"
    chars_hint: str = "--max-chars"

    def check_rows(self, count: int, origin: str) -> None:
        if count > self.max_rows:
            raise InputLimitError(f"{origin} holds {count:,} texts, over the limit of {self.max_rows:,} "
                                  f"({self.rows_hint}); split the input")

    def check_chars(self, texts: Sequence[str], origin: str) -> None:
        long_rows = [row for row, text in enumerate(texts) if len(text) > self.max_chars]
        if long_rows:
            longest = max(len(texts[row]) for row in long_rows)
            raise InputLimitError(f"{origin}: {_rows(long_rows)} longer than the limit of {self.max_chars:,} "
                                  f"characters per text ({self.chars_hint}; the longest has {longest:,})")


@dataclass
class InputTexts:
    texts: list[str]
    ids: list[Any] | None  # the input's `id` column, carried into the output


# ---- files and standard input ----------------------------------------------------------------

def input_format_of(source: str) -> str:
    if source == STDIN:
        return "lines"
    kind = INPUT_FORMATS.get(Path(source).suffix.lower())
    if kind is None:
        raise UnsupportedFormatError(
            f"cannot read {source}: unknown extension {Path(source).suffix!r}; expected one of "
            f"{sorted(INPUT_FORMATS)} or '-' for standard input")
    return kind


def read_input(source: str, limits: Limits, text_column: str = TEXT_COLUMN,
               stdin: BinaryIO | None = None) -> InputTexts:
    """The texts (and ids) of a file or of standard input ('-'); raises an `InputError`."""
    kind = input_format_of(source)
    if source == STDIN:
        stream = stdin if stdin is not None else sys.stdin.buffer
        return parse_input(stream.read(), kind, "standard input", limits, text_column)
    path = Path(source)
    if not path.is_file():
        raise InputError(f"input file {path} not found")
    return parse_input(path.read_bytes(), kind, str(path), limits, text_column)


def parse_input(data: bytes, kind: str, origin: str, limits: Limits,
                text_column: str = TEXT_COLUMN) -> InputTexts:
    """`data` read as `kind` ("csv", "parquet", "jsonl" or "lines"), checked against `limits`."""
    if kind == "lines":
        texts = [line.rstrip("\r") for line in _decode(data, origin).split("\n")]
        inputs = InputTexts(texts=[text for text in texts if text.strip()], ids=None)
    else:
        inputs = texts_from_frame(_read_table(data, kind, origin, limits), text_column, origin)
    if not inputs.texts:
        raise EmptyInputError(f"{origin} holds no texts: nothing to score")
    limits.check_rows(len(inputs.texts), origin)
    limits.check_chars(inputs.texts, origin)
    return inputs


def _decode(data: bytes, origin: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputEncodingError(
            f"{origin} is not UTF-8 encoded text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); convert it to UTF-8, e.g. iconv -f latin1 -t utf-8") from error


def _read_table(data: bytes, kind: str, origin: str, limits: Limits) -> pd.DataFrame:
    import pandas as pd

    if kind == "parquet":
        try:
            return pd.read_parquet(io.BytesIO(data))
        except Exception as error:  # pyarrow raises several types for a broken file
            raise MalformedInputError(f"cannot read {origin} as Parquet: {first_line(error)}") from error
    content = _decode(data, origin)
    if not content.strip():
        raise EmptyInputError(f"{origin} is empty: nothing to score")
    if kind == "csv":
        try:
            return pd.read_csv(io.StringIO(content), dtype=str, keep_default_na=False)
        except Exception as error:  # ParserError, EmptyDataError, csv.Error...
            raise MalformedInputError(f"cannot parse {origin} as CSV: {first_line(error)}") from error
    return _read_jsonl(content, origin, limits)


def _read_jsonl(content: str, origin: str, limits: Limits) -> pd.DataFrame:
    import pandas as pd

    lines = [(number, line) for number, line in enumerate(content.split("\n"), start=1) if line.strip()]
    limits.check_rows(len(lines), origin)  # before parsing a line of an oversized input
    records = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as error:  # JSONDecodeError, too many digits, too deep
            raise MalformedInputError(f"{origin} line {number} is not valid JSON: "
                                      f"{getattr(error, 'msg', None) or first_line(error)}") from error
        if not isinstance(record, dict):
            raise MalformedInputError(f"{origin} line {number} is not a JSON object (got "
                                      f"{type(record).__name__}); expected one object per line")
        records.append(record)
    return pd.DataFrame(records, dtype=object)  # values keep their JSON types (no int -> float)


def texts_from_frame(frame: pd.DataFrame, text_column: str, origin: str) -> InputTexts:
    columns = [str(column) for column in frame.columns]
    if text_column not in columns:
        raise MissingColumnError(f"{origin} has no column {text_column!r}; available columns: {columns}. "
                                 f"Choose one with --text-column")
    values = frame.iloc[:, columns.index(text_column)].tolist()
    texts = checked_texts(values, f"{origin}: column {text_column!r}")
    if ID_COLUMN not in columns or text_column == ID_COLUMN:
        return InputTexts(texts=texts, ids=None)
    return InputTexts(texts=texts, ids=uniform_ids(frame.iloc[:, columns.index(ID_COLUMN)].tolist()))


def uniform_ids(ids: list[Any]) -> list[Any]:
    """The ids as they are when all are strings or all integers, else as strings (any output format
    can then hold them)."""
    if all(isinstance(value, str) for value in ids):
        return ids
    if all(isinstance(value, int) and not isinstance(value, bool) for value in ids):
        return ids
    return [str(value) for value in ids]


# ---- requests to the served model ----------------------------------------------------------------

def texts_from_request(model_input: Any, limits: Limits) -> list[str]:
    """The texts of a served-model input: a DataFrame's `text` column (or its only column), a
    Series, a list of strings, one string, or {"text": [...]}; checked against `limits`."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        columns = [str(column) for column in model_input.columns]
        if TEXT_COLUMN in columns:
            values = model_input.iloc[:, columns.index(TEXT_COLUMN)].tolist()
        elif len(columns) == 1:
            values = model_input.iloc[:, 0].tolist()
        else:
            raise MissingColumnError(f"the input has no {TEXT_COLUMN!r} column; columns: {columns}")
        if len(values) == 1 and (isinstance(values[0], (list, tuple)) or _is_array(values[0])):
            # MLflow hands `{"inputs": [...]}` and `{"inputs": {"text": [...]}}` over as one row holding the list.
            values = list(values[0].tolist() if _is_array(values[0]) else values[0])
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, dict) and TEXT_COLUMN in model_input:
        column = model_input[TEXT_COLUMN]
        values = [column] if isinstance(column, str) else list(column)
    elif isinstance(model_input, (list, tuple)):
        values = list(model_input)
    else:
        raise NonTextValueError(f"the input must be a table with a {TEXT_COLUMN!r} column or a list of "
                                f"strings, got {type(model_input).__name__}")
    if not values:
        raise EmptyInputError("the input holds no texts: nothing to score")
    limits.check_rows(len(values), "the input")
    texts = checked_texts(values, "the input")
    limits.check_chars(texts, "the input")
    return texts


# ---- shared checks -------------------------------------------------------------------------------

def checked_texts(values: Sequence[Any], origin: str) -> list[str]:
    """`values` if every one is a non-blank string; otherwise an error naming the rows (from 1)."""
    not_strings = [row for row, value in enumerate(values) if not isinstance(value, str)]
    if not_strings:
        kinds = sorted({_kind(values[row]) for row in not_strings})
        raise NonTextValueError(f"{origin}: {_rows(not_strings)} not text ({', '.join(kinds)}); every "
                                f"value to score must be a string")
    blank = [row for row, value in enumerate(values) if not value.strip()]
    if blank:
        raise EmptyTextError(f"{origin}: {_rows(blank)} blank (empty or whitespace only): nothing to "
                             f"score; remove them")
    return list(values)


def _is_array(value: Any) -> bool:
    return type(value).__name__ == "ndarray"


def _kind(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value) or type(value).__name__ in ("NAType", "NaTType"):
        return "missing"
    return type(value).__name__


def _rows(rows: Sequence[int]) -> str:
    shown = ", ".join(str(row + 1) for row in rows[:SHOWN_ROWS])
    more = f" and {len(rows) - SHOWN_ROWS:,} more" if len(rows) > SHOWN_ROWS else ""
    return f"row {shown} is" if len(rows) == 1 else f"rows {shown}{more} are"
