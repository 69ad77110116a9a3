"""`cybulde predict`: score texts with a trained model and write labels with probabilities.

    cybulde predict --model model/ comments.csv --output scored.parquet
    cybulde predict --model runs:/<run id>/model comments.jsonl --text-column body
    echo "some text" | cybulde predict --model models:/cybulde-classifier@candidate

Input: a .csv, .parquet or .jsonl/.ndjson file with a text column, a .txt file, or standard input
(one text per line, blank lines skipped); see `cybulde.serving.readers` for what is refused. The
model: an exported model folder (`model/` of the pipeline) or an MLflow model URI (runs:/...,
models:/NAME/VERSION, models:/NAME@ALIAS); a URI's files are downloaded and read as data
(safetensors weights, JSON config, the tokenizer): nothing of the model is unpickled or run, and
each file must have the sha256 the tracking server records for the version (or the run's logged
model: `cybulde.serving.integrity`). The server is asked with the pipeline's bounded HTTP timeouts
(`mlflow.http_timeout_s`, `mlflow.http_max_retries`): an unreachable one is one line in seconds. Texts
go through the model's own text path (`cybulde.serving.scorer`). Output rows follow the input rows:
the input's `id` column if it has one, `text`, `label` and `prob_<label name>` per label (a
multi-label model: `<question>_probability` and `<question>_prediction` per question, decided by
the thresholds the model was logged with, or for a model folder by --question-threshold, else
--threshold, else 0.5); written as .csv/.parquet/.jsonl by the --output extension, or as JSON lines
on standard output.

Bounds: the input is read in chunks up to --max-bytes and stops at --max-rows + 1 texts; the
output path is checked before any reading (an existing file needs --overwrite; the input itself, a
folder or an unwritable place is refused); SIGINT and SIGTERM stop the command within a second
(exit status 130 / 143, one line, no output file).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, BinaryIO

from cybulde.errors import first_line
from cybulde.hardware import PRECISIONS
from cybulde.serving.errors import ModelSourceError, ServingError
from cybulde.serving.readers import DEFAULT_MAX_BYTES, DEFAULT_MAX_CHARS, STDIN, TEXT_COLUMN, Limits, read_input
from cybulde.serving.scorer import DEFAULT_BATCH_SIZE, TextScorer
from cybulde.serving.writers import check_destination, output_format_of, output_table, write_output

if TYPE_CHECKING:
    import pandas as pd

INPUT_MAX_ROWS = 100_000  # texts per `predict` input (--max-rows)
# Inputs with more texts than this report their progress on standard error.
LONG_INPUT = 1000
PROGRESS_EVERY_S = 10.0  # plain progress lines when standard error is not a terminal
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_GRACE_S = 0.7  # after a stop signal, cleanup may take this long before the process just exits


def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("input", nargs="?", default=STDIN,
                        help="a .csv, .parquet, .jsonl, .ndjson or .txt file; '-' or nothing: "
                             "standard input, one text per line")
    parser.add_argument("-m", "--model", required=True,
                        help="an exported model folder (e.g. model/) or an MLflow model URI "
                             "(runs:/<run id>/model, models:/<name>/<version>, models:/<name>@<alias>)")
    parser.add_argument("--text-column", default=TEXT_COLUMN,
                        help="column holding the texts in a table input (default: text)")
    parser.add_argument("-o", "--output", default=None,
                        help="output file, .csv, .parquet or .jsonl (default: JSON lines on standard output)")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"texts scored per forward pass (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--threshold", type=_probability, default=None,
                        help="decision threshold of a binary sigmoid head for a model folder "
                             "(default: argmax), or of every question of a multi-label one (default: 0.5); "
                             "an MLflow model applies the threshold it was logged with")
    parser.add_argument("--question-threshold", type=_question_threshold, action="append", default=[],
                        metavar="QUESTION=P",
                        help="decision threshold of one question of a multi-label model folder (repeatable; "
                             "e.g. the threshold/<question> values of metrics/validation.json); the other "
                             "questions use --threshold, else 0.5")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="default: the model's own train.precision, resolved on this machine as in the "
                             "validate and test stages (auto: bf16 where the hardware runs it natively)")
    parser.add_argument("--max-rows", type=_positive_int, default=INPUT_MAX_ROWS,
                        help=f"refuse an input with more texts than this (default: {INPUT_MAX_ROWS:,})")
    parser.add_argument("--max-chars", type=_positive_int, default=DEFAULT_MAX_CHARS,
                        help=f"refuse a text longer than this many characters (default: {DEFAULT_MAX_CHARS:,})")
    parser.add_argument("--max-bytes", type=_positive_int, default=DEFAULT_MAX_BYTES,
                        help=f"refuse an input larger than this many bytes (default: {DEFAULT_MAX_BYTES:,})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output file (never the input itself)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI to resolve runs:/ and models:/ URIs (default: "
                             "$MLFLOW_TRACKING_URI, else the project's SQLite store)")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from error
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


def _question_threshold(text: str) -> tuple[str, float]:
    question, separator, value = text.partition("=")
    if not separator or not question.strip():
        raise argparse.ArgumentTypeError(f"must be QUESTION=PROBABILITY, got {text!r}")
    return question.strip(), _probability(value)


def run_predict(args: argparse.Namespace) -> int:
    """The `cybulde predict` command (errors are reported by `cybulde.cli`)."""
    try:
        with stopped_by_signals():
            predict(input_path=args.input, model=args.model, text_column=args.text_column, output=args.output,
                    batch_size=args.batch_size, threshold=args.threshold, precision=args.precision,
                    limits=Limits(args.max_rows, args.max_chars, max_bytes=args.max_bytes),
                    tracking_uri=args.tracking_uri, overwrite=args.overwrite,
                    question_thresholds=dict(getattr(args, "question_threshold", None) or []))
    except Stopped as stop:
        return stop.report()
    return 0


def predict(input_path: str, model: str, text_column: str = TEXT_COLUMN, output: str | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, threshold: float | None = None, precision: str | None = None,
            limits: Limits | None = None, tracking_uri: str | None = None, stdin: BinaryIO | None = None,
            stdout: Any = None, overwrite: bool = False,
            question_thresholds: dict[str, float] | None = None) -> pd.DataFrame:
    """Read and check the input, score it, write the output; returns the output table.

    Every check on the destination and the input runs before the model is loaded.
    """
    check_destination(output, input_path, overwrite)
    output_format = output_format_of(output)
    inputs = read_input(input_path, limits or Limits(INPUT_MAX_ROWS, DEFAULT_MAX_CHARS, max_bytes=DEFAULT_MAX_BYTES),
                        text_column, stdin=stdin)
    with loaded_scorer(model, batch_size=batch_size, threshold=threshold, precision=precision,
                       tracking_uri=tracking_uri, question_thresholds=question_thresholds) as scorer, \
            progress(len(inputs.texts)) as advance:
        scored = scorer.score(inputs.texts, advance)
    table = output_table(inputs, scored)
    write_output(table, output, output_format, stdout=stdout)
    return table


# ---- model -----------------------------------------------------------------------------------

def is_model_uri(model: str) -> bool:
    return "://" in model or model.startswith(("runs:/", "models:/"))


@contextlib.contextmanager
def loaded_scorer(model: str, batch_size: int = DEFAULT_BATCH_SIZE, threshold: float | None = None,
                  precision: str | None = None, tracking_uri: str | None = None,
                  question_thresholds: dict[str, float] | None = None) -> Iterator[TextScorer]:
    """The scorer of a model folder, or of an MLflow model URI's files (downloaded for the duration)."""
    if not (is_model_uri(model) and not Path(model).is_dir()):
        yield folder_scorer(Path(model), batch_size, threshold, precision, question_thresholds)
        return
    if threshold is not None or question_thresholds:
        raise ServingError("--threshold and --question-threshold apply to a model folder only; an MLflow "
                           "model applies the threshold it was logged with")
    with tempfile.TemporaryDirectory(prefix="cybulde-predict-") as scratch:
        model_dir, config = download_logged_model(model, Path(scratch), tracking_uri)
        logged_threshold = config.get("threshold")
        logged_thresholds = {str(question): float(value)
                             for question, value in (config.get("thresholds") or {}).items()}
        yield folder_scorer(model_dir, batch_size, None if logged_threshold is None else float(logged_threshold),
                            precision, logged_thresholds)


