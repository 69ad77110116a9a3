"""Serving load and scoring throughput of an exported model.

1. Load: the model is logged (from code, as the `test` stage does) into a scratch SQLite store and
   served by `mlflow models serve --env-manager local` on loopback; `--clients` concurrent clients
   post requests of `--rows-per-request` texts for `--seconds`; prints requests/s, texts/s, the
   p50/p95/p99 latency and the number of errors (any answer but HTTP 200, or no answer).
2. Throughput: the first `--texts` raw texts of TweetEval offensive's train split are scored by
   `cybulde predict` (a real process, default precision auto) and by Hugging Face
   `pipeline("text-classification", batch_size=64)` on the same backbone, in fp32 and in bf16.
   The pipeline runs the installed all-MiniLM-L6-v2 with a fresh two-label head (a throughput
   reference: its scores mean nothing), truncating to the model's max_length as predict does.
   Prints texts/s of each (predict with and without its start-up) and the ratios, with the CPU.

    python benchmarks/serve_load.py --model model --clients 16 --seconds 30 --texts 4000

`--skip-load` / `--skip-throughput` run one part only. The texts file is read as given (one raw
text per line), so the comparison sees the same entities, tabs and lengths as a user's input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

REQUEST_TIMEOUT_S = 60.0
SERVER_STARTUP_S = 240.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="an exported model folder (model/ of the pipeline)")
    parser.add_argument("--texts-file", type=Path, default=None,
                        help="raw texts, one per line (default: TweetEval offensive train_text.txt under "
                             "$CYBULDE_DATASETS_DIR)")
    parser.add_argument("--texts", type=int, default=4000, help="texts scored by predict and the HF pipeline")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients of the served model")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the clients send requests")
    parser.add_argument("--rows-per-request", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="`mlflow models serve --workers`")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--hf-precisions", default="fp32,bf16", help="HF pipeline runs: fp32, bf16 or both")
    return parser.parse_args(argv)


def read_texts(args: argparse.Namespace) -> list[str]:
    path = args.texts_file
    if path is None:
        from cybulde.preparation.publish import default_datasets_dir

        path = default_datasets_dir() / "tweeteval_offensive" / "train_text.txt"
    texts = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    if not texts:
        raise SystemExit(f"{path} holds no texts")
    return texts


def cpu_line() -> str:
    from cybulde.hardware import NATIVE_BF16_CPU_FLAGS, cpu_flags, cpu_model_name

    flags = sorted((cpu_flags() or set()) & {*NATIVE_BF16_CPU_FLAGS, "avx512f", "avx2"})
    return f"{cpu_model_name()}, {os.cpu_count()} cores, flags: {' '.join(flags) or 'none of avx2/avx512'}"


# -- 1. load -----------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    requests: int = 0
    texts: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    seconds: float = 0.0
    first_error: str = ""


def log_for_serving(model_dir: Path, scratch: Path, batch_size: int) -> tuple[str, str]:
    """(tracking URI, model URI) of the model logged into a scratch SQLite store."""
    from mlflow import MlflowClient

    from cybulde.publishing import log_pyfunc_model
    from cybulde.serving.pyfunc import serving_config

    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("serve-load", artifact_location=(scratch / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    threshold = recorded_threshold(model_dir)
    logged = log_pyfunc_model(run_id, model_dir, tracking_uri=uri,
                              config=serving_config(threshold=threshold, batch_size=batch_size))
    return uri, logged.model_uri


def recorded_threshold(model_dir: Path) -> float | None:
    """The threshold `validate` chose, when the model sits in a project with metrics/validation.json."""
    metrics = model_dir.resolve().parent / "metrics" / "validation.json"
    if metrics.is_file():
        value = json.loads(metrics.read_text()).get("threshold")
        return None if value is None else float(value)
    return None


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(tracking_uri: str, model_uri: str, workers: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_STARTUP_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"mlflow models serve exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return server, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    stop_server(server)
    raise SystemExit(f"the model server did not answer within {SERVER_STARTUP_S:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (uvicorn runs in a child), SIGKILL if it hangs."""
    import signal

    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def drive(url: str, texts: list[str], clients: int, seconds: float, rows_per_request: int) -> LoadResult:
    """`clients` threads posting requests back to back until `seconds` have passed."""
    result = LoadResult()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at: list[float] = []

    def client(number: int) -> None:
        position = number * rows_per_request
        start.wait()
        while time.monotonic() < stop_at[0]:
            batch = [texts[(position + k) % len(texts)] for k in range(rows_per_request)]
            position += clients * rows_per_request
            body = json.dumps({"inputs": batch}).encode()
            request = urllib.request.Request(f"{url}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
            began = time.monotonic()
            error = ""
            try:
                with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                    answer = json.loads(response.read())
                    if len(answer.get("predictions", [])) != len(batch):
                        error = f"{len(answer.get('predictions', []))} predictions for {len(batch)} texts"
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as failure:
                error = f"{type(failure).__name__}: {failure}"
            elapsed = time.monotonic() - began
            with lock:
                result.requests += 1
                result.latencies_s.append(elapsed)
                if error:
                    result.errors += 1
                    result.first_error = result.first_error or error
                else:
                    result.texts += len(batch)

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(clients)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    stop_at.append(began + seconds)
    start.wait()
    for thread in threads:
        thread.join(timeout=seconds + REQUEST_TIMEOUT_S + 10)
    result.seconds = time.monotonic() - began
    return result


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def load_report(result: LoadResult, args: argparse.Namespace) -> dict:
    return {"clients": args.clients, "seconds": round(result.seconds, 1), "rows_per_request": args.rows_per_request,
            "workers": args.workers, "requests": result.requests, "errors": result.errors,
            "requests_per_s": round(result.requests / result.seconds, 2) if result.seconds else 0.0,
            "texts_per_s": round(result.texts / result.seconds, 1) if result.seconds else 0.0,
            "latency_ms": {name: round(1000 * percentile(result.latencies_s, share), 1)
                           for name, share in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))},
            "first_error": result.first_error or None}


