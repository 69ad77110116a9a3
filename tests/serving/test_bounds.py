"""`cybulde predict` as a real process against inputs meant to exhaust it, each run under `ulimit -v`:
endless or oversized standard input, a million rows, stop signals, bad output paths, an unreachable
tracking server. Each ends in one line, quickly, within bounded memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.bounded import Finished, cybulde_command, finish, run_bounded, start_bounded
from tests.helpers.ports import free_port

REFUSAL_VM_MIB = 1536  # virtual memory for a run refused before the model loads (it peaks near 300 MiB)
SCORING_VM_MIB = 4096  # for a run that loads torch and scores (it peaks near 2.4 GiB)
# A run that asks a tracking server loads MLflow's client, and its threads' stacks and malloc arenas
# count against a virtual-memory bound: these tests check time and the message, not memory.
CLIENT_VM_MIB = 4096
MILLION = 1_000_000


def one_error_line(stderr: str) -> str:
    assert stderr.startswith("cybulde predict: "), stderr[-2000:]
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr[-2000:]
    return stderr


@pytest.fixture(scope="module")
def baseline_rss_mib(tiny_models, tmp_path_factory) -> Callable[[str], float]:
    """Peak RSS of a run refused at once, on an empty input with the given extension: what every refusal
    of that kind costs anyway (the CSV, JSON lines and Parquet readers load pandas: about 100 MB more)."""
    folder, measured = tmp_path_factory.mktemp("baseline"), {}

    def measure(suffix: str = ".txt") -> float:
        if suffix not in measured:
            empty = folder / f"empty{suffix}"
            empty.write_bytes(b"")
            finished = run_bounded(cybulde_command("predict", "-m", str(tiny_models["softmax"]), str(empty)),
                                   REFUSAL_VM_MIB)
            assert finished.returncode == 1, finished.stderr
            measured[suffix] = finished.peak_rss_mib
        return measured[suffix]

    return measure


def test_endless_random_bytes_on_stdin_are_refused_at_once(tiny_models, baseline_rss_mib):
    with open("/dev/urandom", "rb") as endless:
        finished = run_bounded(cybulde_command("predict", "-m", str(tiny_models["softmax"])), REFUSAL_VM_MIB,
                               stdin=endless, timeout_s=60)
    assert finished.returncode == 1
    assert "standard input is not UTF-8 encoded text" in one_error_line(finished.stderr)
    assert finished.seconds < 15
    assert finished.peak_rss_mib < baseline_rss_mib() + 50


def test_an_endless_line_stops_at_the_byte_limit(tiny_models, baseline_rss_mib):
    with open("/dev/zero", "rb") as endless:  # NUL bytes are valid UTF-8: only the byte limit stops this
        finished = run_bounded(cybulde_command("predict", "-m", str(tiny_models["softmax"]), "--max-bytes",
                                               "20000000"), REFUSAL_VM_MIB, stdin=endless, timeout_s=60)
    assert finished.returncode == 1
    assert ("standard input is larger than the limit of 20,000,000 bytes (--max-bytes)"
            in one_error_line(finished.stderr))
    assert finished.seconds < 20
    assert finished.peak_rss_mib < baseline_rss_mib() + 150  # 20 MB read, held once as bytes and once as text


@pytest.mark.parametrize(("name", "header", "row"), [("in.txt", b"", b"hello\n"), ("in.csv", b"text\n", b"hello\n"),
                                                     ("in.jsonl", b"", b'{"text": "hello"}\n')])
def test_a_million_rows_are_refused_after_max_rows_plus_one(tmp_path, tiny_models, baseline_rss_mib, name, header,
                                                             row):
    source = tmp_path / name
    source.write_bytes(header + row * MILLION)
    finished = run_bounded(cybulde_command("predict", "-m", str(tiny_models["softmax"]), str(source)),
                           REFUSAL_VM_MIB, timeout_s=60)
    assert finished.returncode == 1
    assert "holds more than 100,000 texts, over the limit of 100,000 (--max-rows)" in one_error_line(finished.stderr)
    assert finished.peak_rss_mib < baseline_rss_mib(source.suffix) + 100


def test_a_million_row_parquet_file_is_refused_by_its_metadata(tmp_path, tiny_models, baseline_rss_mib):
    """Distinct 100-character texts: decoding the column would take a few hundred MB; the row count in
    the file's metadata refuses it first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [f"{index:>100}" for index in range(MILLION)]}), source)
    finished = run_bounded(cybulde_command("predict", "-m", str(tiny_models["softmax"]), str(source)),
                           REFUSAL_VM_MIB, timeout_s=60)
    assert finished.returncode == 1
    assert "holds 1,000,000 texts, over the limit of 100,000 (--max-rows)" in one_error_line(finished.stderr)
    assert finished.peak_rss_mib < baseline_rss_mib(".parquet") + 100


