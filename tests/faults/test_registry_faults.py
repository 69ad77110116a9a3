"""The registry under concurrent publishers and flaky storage, on a local disk and on emulated GCS.

- Concurrent publishers are real processes (`race_publish.py`), held at the moment before the
  manifest is created until all of them got there, so every one of them has passed the "version
  exists" check and uploaded its files. On GCS they run against gcp-storage-emulator patched to
  honour `ifGenerationMatch=0` as GCS does (`gcs_emulator_with_preconditions.py`; the emulator
  itself ignores the precondition, so against it the protocol could not be tested at all).
- Flaky storage is `flaky_fs.FlakyFileSystem` around the real filesystem (the local disk, or gcsfs
  talking to the emulator): every call fails twice then succeeds, or always fails.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import cybulde.registry.store as registry_module
from cybulde.preparation.publish import publish
from cybulde.registry.errors import RegistryUnreachableError
from cybulde.registry.fetch import fetch
from cybulde.registry.manifest import Manifest
from cybulde.registry.storage import RetryPolicy, open_location, with_retries
from cybulde.registry.store import Registry
from tests.faults.flaky_fs import FlakyFileSystem, connection_reset, flaky_location, http_503
from tests.helpers.gcs import make_gcs_bucket
from tests.helpers.ports import free_port, wait_for_port
from tests.helpers.raw_data import fetch_config, write_tweeteval
from tests.helpers.snapshots import snapshot

STAGE = Path(__file__).resolve().parents[2] / "stages" / "fetch.py"

HERE = Path(__file__).parent
FAST_RETRY = RetryPolicy(attempts=4, first_delay_s=0.001, max_delay_s=0.004)


# ---- retries --------------------------------------------------------------------------------------

def test_backoff_is_bounded_and_only_transient_errors_are_retried() -> None:
    waits: list[float] = []
    attempts = []

    def always_reset() -> None:
        attempts.append(1)
        raise connection_reset()

    with pytest.raises(ConnectionResetError):
        with_retries(always_reset, RetryPolicy(attempts=5, first_delay_s=0.5, max_delay_s=2.0), sleep=waits.append)
    assert len(attempts) == 5 and waits == [0.5, 1.0, 2.0, 2.0]

    for permanent in (FileNotFoundError("gone"), PermissionError("no"), _http(403), _http(404), ValueError("bad")):
        attempts.clear()

        def fail(error: Exception = permanent) -> None:
            attempts.append(1)
            raise error

        with pytest.raises(type(permanent)):
            with_retries(fail, RetryPolicy(), sleep=waits.append)
        assert len(attempts) == 1, permanent
    attempts.clear()
    now = [0.0]

    def slow_reset() -> None:  # each try takes 25 s, as a gcsfs call that retried internally would
        attempts.append(1)
        now[0] += 25.0
        raise connection_reset()

    with pytest.raises(ConnectionResetError):
        with_retries(slow_reset, RetryPolicy(attempts=10, deadline_s=60.0), sleep=waits.append, clock=lambda: now[0])
    assert len(attempts) == 3  # tries start at 0, 25.5 and 51 s; a fourth would start at 77 s, past 60 s

    for transient in (_http(503), _http(429), _http(500), TimeoutError("slow"), connection_reset()):
        calls = iter([transient])

        def flaky(calls: Iterator[Exception] = calls) -> str:
            for error in calls:
                raise error
            return "done"

        assert with_retries(flaky, RetryPolicy(), sleep=waits.append) == "done"


def _http(code: int) -> Exception:
    from gcsfs.retry import HttpError

    return HttpError({"code": code, "message": f"status {code}"})


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """`flaky(failures, error)`: every registry opened from now on wraps its filesystem that way."""
    made: list[FlakyFileSystem] = []
    monkeypatch.setattr(registry_module, "DEFAULT_RETRY", FAST_RETRY)

    def install(failures: int | None, error=http_503, **options) -> list[FlakyFileSystem]:  # noqa: ANN001
        def opened(url: str):  # noqa: ANN202
            location = open_location(url)
            wrapped = flaky_location(location, failures, error)
            wrapped.fs.lose_replies = options.get("lose_replies", ())
            made.append(wrapped.fs)
            return wrapped

        monkeypatch.setattr(registry_module, "open_location", opened)
        return made

    return install


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return write_tweeteval(tmp_path / "raw" / "tweeteval_offensive")


def check_publish_and_fetch_survive_two_failures(registry: str, raw: Path, tmp_path: Path, flaky,  # noqa: ANN001
                                                 error, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    filesystems = flaky(2, error)
    manifest = publish("tweeteval_offensive", raw, registry, "v1", max_length=16, workers=1, echo=None)
    destination = tmp_path / "fetched"
    fetch(fetch_config(registry, destination))
    assert Manifest.load(destination).sha256 == manifest.sha256
    failed = sum((fs.failed for fs in filesystems), start=Counter())
    for method in ("info", "put_file", "pipe_file", "cat_file", "find", "get_file"):
        assert failed[method] >= 2, (method, failed)  # every kind of call was hit, and retried
    clean = tmp_path / "clean"  # the same version, fetched without faults: identical bytes
    monkeypatch.setattr(registry_module, "open_location", open_location)
    fetch(fetch_config(registry, clean))
    assert snapshot(clean) == snapshot(destination)


def test_local_registry_retries_transient_errors(raw: Path, tmp_path: Path, flaky,  # noqa: ANN001
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    check_publish_and_fetch_survive_two_failures(str(tmp_path / "registry"), raw, tmp_path, flaky, connection_reset,
                                                 monkeypatch)


@pytest.mark.integration
def test_gcs_registry_retries_transient_errors(gcs_bucket: str, raw: Path, tmp_path: Path,  # noqa: ANN001
                                               flaky, monkeypatch: pytest.MonkeyPatch) -> None:
    check_publish_and_fetch_survive_two_failures(f"{gcs_bucket}/registry", raw, tmp_path, flaky, http_503,
                                                 monkeypatch)


def test_a_lost_reply_to_the_manifest_create_still_publishes(raw: Path, tmp_path: Path, flaky) -> None:  # noqa: ANN001
    """The manifest was created but the reply lost: the retry finds our own bytes there."""
    flaky(1, connection_reset, lose_replies=("pipe_file",))
    registry = str(tmp_path / "registry")
    manifest = publish("tweeteval_offensive", raw, registry, "v1", max_length=16, workers=1, echo=None)
    assert Registry(registry).manifest("tweeteval_offensive", "v1").sha256 == manifest.sha256


def check_always_failing_storage_is_one_line(registry: str, raw: Path, tmp_path: Path, flaky,  # noqa: ANN001
                                             capsys: pytest.CaptureFixture, error, cause: str) -> None:  # noqa: ANN001
    from cybulde.cli import main

    flaky(None, error)
    assert main(["publish", "--source", "tweeteval_offensive", "--raw-dir", str(raw), "--registry", registry,
                 "--version", "v1", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("cybulde publish: error: cannot check ") and f"in registry {registry}: {cause}" in err
    assert "(after 4 tries)" in err

    (tmp_path / "params.yaml").write_text(f"data:\n  registry: {registry}\n  dataset: tweeteval_offensive\n"
                                          "  version: v1\n  fetched_dir: data/fetched\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        spec = importlib.util.spec_from_file_location("fetch_stage", STAGE)
        stage = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(stage)
        assert stage.main([]) == 1
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fetch: error: cannot check ") and cause in err
    assert not (tmp_path / "data" / "fetched").exists()


def test_local_registry_that_always_fails_is_one_line(raw: Path, tmp_path: Path, flaky,  # noqa: ANN001
                                                      capsys: pytest.CaptureFixture) -> None:
    check_always_failing_storage_is_one_line(str(tmp_path / "registry"), raw, tmp_path, flaky, capsys,
                                             connection_reset, "ConnectionResetError: [Errno 104] Connection reset")


@pytest.mark.integration
def test_gcs_registry_that_always_fails_is_one_line(gcs_bucket: str, raw: Path, tmp_path: Path,  # noqa: ANN001
                                                    flaky, capsys: pytest.CaptureFixture) -> None:
    check_always_failing_storage_is_one_line(f"{gcs_bucket}/registry", raw, tmp_path, flaky, capsys, http_503,
                                             "HttpError: Service Unavailable, 503")


def test_permanent_errors_are_not_retried(tmp_path: Path, flaky) -> None:  # noqa: ANN001
    filesystems = flaky(None, lambda: PermissionError(13, "Permission denied"))
    with pytest.raises(RegistryUnreachableError, match=r"cannot check .*PermissionError.*Permission denied$"):
        Registry(str(tmp_path)).exists("ds", "v1")
    assert filesystems[0].calls["info"] == 1


# ---- concurrent publishers ------------------------------------------------------------------------

def race(registry: str, raw: Path, tmp_path: Path, max_lengths: list[int], env: dict[str, str]) -> list[dict]:
    """Start one real publisher per entry of `max_lengths` (each gives different content), all
    racing for tweeteval_offensive/v1; return their exit codes and output."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    processes = []
    for index, max_length in enumerate(max_lengths):
        command = [sys.executable, str(HERE / "race_publish.py"), str(barrier), f"p{index}", str(len(max_lengths)),
                   "--", "publish", "--source", "tweeteval_offensive", "--raw-dir", str(raw), "--registry",
                   registry, "--version", "v1", "--max-length", str(max_length), "--workers", "1"]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env=env, start_new_session=True))
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            out, err = process.communicate()
        results.append({"code": process.returncode, "out": out, "err": err})
    assert len(list(barrier.glob("*.ready"))) == len(max_lengths)  # every one passed the check and uploaded
    return results


