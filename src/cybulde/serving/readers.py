"""What `predict` and the served model accept as texts to score, and the limits they enforce.

Files (`read_input`): .csv, .parquet, .jsonl/.ndjson with a text column (and an optional `id`
column carried into the output), or .txt / standard input with one text per line (blank lines
skipped). Requests to the served model (`texts_from_request`): a DataFrame with a `text` column (or
a single column), a Series, a list of strings or one string.

Reading stops early: a file or standard input is read in chunks, never more than `--max-bytes`
bytes, and line formats (and CSV) stop after `--max-rows` + 1 texts, so an endless or oversized
input is refused without being held in memory.

Every text must be a non-blank string: numbers, nulls and other values are refused, not converted,
and so are blank texts (empty or whitespace only: publish drops such rows, the model never saw
one). Control characters, NUL included, are accepted: they reach the model through the same
cleaning and tokenizer as the training texts did (BERT-style tokenizers drop them).

`Limits` bounds the rows per input (a file for `predict`, a request for the served model) and the
characters per text; they are checked as soon as the input is parsed, before any model work.
Every failure is an `InputError` (or `UnsupportedFormatError`) with a one-line message.
"""

from __future__ import annotations

import codecs
import io
import itertools
import json
import sys
from collections.abc import Iterator, Sequence
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
DEFAULT_MAX_BYTES = 256 * 2**20  # bytes of a `predict` input (--max-bytes)
CHUNK_BYTES = 1 << 16  # read at a time from a file or standard input


@dataclass(frozen=True)
class Limits:
    """At most `max_rows` texts per input, `max_chars` characters per text and, for files and standard
    input, `max_bytes` bytes (None: no byte limit).

    `rows_hint` / `chars_hint` / `bytes_hint` name the setting that raises each limit, for the error message.
    """

    max_rows: int
    max_chars: int
    rows_hint: str = "--max-rows"
    chars_hint: str = "--max-chars"
    max_bytes: int | None = None
    bytes_hint: str = "--max-bytes"

    def check_rows(self, count: int, origin: str) -> None:
        if count > self.max_rows:
            raise InputLimitError(f"{origin} holds {count:,} texts, over the limit of {self.max_rows:,} "
                                  f"({self.rows_hint}); split the input")

    def check_rows_read(self, count: int, origin: str) -> None:
        """`count` texts were read, reading stopped at `max_rows` + 1: more than the limit, how many unknown."""
        if count > self.max_rows:
            raise InputLimitError(f"{origin} holds more than {self.max_rows:,} texts, over the limit of "
                                  f"{self.max_rows:,} ({self.rows_hint}); split the input")

    def check_bytes(self, count: int, origin: str) -> None:
        if self.max_bytes is not None and count > self.max_bytes:
            raise InputLimitError(f"{origin} is larger than the limit of {self.max_bytes:,} bytes "
                                  f"({self.bytes_hint}); split the input")

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
        return read_stream(stream, kind, "standard input", limits, text_column)
    path = Path(source)
    if not path.is_file():
        raise InputError(f"input file {path} not found")
    limits.check_bytes(path.stat().st_size, str(path))
    with open(path, "rb") as stream:
        return read_stream(stream, kind, str(path), limits, text_column)


def parse_input(data: bytes, kind: str, origin: str, limits: Limits,
                text_column: str = TEXT_COLUMN) -> InputTexts:
    """`data` read as `kind` ("csv", "parquet", "jsonl" or "lines"), checked against `limits`."""
    return read_stream(io.BytesIO(data), kind, origin, limits, text_column)


def read_stream(stream: BinaryIO, kind: str, origin: str, limits: Limits,
                text_column: str = TEXT_COLUMN) -> InputTexts:
    """The texts of `stream` read as `kind`, reading no more than the limits need."""
    text = Utf8Stream(stream, origin, limits)
    if kind == "lines":
        texts = [line.rstrip("\r") for line in first_nonblank_lines(text.lines(), limits.max_rows + 1)]
        limits.check_rows_read(len(texts), origin)
        inputs = InputTexts(texts=texts, ids=None)
    else:
        inputs = texts_from_frame(_read_table(text, kind, origin, limits), text_column, origin)
    if not inputs.texts:
        raise EmptyInputError(f"{origin} holds no texts: nothing to score")
    limits.check_rows_read(len(inputs.texts), origin)
    limits.check_chars(inputs.texts, origin)
    return inputs


