"""`cybulde predict`: score texts with a trained model and write labels with probabilities.

    cybulde predict --model model/ comments.csv --output scored.parquet
    cybulde predict --model runs:/<run id>/model comments.jsonl --text-column body
    echo "some text" | cybulde predict --model models:/cybulde-classifier/1

Input: a .csv, .parquet or .jsonl/.ndjson file with a text column, a .txt file, or standard input
(one text per line, blank lines skipped). The model: an exported model folder (`model/` of the
pipeline) or an MLflow model URI (runs:/..., models:/..., or any URI MLflow resolves). Output rows
follow the input rows: the input's `id` column if it has one, `text`, `label` (the predicted label
name) and `prob_<label name>` per label; written as .csv/.parquet/.jsonl by the --output extension,
or as JSON lines on standard output.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cybulde.errors import CybuldeError

if TYPE_CHECKING:
    import pandas as pd

STDIN = "-"
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                 ".ndjson": "jsonl", ".txt": "lines"}
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                  ".ndjson": "jsonl"}
ID_COLUMN = "id"
TEXT_OUTPUT_COLUMN = "text"
# Inputs with more texts than this show a progress bar (when standard error is a terminal).
LONG_INPUT = 1000


class PredictError(CybuldeError):
    """Bad input, output or model for `cybulde predict`; the message says what to change."""


class EmptyInputError(PredictError):
    """The input holds no text to score."""


class MissingColumnError(PredictError):
    """The input table lacks the text column."""


class InputEncodingError(PredictError):
    """The input is not UTF-8 encoded text."""


class UnsupportedFormatError(PredictError):
    """The input or output file extension is not one `predict` reads or writes."""


class ModelSourceError(PredictError):
    """The model folder or URI cannot be loaded."""


@dataclass
class InputTexts:
    texts: list[str]
    ids: list[Any] | None  # the input's `id` column, carried into the output


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", nargs="?", default=STDIN,
                        help="a .csv, .parquet, .jsonl, .ndjson or .txt file; '-' or nothing: "
                             "standard input, one text per line")
    parser.add_argument("-m", "--model", required=True,
                        help="an exported model folder (e.g. model/) or an MLflow model URI "
                             "(runs:/<run id>/model, models:/<name>/<version>)")
    parser.add_argument("--text-column", default="text",
                        help="column holding the texts in a table input (default: text)")
    parser.add_argument("-o", "--output", default=None,
                        help="output file, .csv, .parquet or .jsonl (default: JSON lines on "
                             "standard output)")
    parser.add_argument("--batch-size", type=_positive_int, default=64,
                        help="texts scored per forward pass (default: 64)")
    parser.add_argument("--threshold", type=_probability, default=None,
                        help="decision threshold of a binary sigmoid head for a model folder "
                             "(default: argmax); an MLflow model applies the threshold it was "
                             "logged with")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI to resolve runs:/ and models:/ URIs (default: "
                             "$MLFLOW_TRACKING_URI, else the project's SQLite store)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}") from error
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def run_predict(args: argparse.Namespace) -> int:
    """The `cybulde predict` command; known errors become one line on standard error."""
    try:
        predict(input_path=args.input, model=args.model, text_column=args.text_column,
                output=args.output, batch_size=args.batch_size, threshold=args.threshold,
                tracking_uri=args.tracking_uri)
    except PredictError as error:
        print(f"cybulde predict: error: {error}", file=sys.stderr)
        return 2
    return 0


def predict(input_path: str, model: str, text_column: str = "text", output: str | None = None,
            batch_size: int = 64, threshold: float | None = None,
            tracking_uri: str | None = None, stdin: BinaryIO | None = None,
            stdout: Any = None) -> pd.DataFrame:
    """Read the input, score it, write the output; returns the output table."""
    output_format = output_format_of(output)  # fail on a bad extension before any work
    inputs = read_input(input_path, text_column, stdin=stdin)
    scorer = load_scorer(model, batch_size=batch_size, threshold=threshold,
                         tracking_uri=tracking_uri)
    with progress_bar(len(inputs.texts)) as advance:
        scored = scorer(inputs.texts, advance)
    table = output_table(inputs, scored)
    write_output(table, output, output_format, stdout=stdout)
    return table


# ---- input -----------------------------------------------------------------------------------

def read_input(source: str, text_column: str = "text",
               stdin: BinaryIO | None = None) -> InputTexts:
    """The texts (and ids) of a file or of standard input; raises a PredictError subclass."""
    if source == STDIN:
        stream = stdin if stdin is not None else sys.stdin.buffer
        return _non_empty(lines_to_texts(_decode(stream.read(), "standard input")), "standard input")
    path = Path(source)
    if not path.is_file():
        raise PredictError(f"input file {path} not found")
    kind = TABLE_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UnsupportedFormatError(
            f"cannot read {path}: unknown extension {path.suffix!r}; expected one of "
            f"{sorted(TABLE_FORMATS)} or '-' for standard input")
    if kind == "lines":
        return _non_empty(lines_to_texts(_decode(path.read_bytes(), str(path))), str(path))
    frame = _read_table(path, kind)
    return _non_empty(texts_from_frame(frame, text_column, str(path)), str(path))


def _decode(data: bytes, origin: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputEncodingError(
            f"{origin} is not UTF-8 encoded text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); convert it to UTF-8, e.g. iconv -f latin1 -t utf-8") from error


def lines_to_texts(content: str) -> InputTexts:
    texts = [line.rstrip("\r") for line in content.split("\n")]
    return InputTexts(texts=[text for text in texts if text.strip()], ids=None)


def _read_table(path: Path, kind: str) -> pd.DataFrame:
    import pandas as pd

    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several types for a broken file
            raise PredictError(f"cannot read {path} as Parquet: {_first_line(error)}") from error
    content = _decode(path.read_bytes(), str(path))
    if not content.strip():
        raise EmptyInputError(f"{path} is empty: nothing to score")
    if kind == "csv":
        try:
            return pd.read_csv(io.StringIO(content), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, ValueError) as error:
            raise PredictError(f"cannot parse {path} as CSV: {_first_line(error)}") from error
    return _read_jsonl(content, path)


def _read_jsonl(content: str, path: Path) -> pd.DataFrame:
    import pandas as pd

    records = []
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PredictError(f"{path} line {number} is not valid JSON: {error.msg}") from error
        if not isinstance(record, dict):
            raise PredictError(f"{path} line {number} is not a JSON object (got "
                               f"{type(record).__name__}); expected one object per line")
        records.append(record)
    return pd.DataFrame.from_records(records)


def texts_from_frame(frame: pd.DataFrame, text_column: str, origin: str) -> InputTexts:
    import pandas as pd

    columns = [str(column) for column in frame.columns]
    if text_column not in columns:
        raise MissingColumnError(
            f"{origin} has no column {text_column!r}; available columns: {columns}. "
            f"Choose one with --text-column")
    values = frame[text_column]
    missing = [index for index, value in enumerate(values) if not isinstance(value, str)
               and (value is None or pd.isna(value))]
    if missing:
        rows = ", ".join(str(index + 1) for index in missing[:5])
        raise PredictError(f"{origin}: column {text_column!r} has no text in row(s) {rows}"
                           f"{' ...' if len(missing) > 5 else ''} (counting data rows from 1)")
    texts = [value if isinstance(value, str) else str(value) for value in values]
    ids = frame[ID_COLUMN].tolist() if ID_COLUMN in columns and text_column != ID_COLUMN else None
    return InputTexts(texts=texts, ids=ids)


def _non_empty(inputs: InputTexts, origin: str) -> InputTexts:
    if not inputs.texts:
        raise EmptyInputError(f"{origin} holds no texts: nothing to score")
    return inputs


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---- model -----------------------------------------------------------------------------------

Scorer = Callable[[list[str], Callable[[int], None]], "pd.DataFrame"]


def is_model_uri(model: str) -> bool:
    return "://" in model or model.startswith(("runs:/", "models:/"))


def load_scorer(model: str, batch_size: int = 64, threshold: float | None = None,
                tracking_uri: str | None = None) -> Scorer:
    """A function `(texts, advance) -> table of label and prob_* columns`."""
    if is_model_uri(model) and not Path(model).is_dir():
        if threshold is not None:
            raise PredictError("--threshold applies to a model folder only; an MLflow model "
                               "applies the threshold it was logged with")
        return _pyfunc_scorer(model, batch_size, tracking_uri)
    return _folder_scorer(Path(model), batch_size, threshold)


def _folder_scorer(model_dir: Path, batch_size: int, threshold: float | None) -> Scorer:
    from cybulde.evaluation.inference import TextScorer
    from cybulde.evaluation.thresholds import needs_threshold
    from cybulde.models.checkpoint import ModelFormatError

    if not model_dir.is_dir():
        raise ModelSourceError(f"model {str(model_dir)!r} is neither a folder nor an MLflow model "
                               f"URI (runs:/<run id>/model, models:/<name>/<version>)")
    try:
        scorer = TextScorer.from_dir(model_dir, threshold=threshold, batch_size=batch_size)
    except (ModelFormatError, OSError) as error:
        raise ModelSourceError(f"cannot load the model in {model_dir}: {error}") from error
    if threshold is not None and not needs_threshold(scorer.head_kind, len(scorer.label_names)):
        raise PredictError(f"--threshold applies to a binary sigmoid head; this model has a "
                           f"{scorer.head_kind} head over {len(scorer.label_names)} labels")
    return scorer.score


def _pyfunc_scorer(uri: str, batch_size: int, tracking_uri: str | None) -> Scorer:
    import mlflow
    import pandas as pd

    from cybulde.tracking.run import tracking_uri as default_tracking_uri

    if tracking_uri is None:
        from cybulde.config.schema import Config

        tracking_uri = default_tracking_uri(Config())
    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as error:  # mlflow raises MlflowException, OSError... for a bad URI
        raise ModelSourceError(f"cannot load MLflow model {uri!r} from {tracking_uri}: "
                               f"{_first_line(error)}") from error

    def score(texts: list[str], advance: Callable[[int], None]) -> pd.DataFrame:
        parts = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            parts.append(model.predict(pd.DataFrame({"text": chunk})))
            advance(len(chunk))
        return pd.concat(parts, ignore_index=True)

    return score


# ---- progress and output -----------------------------------------------------------------------

class progress_bar:  # noqa: N801 (used as a context manager, reads like a function)
    """tqdm on standard error for long inputs when it is a terminal; otherwise silent."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.total > LONG_INPUT and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="text", file=sys.stderr, desc="scoring")
            return self.bar.update
        return lambda count: None

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()