def check_one_winner(registry: str, results: list[dict], max_lengths: list[int], tmp_path: Path) -> None:
    codes = [result["code"] for result in results]
    assert sorted(codes) == [0] + [1] * (len(codes) - 1), results
    winner = codes.index(0)
    winner_sha = next(line.split()[-1] for line in results[winner]["out"].splitlines() if "manifest sha256" in line)
    for index, result in enumerate(results):
        if index != winner:
            err = result["err"].strip().splitlines()
            assert len(err) == 1 and "tweeteval_offensive/v1 already exists" in err[0], result["err"]
            assert f"another publisher created it while this one ran (manifest sha256 {winner_sha})" in err[0]
    destination = tmp_path / "fetched"
    fetch(fetch_config(registry, destination))  # verifies every file against the manifest
    fetched = Manifest.load(destination)
    assert fetched.sha256 == winner_sha and fetched.max_length == max_lengths[winner]
    listing = Registry(registry).fs.ls(Registry(registry).version_path("tweeteval_offensive", "v1"), detail=False)
    contents = sorted(path.rstrip("/").rsplit("/", 1)[-1] for path in listing)
    assert contents == sorted(["manifest.json", f"content-{winner_sha}"])  # the losers cleaned up their own


@pytest.mark.slow
def test_concurrent_local_publishers_one_winner(raw: Path, tmp_path: Path) -> None:
    registry = str(tmp_path / "registry")
    max_lengths = [16, 20, 24]
    results = race(registry, raw, tmp_path, max_lengths, dict(os.environ))
    check_one_winner(registry, results, max_lengths, tmp_path)