def first_nonblank_lines(lines: Iterator[str], count: int) -> list[str]:
    """Up to `count` non-blank lines; reading stops at the last one."""
    found: list[str] = []
    for line in lines:
        if line.strip():
            found.append(line)
            if len(found) == count:
                break
    return found


class Utf8Stream:
    """The UTF-8 text of a binary stream, decoded chunk by chunk; more than `limits.max_bytes` bytes
    or bytes that are not UTF-8 are an `InputError` naming the offset."""

    def __init__(self, raw: BinaryIO, origin: str, limits: Limits) -> None:
        self.raw, self.origin, self.limits = raw, origin, limits
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.consumed = 0  # bytes read so far
        self.ended = False
        self.saw_text = False  # a character other than whitespace was read
        self.buffer = ""  # decoded and not yet handed out by `read`

    def next_chunk(self) -> str:
        """The next decoded piece ('' once the stream has ended)."""
        if self.ended:
            return ""
        data = getattr(self.raw, "read1", self.raw.read)(CHUNK_BYTES)
        self.limits.check_bytes(self.consumed + len(data), self.origin)
        pending = len(self.decoder.getstate()[0])  # bytes of an unfinished character from the last chunk
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as error:
            offset = self.consumed - pending + error.start
            raise InputEncodingError(
                f"{self.origin} is not UTF-8 encoded text (byte 0x{error.object[error.start]:02x} at offset "
                f"{offset}); convert it to UTF-8, e.g. iconv -f latin1 -t utf-8") from error
        self.consumed += len(data)
        self.ended = not data
        self.saw_text = self.saw_text or bool(text.strip())
        return text

    def lines(self) -> Iterator[str]:
        """The text split at "\n" (each line without it), read as far as the caller iterates."""
        pieces: list[str] = []  # of the line being read
        chunk, self.buffer = self.buffer, ""
        while True:
            if "\n" in chunk:
                first, *middle, last = chunk.split("\n")
                yield "".join([*pieces, first])
                yield from middle
                pieces = [last]
            else:
                pieces.append(chunk)
            if self.ended:
                break
            chunk = self.next_chunk()
        yield "".join(pieces)

    def read(self, size: int = -1) -> str:
        """File-like reading, for pandas."""
        parts = [self.buffer]
        length = len(self.buffer)
        while (size < 0 or length < size) and not self.ended:
            chunk = self.next_chunk()
            parts.append(chunk)
            length += len(chunk)
        text = "".join(parts)
        if size < 0:
            self.buffer = ""
            return text
        self.buffer = text[size:]
        return text[:size]

    def is_blank(self) -> bool:
        """Whether the whole stream is whitespace; reads only up to its first other character."""
        while not self.saw_text and not self.ended:
            self.buffer += self.next_chunk()
        return not self.saw_text


def _read_table(text: Utf8Stream, kind: str, origin: str, limits: Limits) -> pd.DataFrame:
    import pandas as pd

    if kind == "parquet":
        return _read_parquet(text.raw, origin, limits)
    if text.is_blank():
        raise EmptyInputError(f"{origin} is empty: nothing to score")
    if kind == "csv":
        try:
            return pd.read_csv(text, dtype=str, keep_default_na=False, nrows=limits.max_rows + 1)
        except InputError:
            raise
        except Exception as error:  # ParserError, EmptyDataError, csv.Error...
            raise MalformedInputError(f"cannot parse {origin} as CSV: {first_line(error)}") from error
    return _read_jsonl(text, origin, limits)


def _read_parquet(raw: BinaryIO, origin: str, limits: Limits) -> pd.DataFrame:
    import pandas as pd
    import pyarrow.parquet as pq

    data = raw.read(limits.max_bytes + 1) if limits.max_bytes is not None else raw.read()
    limits.check_bytes(len(data), origin)
    try:
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    except Exception as error:  # pyarrow raises several types for a broken file
        raise MalformedInputError(f"cannot read {origin} as Parquet: {first_line(error)}") from error
    limits.check_rows(rows, origin)  # before decoding a row of an oversized table
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as error:
        raise MalformedInputError(f"cannot read {origin} as Parquet: {first_line(error)}") from error


def _read_jsonl(text: Utf8Stream, origin: str, limits: Limits) -> pd.DataFrame:
    import pandas as pd

    numbered = ((number, line) for number, line in enumerate(text.lines(), start=1) if line.strip())
    lines = list(itertools.islice(numbered, limits.max_rows + 1))
    limits.check_rows_read(len(lines), origin)  # before parsing a line of an oversized input
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