def folder_scorer(model_dir: Path, batch_size: int, threshold: float | None, precision: str | None,
                  question_thresholds: dict[str, float] | None = None) -> TextScorer:
    from cybulde.models.export import ModelFormatError  # with the model (and omegaconf), not for --help

    if not model_dir.is_dir():
        raise ModelSourceError(f"model {str(model_dir)!r} is neither a folder nor an MLflow model URI "
                               f"(runs:/<run id>/model, models:/<name>/<version>)")
    try:
        scorer = TextScorer.from_dir(model_dir, threshold=threshold, batch_size=batch_size, precision=precision,
                                     thresholds=question_thresholds)
    except (ModelFormatError, OSError) as error:
        raise ModelSourceError(f"cannot load the model in {model_dir}: {error}") from error
    check_question_thresholds(scorer, question_thresholds or {})
    if threshold is not None and not scorer.decides_by_threshold:
        raise ServingError(f"--threshold applies to a binary sigmoid head; this model has a "
                           f"{scorer.head_kind} head over {len(scorer.label_names)} labels")
    return scorer


def check_question_thresholds(scorer: TextScorer, question_thresholds: dict[str, float]) -> None:
    """Refuse per-question thresholds for a single-label model, or for a question the model does not ask."""
    if not question_thresholds:
        return
    if not scorer.is_multilabel:
        raise ServingError(f"--question-threshold applies to a multi-label model; this model has a "
                           f"{scorer.head_kind} head over the labels {scorer.label_names}")
    unknown = sorted(set(question_thresholds) - set(scorer.label_names))
    if unknown:
        raise ServingError(f"--question-threshold names {unknown}, which the model does not answer; its "
                           f"questions: {scorer.label_names}")