@pytest.mark.slow
def test_concurrent_local_publishers_of_identical_content(raw: Path, tmp_path: Path) -> None:
    """Identical content shares one content folder: the loser must not delete it."""
    registry = str(tmp_path / "registry")
    results = race(registry, raw, tmp_path, [16, 16], dict(os.environ))
    check_one_winner(registry, results, [16, 16], tmp_path)


@pytest.fixture
def precondition_emulator() -> Iterator[str]:
    """An emulator of its own, with GCS's create-only precondition (see the module docstring)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "gcs_emulator_with_preconditions.py"), "start",
                                "--host=127.0.0.1", f"--port={port}", "--in-memory"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, process, 30.0, "gcp-storage-emulator")
        yield url
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


@pytest.mark.integration
def test_the_patched_emulator_refuses_a_second_create(precondition_emulator: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from cybulde.registry.storage import create_exclusive

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", precondition_emulator)
    bucket = make_gcs_bucket(precondition_emulator, "preconditions")
    fs = open_location(f"{bucket}/x").fs
    assert create_exclusive(fs, "preconditions/x/manifest.json", b"first") is True
    assert create_exclusive(fs, "preconditions/x/manifest.json", b"second") is False
    assert fs.cat_file("preconditions/x/manifest.json") == b"first"


@pytest.mark.slow
@pytest.mark.integration
def test_concurrent_gcs_publishers_one_winner(precondition_emulator: str, raw: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", precondition_emulator)
    registry = f"{make_gcs_bucket(precondition_emulator, 'race')}/registry"
    max_lengths = [16, 20]
    results = race(registry, raw, tmp_path, max_lengths, dict(os.environ))
    check_one_winner(registry, results, max_lengths, tmp_path)