def output_table(inputs: InputTexts, scored: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    columns: dict[str, Any] = {}
    if inputs.ids is not None:
        columns[ID_COLUMN] = inputs.ids
    columns[TEXT_OUTPUT_COLUMN] = inputs.texts
    table = pd.DataFrame(columns)
    return pd.concat([table, scored.reset_index(drop=True)], axis=1)


def output_format_of(output: str | None) -> str:
    if output is None or output == STDIN:
        return "jsonl"
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UnsupportedFormatError(f"cannot write {output}: unknown extension {suffix!r}; "
                                     f"expected one of {sorted(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def write_output(table: pd.DataFrame, output: str | None, output_format: str,
                 stdout: Any = None) -> None:
    if output is None or output == STDIN:
        stream = stdout if stdout is not None else sys.stdout
        for record in _records(table):
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        stream.flush()
        return
    path = Path(output)
    if path.parent and not path.parent.is_dir():
        raise PredictError(f"cannot write {path}: folder {path.parent} does not exist")
    if output_format == "csv":
        table.to_csv(path, index=False)
    elif output_format == "parquet":
        table.to_parquet(path, index=False)
    else:
        with open(path, "w", encoding="utf-8") as stream:
            for record in _records(table):
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (numpy scalars to Python numbers)."""
    return json.loads(table.to_json(orient="records", force_ascii=False, double_precision=15))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cybulde predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predict_arguments(parser)
    return run_predict(parser.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