def download_logged_model(uri: str, scratch: Path, tracking_uri: str | None) -> tuple[Path, dict[str, Any]]:
    """(the exported model folder inside the logged model, its model_config) of an MLflow model URI,
    its files verified against the digests the tracking server records for it."""
    # MLflow and the config schema load only for a logged model: `cybulde predict --help` and a model
    # folder need neither.
    import mlflow

    from cybulde.config.paths import redact_uri
    from cybulde.config.paths import tracking_uri as default_tracking_uri
    from cybulde.config.schema import Config
    from cybulde.serving.pyfunc import logged_model_parts
    from cybulde.tracking.client import connect, global_tracking_uri

    if tracking_uri is None:
        tracking_uri = default_tracking_uri(Config())
    if not sys.stderr.isatty():  # MLflow's download bar would print a line per file
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = connect(tracking_uri, Config())  # the stages' bounded timeouts; an unreachable server is one line
    # runs:/ URIs of logged models resolve through the global tracking URI.
    with global_tracking_uri(tracking_uri):
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch),
                                                             tracking_uri=tracking_uri))
            model_dir, config = logged_model_parts(local, uri)
            verify_logged_model(client, uri, local, model_dir, config)
        except ServingError:
            raise
        except Exception as error:  # MlflowException, OSError... for a bad URI or an unreachable store
            raise ModelSourceError(f"cannot load MLflow model {uri!r} from {redact_uri(tracking_uri)}: "
                                   f"{first_line(error)}") from error
    return model_dir, config


def verify_logged_model(client: Any, uri: str, local: Path, model_dir: Path, config: dict[str, Any]) -> None:
    """Refuse downloaded files that differ from what the tracking server records for `uri`: the
    verified files' digests and the logged model's serving config (its threshold and limits)."""
    from cybulde.serving.integrity import ModelIntegrityError, recorded_digests, verify_model_files  # MLflow's side
    from cybulde.serving.pyfunc import logged_model_id
    from cybulde.tracking.client import CONFIG_TAG

    expected, model_id, recorded_by = recorded_digests(client, uri, logged_model_id(local))
    verify_model_files(model_dir, expected, uri, recorded_by)
    recorded_config = client.get_logged_model(model_id).tags.get(CONFIG_TAG) if model_id else None
    if recorded_config is None or json.loads(recorded_config) != config:
        raise ModelIntegrityError(f"{uri}: the downloaded MLmodel's model_config (threshold, limits) differs from "
                                  f"the serving config its logged model records ({CONFIG_TAG}); refusing it")


# ---- stop signals ----------------------------------------------------------------------------

class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: unwinds the command so that its temporary files are removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def report(self) -> int:
        """One line on standard error; the exit status (128 + the signal number)."""
        _report_stop(self.signum)
        return 128 + self.signum


_stop_reported = threading.Lock()


def _report_stop(signum: int) -> None:
    if _stop_reported.acquire(blocking=False):
        print(f"cybulde predict: stopped by {signal.Signals(signum).name}; no output written", file=sys.stderr,
              flush=True)


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise `Stopped` in the main thread. Should the main thread be
    held in native code, a watchdog thread woken by the signal ends the process STOP_GRACE_S later."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if not raised:  # one unwinding: a second signal during cleanup must not interrupt it
            raised.append(signum)
            raise Stopped(signum)

    wake_read, wake_write = socket.socketpair()
    wake_write.setblocking(False)
    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    previous_wakeup = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
    threading.Thread(target=_exit_after_grace, args=(wake_read,), daemon=True, name="stop-watchdog").start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        wake_write.close()  # ends the watchdog


def _exit_after_grace(wake_read: socket.socket) -> None:
    with wake_read:
        received = wake_read.recv(1)
        while received and received[0] not in STOP_SIGNALS:
            received = wake_read.recv(1)
    if not received:
        return
    time.sleep(STOP_GRACE_S)
    _report_stop(received[0])
    os._exit(128 + received[0])


# ---- progress --------------------------------------------------------------------------------

@contextlib.contextmanager
def progress(total: int) -> Iterator[Callable[[int], None]]:
    """A callback counting scored texts: a tqdm bar on a terminal, plain lines every
    PROGRESS_EVERY_S seconds otherwise; silent for inputs of LONG_INPUT texts or fewer."""
    if total <= LONG_INPUT:
        yield lambda count: None
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, unit="text", file=sys.stderr, desc="scoring") as bar:
            yield bar.update
        return
    reporter = _ProgressLines(total)
    yield reporter.advance
    reporter.finish()


class _ProgressLines:
    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = self.last = time.monotonic()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self._line(now)

    def finish(self) -> None:
        self._line(time.monotonic())

    def _line(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        print(f"scoring: {self.done:,}/{self.total:,} texts ({100 * self.done / self.total:.0f}%), "
              f"{self.done / elapsed:.0f} texts/s", file=sys.stderr, flush=True)