def test_reading_stops_at_max_rows_plus_one(tiny_models):
    """A million rows through a pipe: the writer finds the pipe closed long before it is done."""
    process, stdout, stderr = start_bounded(cybulde_command("predict", "-m", str(tiny_models["softmax"]),
                                                            "--max-rows", "1000"), REFUSAL_VM_MIB,
                                            stdin=subprocess.PIPE)
    started, written = time.monotonic(), 0
    try:
        for _ in range(MILLION // 1000):
            process.stdin.write(b"hello\n" * 1000)
            written += 1000
    except BrokenPipeError:
        pass
    finally:
        try:
            process.stdin.close()
        except BrokenPipeError:
            pass
    finished = finish(process, stdout, stderr, started, timeout_s=60)
    assert finished.returncode == 1
    assert "holds more than 1,000 texts" in one_error_line(finished.stderr)
    assert written < MILLION // 10  # the pipe holds 64 KiB: the rest was never read


def blocked_reading_stdin(pid: int, timeout_s: float = 60.0) -> None:
    """Wait until `pid` sits in read(0, ...) (x86-64 syscall 0; elsewhere, in a pipe read)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        syscall = Path(f"/proc/{pid}/syscall").read_text(errors="replace").split()
        wchan = Path(f"/proc/{pid}/wchan").read_text(errors="replace")
        if (os.uname().machine == "x86_64" and syscall[:2] == ["0", "0x0"]) or "pipe_read" in wchan:
            return
        time.sleep(0.05)
    raise AssertionError("predict never started reading its standard input")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_is_answered_within_a_second(tiny_models, signum, status):
    read_end, write_end = os.pipe()  # kept open: predict waits for more input
    try:
        process, stdout, stderr = start_bounded(cybulde_command("predict", "-m", str(tiny_models["softmax"])),
                                                REFUSAL_VM_MIB, stdin=read_end)
        os.close(read_end)
        os.write(write_end, b"hello\n" * 10)
        blocked_reading_stdin(process.pid)
        sent = time.monotonic()
        process.send_signal(signum)
        finished = finish(process, stdout, stderr, sent, timeout_s=10)
    finally:
        os.close(write_end)
    assert finished.seconds < 1.0
    assert finished.returncode == status
    assert f"stopped by {signal.Signals(signum).name}" in one_error_line(finished.stderr)


def test_a_stop_signal_while_scoring_is_answered_within_a_second(tmp_path, tiny_models):
    """100,000 texts one at a time: the signal arrives once predict reports scoring progress (after 10 s)."""
    source, output = tmp_path / "in.txt", tmp_path / "out.csv"
    source.write_text("".join(f"you are text number {index}\n" for index in range(100_000)))
    process, stdout, stderr = start_bounded(cybulde_command("predict", "-m", str(tiny_models["softmax"]), str(source),
                                                            "--output", str(output), "--batch-size", "1",
                                                            "--precision", "32-true"), SCORING_VM_MIB)
    deadline = time.monotonic() + 120
    while b"scoring: " not in (stderr.seek(0) or stderr.read()):
        assert process.poll() is None and time.monotonic() < deadline, "predict never reported scoring"
        time.sleep(0.1)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    finished = finish(process, stdout, stderr, sent, timeout_s=10)
    assert finished.seconds < 1.0
    assert finished.returncode == 130
    assert finished.stderr.splitlines()[-1] == "cybulde predict: stopped by SIGINT; no output written"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.txt"]  # no output, no temporary file


@pytest.fixture
def scored_input(tmp_path) -> Path:
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hello there"}\n')
    return source


def predict_to(source: Path, output: Path | str, *extra: str, model: str = "/nonexistent/model",
               limit_mib: int = REFUSAL_VM_MIB) -> Finished:
    """A bogus model: an output check must refuse before the model (or the input) is read."""
    return run_bounded(cybulde_command("predict", "-m", model, str(source), "--output", str(output), *extra),
                       limit_mib, timeout_s=120)


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, scored_input, tiny_models):
    output = tmp_path / "out.jsonl"
    output.write_text("keep me\n")
    refused = predict_to(scored_input, output)
    assert refused.returncode == 1
    assert f"{output} exists; pass --overwrite" in one_error_line(refused.stderr)
    assert output.read_text() == "keep me\n"
    replaced = predict_to(scored_input, output, "--overwrite", "--precision", "32-true",
                          model=str(tiny_models["softmax"]), limit_mib=SCORING_VM_MIB)
    assert replaced.returncode == 0, replaced.stderr
    assert '"text": "hello there"' in output.read_text()


def test_the_input_is_never_the_output(scored_input):
    finished = predict_to(scored_input, scored_input, "--overwrite")
    assert finished.returncode == 1
    assert "it is the input file" in one_error_line(finished.stderr)
    assert scored_input.read_text() == '{"text": "hello there"}\n'


def test_a_folder_as_output_is_refused_before_scoring(tmp_path, scored_input):
    folder = tmp_path / "out.jsonl"
    folder.mkdir()
    finished = predict_to(scored_input, folder)
    assert finished.returncode == 1
    assert "it is a folder" in one_error_line(finished.stderr)


def test_an_unwritable_place_is_refused_before_scoring(tmp_path, scored_input):
    if os.geteuid() == 0:
        folder = Path("/sys/kernel")  # read-only even for root
    else:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o555)
    finished = predict_to(scored_input, folder / "out.jsonl")
    assert finished.returncode == 1
    assert f"cannot write {folder / 'out.jsonl'}:" in one_error_line(finished.stderr)


def test_an_unreachable_tracking_server_fails_in_seconds(scored_input):
    started = time.monotonic()
    finished = run_bounded(cybulde_command("predict", "-m", "models:/cybulde-classifier/1", "--tracking-uri",
                                           f"http://127.0.0.1:{free_port()}", str(scored_input)),
                           CLIENT_VM_MIB, timeout_s=120)
    assert finished.returncode == 1
    assert "cannot reach the MLflow tracking server at http://127.0.0.1:" in one_error_line(finished.stderr)
    assert time.monotonic() - started < 20


def test_a_silent_tracking_server_fails_after_the_http_timeout(scored_input):
    """A server that accepts connections and never answers: one line after mlflow.http_timeout_s (20 s)."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        finished = run_bounded(cybulde_command("predict", "-m", "models:/cybulde-classifier/1", "--tracking-uri",
                                               f"http://127.0.0.1:{port}", str(scored_input)),
                               CLIENT_VM_MIB, timeout_s=120)
    assert finished.returncode == 1
    assert "no answer within 20 s" in one_error_line(finished.stderr)
    assert finished.seconds < 40