def run_load(args: argparse.Namespace, texts: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="cybulde-serve-load-") as scratch:
        tracking_uri, model_uri = log_for_serving(args.model, Path(scratch), args.batch_size)
        server, url = start_server(tracking_uri, model_uri, args.workers, Path(scratch) / "serve.log")
        try:
            result = drive(url, texts, args.clients, args.seconds, args.rows_per_request)
        finally:
            stop_server(server)
    return load_report(result, args)


# -- 2. throughput -----------------------------------------------------------------------------------
def time_predict(model_dir: Path, texts: list[str], batch_size: int) -> dict:
    """`cybulde predict` as a user runs it (a process: texts/s with its start-up), and its scorer in
    this process once loaded (texts/s of the scoring alone)."""
    from cybulde.serving.scorer import TextScorer

    with tempfile.TemporaryDirectory(prefix="cybulde-bench-predict-") as scratch:
        source = Path(scratch) / "texts.jsonl"
        source.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
        cybulde = Path(sys.executable).parent / "cybulde"
        began = time.monotonic()
        finished = subprocess.run([str(cybulde), "predict", "-m", str(model_dir), str(source), "-o",
                                   str(Path(scratch) / "out.parquet"), "--batch-size", str(batch_size)],
                                  capture_output=True, text=True)
        seconds = time.monotonic() - began
    if finished.returncode != 0:
        raise SystemExit(f"cybulde predict failed:\n{finished.stderr[-3000:]}")
    scorer = TextScorer.from_dir(model_dir, batch_size=batch_size)
    scorer.score(texts[:batch_size])  # warm-up
    began = time.monotonic()
    scorer.score(texts)
    scoring = time.monotonic() - began
    return {"precision": scorer.precision, "seconds_with_startup": round(seconds, 1),
            "texts_per_s_with_startup": round(len(texts) / seconds, 1),
            "texts_per_s_scoring": round(len(texts) / scoring, 1)}


def time_hf_pipeline(model_dir: Path, texts: list[str], batch_size: int, dtype: str) -> dict:
    """HF `pipeline("text-classification")` on the installed MiniLM backbone (fresh head), `dtype` fp32|bf16."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from cybulde.models.backbone import minilm_dir
    from cybulde.models.export import read_model_config

    max_length = int(read_model_config(model_dir)["max_length"])
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2, dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu", batch_size=batch_size)
    classify(texts[:batch_size], truncation=True, max_length=max_length)  # warm-up
    began = time.monotonic()
    answers = classify(texts, truncation=True, max_length=max_length)
    seconds = time.monotonic() - began
    assert len(answers) == len(texts)
    return {"seconds": round(seconds, 1), "texts_per_s": round(len(texts) / seconds, 1)}


def run_throughput(args: argparse.Namespace, texts: list[str]) -> dict:
    texts = texts[: args.texts]
    report: dict = {"texts": len(texts), "batch_size": args.batch_size, "cpu": cpu_line()}
    for dtype in [name for name in args.hf_precisions.split(",") if name]:
        report[f"hf_pipeline_{dtype}"] = time_hf_pipeline(args.model, texts, args.batch_size, dtype)
    report["cybulde_predict"] = time_predict(args.model, texts, args.batch_size)
    predict = report["cybulde_predict"]
    for dtype in [name for name in args.hf_precisions.split(",") if name]:
        reference = report[f"hf_pipeline_{dtype}"]["texts_per_s"]
        report[f"ratio_vs_hf_{dtype}"] = {
            "with_startup": round(predict["texts_per_s_with_startup"] / reference, 2),
            "scoring": round(predict["texts_per_s_scoring"] / reference, 2)}
    return report


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model} is not an exported model folder (no config.json)")
    texts = read_texts(args)
    from cybulde.hardware import resolve_precision

    report: dict = {"model": str(args.model), "precision": resolve_precision("auto", "cpu").reason}
    if not args.skip_load:
        report["load"] = run_load(args, texts)
    if not args.skip_throughput:
        report["throughput"] = run_throughput(args, texts)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
