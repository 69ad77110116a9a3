"""Data preparation at scale: publish, fetch and one epoch's data loading of N synthetic rows.

    python benchmarks/publish_scale.py --rows 1000000 [--engine local|dask|both] [--workers 2]

1. Generates a CSV of N rows (`text`, `label`; 1M by default, 10M on request): tweets whose word
   counts follow TweetEval offensive's train split (its quantiles are below), a third of them
   "offensive". Seeded, generated in batches (no downloads). Not timed.
2. `cybulde publish --source csv` of it, with each engine asked for (`dask`: a LocalCluster of
   `--workers` worker processes started here; its address is given as `--scheduler`).
3. `fetch`: download and verify the local engine's version into a fresh folder.
4. One epoch's data loading: 2 rank processes started together (world size 2, as `train` runs),
   each builds a `TextDataModule` and iterates its whole train dataloader (sampling, length
   grouping, padding); the first converts the shards to the shared token cache.

Each step runs in its own process(es). Printed per step: rows/s (input rows over wall time), CPU
seconds (with dask, the client's only: the cluster's workers are not its children) and peak memory. "peak tree RSS" is the largest sum of RSS over the step's processes (a publish and its
worker processes; with dask also the cluster's scheduler and workers, idle memory included),
sampled every 20 ms (so a lower bound; never below the largest process); "largest process" is the
exact peak RSS of the largest one of them (wait4's rusage). For the epoch, per rank:
RSS growth = peak RSS during the epoch minus RSS just before the DataModule was built (torch and
lightning already imported), both peaks sampled every 20 ms by the rank itself; mapped token-cache
pages count in RSS although the ranks share them (one copy in the page cache), so the growth of
anonymous memory (what the rank allocates itself, never shared) is printed beside it. The CPU model and whether it
runs bf16 natively are printed with the results.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULT_PREFIX = "SCALE_RESULT "
SAMPLE_EVERY_S = 0.02
# Word counts of TweetEval offensive's train tweets (11,916): quantiles 0, 5, 10, 25, 50, 75, 90, 95, 99, 100 %.
WORD_COUNT_QUANTILES = ((0.0, 2), (0.05, 5), (0.10, 6), (0.25, 10), (0.50, 18), (0.75, 32), (0.90, 46),
                        (0.95, 51), (0.99, 59), (1.0, 103))
OFFENSIVE_SHARE = 0.33
COMMON_WORDS = ("the a to and is you i of it in that for this on my be are not with your just so have me do "
                "all what at was like but they can we get if he will one no up about out she people when "
                "know love time day good go now new more think why see really want how still would today "
                "never need because lol thanks great right well back amp who even only much man life "
                "president gun control liberals conservatives antifa maga vote news trump god america").split()
INSULTS = "idiot stupid loser trash dumb moron pathetic disgusting clown liar".split()
GENERATE_BATCH_ROWS = 50_000


# ---- synthetic data ----------------------------------------------------------------------------

def vocabulary(rng: Any, pseudo_words: int = 3000) -> tuple[list[str], Any]:
    """(words, their probabilities): common words (Zipf-weighted), @user / URL / #hashtags, and rarer
    pseudo-words that split into several word pieces; mixed so that the MiniLM tokenizer gives about
    as many tokens per tweet as on TweetEval offensive (mean ~33, [CLS]/[SEP] included)."""
    import numpy as np

    letters = list("abcdefghijklmnopqrstuvwxyz")
    pseudo = ["".join(rng.choice(letters, size=int(rng.integers(3, 9)))) for _ in range(pseudo_words)]
    common = 1 / np.arange(1, len(COMMON_WORDS) + 1)
    groups = [(COMMON_WORDS, common / common.sum(), 0.80), (["@user"], np.ones(1), 0.08),
              (["URL"], np.ones(1), 0.02), ([f"#{word}" for word in pseudo[:300]], np.full(300, 1 / 300), 0.02),
              (pseudo[300:], np.full(len(pseudo) - 300, 1 / (len(pseudo) - 300)), 0.08)]
    words = [word for group, _, _ in groups for word in group]
    probabilities = np.concatenate([weights * share for _, weights, share in groups])
    return words, probabilities / probabilities.sum()


def word_counts(rng: Any, rows: int) -> Any:
    import numpy as np

    probabilities, counts = zip(*WORD_COUNT_QUANTILES, strict=True)
    return np.rint(np.interp(rng.random(rows), probabilities, counts)).astype(int)


def generate_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """`rows` synthetic labeled tweets (see the module docstring), written batch by batch."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab, weights = vocabulary(rng)
    words = np.asarray(vocab, dtype=object)
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["text", "label"])
        for start in range(0, rows, GENERATE_BATCH_ROWS):
            count = min(GENERATE_BATCH_ROWS, rows - start)
            lengths = word_counts(rng, count)
            offensive = rng.random(count) < OFFENSIVE_SHARE
            drawn = words[rng.choice(len(words), size=int(lengths.sum()), p=weights)]
            ends = np.cumsum(lengths)
            for row, (end, length) in enumerate(zip(ends, lengths, strict=True)):
                tweet = list(drawn[end - length:end])
                if offensive[row]:
                    tweet.insert(int(rng.integers(0, len(tweet) + 1)), INSULTS[int(rng.integers(len(INSULTS)))])
                writer.writerow([" ".join(tweet), "offensive" if offensive[row] else "not-offensive"])
    return path


# ---- measuring processes -----------------------------------------------------------------------

def tree_rss_bytes(pids: list[int]) -> int:
    """Sum of RSS over these processes and all their descendants."""
    import psutil

    total, seen = 0, set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                if process.pid not in seen:
                    seen.add(process.pid)
                    total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def largest_hwm_bytes(pids: list[int]) -> int:
    """The greatest VmHWM (peak RSS) of these processes and their descendants, as now."""
    import psutil

    largest = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                largest = max(largest, _vm_hwm_bytes(process.pid))
        except psutil.Error:
            continue
    return largest


def _vm_hwm_bytes(pid: int | str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakSampler:
    """Samples the summed RSS of process trees every `SAMPLE_EVERY_S` seconds while running, and
    the largest VmHWM among them."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak_tree, self.peak_single = list(pids), 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, pid: int) -> None:
        self.pids.append(pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_tree = max(self.peak_tree, tree_rss_bytes(self.pids))
            self.peak_single = max(self.peak_single, largest_hwm_bytes(self.pids))
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(command: list[str], extra_pids: list[int] | None = None) -> dict:
    """Run `command`; its wall time, its CPU time (user + system, its own and its waited-for
    descendants'), the sampled peak of the summed RSS of its process tree (plus `extra_pids`' trees)
    and, exactly, the largest peak RSS of any one process of its tree (wait4's rusage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        with PeakSampler([process.pid, *(extra_pids or [])]) as sampler:
            _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command[:5])} ... failed ({process.returncode}):\n{err.read()[-4000:]}")
        largest = max(usage.ru_maxrss * 1024, sampler.peak_single)  # ru_maxrss is in KiB
        return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "peak_tree_rss_mb": max(sampler.peak_tree, largest) / 2**20,
                "largest_process_mb": largest / 2**20, "stdout": out.read()}


# ---- the steps ---------------------------------------------------------------------------------

def publish_command(raw: Path, registry: Path, engine: str, workers: int | None, scheduler: str | None,
                    rows_per_shard: int | None) -> list[str]:
    command = [sys.executable, "-m", "cybulde.cli", "publish", "--source", "csv", "--raw-dir", str(raw),
               "--text-column", "text", "--label-column", "label", "--dataset", "synthetic", "--version", "v1",
               "--registry", str(registry), "--engine", engine]
    if engine == "dask":
        command += ["--scheduler", scheduler]
    elif workers:
        command += ["--workers", str(workers)]
    if rows_per_shard:
        command += ["--rows-per-shard", str(rows_per_shard)]
    return command


def start_cluster(workers: int, log: Path) -> tuple[subprocess.Popen, str]:
    with open(log, "w") as stream:
        process = subprocess.Popen([sys.executable, __file__, "--step", "cluster", "--workers", str(workers)],
                                   stdout=subprocess.PIPE, stderr=stream, text=True)
    line = process.stdout.readline().strip()
    if not line.startswith("tcp://"):
        process.kill()
        raise SystemExit(f"the dask cluster did not start (said {line!r})")
    return process, line


def stop_cluster(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve_cluster(workers: int) -> None:
    """--step cluster: a LocalCluster of `workers` single-threaded worker processes until SIGTERM."""
    import signal

    from distributed import LocalCluster

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave the `with`: the cluster shuts down

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        print(cluster.scheduler_address, flush=True)
        while True:
            time.sleep(3600)


def fetch_step(registry: Path, destination: Path) -> None:
    """--step fetch: download and verify the version into `destination`."""
    from cybulde.config.schema import Config
    from cybulde.registry.fetch import fetch

    cfg = Config()
    cfg.data.registry, cfg.data.dataset, cfg.data.version = str(registry), "synthetic", "v1"
    cfg.data.manifest_sha256 = ""  # a synthetic version, not the one the schema pins
    cfg.data.fetched_dir = str(destination)
    fetch(cfg)


def memory_now() -> dict[str, int]:
    """This process's RSS, PSS, and anonymous (heap: private to it, never file pages) bytes."""
    values = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Anonymous"):
            values[key] = int(rest.split()[0]) * 1024
    return {"rss": values["Rss"], "pss": values["Pss"], "anon": values["Anonymous"]}


def epoch_step(data_dir: Path, cache_dir: Path, rank: int, world_size: int, batch_size: int) -> None:
    """--step epoch: one rank's epoch of data loading; prints its measurements as one JSON line."""
    import lightning  # noqa: F401 - imported before the baseline, as in `train`
    import torch

    from cybulde.loading.datamodule import TextDataModule

    torch.set_num_threads(1)
    baseline = memory_now()
    peak = dict(baseline)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = memory_now()
            peak.update({key: max(peak[key], now[key]) for key in ("rss", "anon")})
            stop.wait(SAMPLE_EVERY_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    module = TextDataModule(data_dir, batch_size=batch_size, seed=1234, group_by_length=True,
                            world_size=world_size, rank=rank, cache_dir=cache_dir)
    loader = module.train_dataloader()
    ready = time.perf_counter()
    rows = batches = tokens = 0
    for batch in loader:
        rows += len(batch["labels"])
        tokens += int(batch["attention_mask"].sum())
        batches += 1
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    end = memory_now()
    print(RESULT_PREFIX + json.dumps({
        "rank": rank, "rows": rows, "batches": batches, "tokens": tokens, "seconds": seconds,
        "setup_seconds": ready - start, "rss_growth_mb": (peak["rss"] - baseline["rss"]) / 2**20,
        "anon_growth_mb": (peak["anon"] - baseline["anon"]) / 2**20, "pss_end_mb": end["pss"] / 2**20,
        "rss_end_mb": end["rss"] / 2**20, "split_rows": len(module.split("train"))}), flush=True)


def parse_results(output: str) -> list[dict]:
    results = []
    for line in output.splitlines():
        if line.startswith(RESULT_PREFIX):
            results.append(json.loads(line[len(RESULT_PREFIX):]))
    return results


def epoch(data_dir: Path, cache_dir: Path, world_size: int, batch_size: int) -> dict:
    """All ranks started together, as torchrun would; their measurements and the wall time."""
    start = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, __file__, "--step", "epoch", "--data", str(data_dir), "--cache",
                                   str(cache_dir), "--rank", str(rank), "--world-size", str(world_size),
                                   "--batch-size", str(batch_size)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for rank in range(world_size)]
    outputs = [process.communicate() for process in processes]
    seconds = time.perf_counter() - start
    for process, (_, err) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            raise SystemExit(f"an epoch rank failed ({process.returncode}):\n{err[-4000:]}")
    ranks = sorted((result for out, _ in outputs for result in parse_results(out)), key=lambda r: r["rank"])
    return {"seconds": seconds, "ranks": ranks}


# ---- the benchmark -----------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict:
    from cybulde.hardware import cpu_has_native_bf16, cpu_model_name
    from cybulde.registry.manifest import Manifest

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cybulde-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    raw = workdir / "raw.csv"
    started = time.perf_counter()
    generate_csv(raw, args.rows, seed=args.seed)
    report: dict[str, Any] = {
        "rows": args.rows, "csv_mb": raw.stat().st_size / 2**20, "generate_seconds": time.perf_counter() - started,
        "cpu": cpu_model_name(), "native_bf16": cpu_has_native_bf16(), "cores": os.cpu_count(),
        "workers": args.workers, "publish": {}}
    engines = ("local", "dask") if args.engine == "both" else (args.engine,)
    for engine in engines:
        registry = workdir / f"registry-{engine}"
        cluster, address = (start_cluster(args.workers or os.cpu_count() or 1, workdir / "dask-cluster.log")
                             if engine == "dask" else (None, None))
        try:
            measured = run_measured(publish_command(raw, registry, engine, args.workers, address, args.rows_per_shard),
                                    extra_pids=[cluster.pid] if cluster else None)
        finally:
            if cluster is not None:
                stop_cluster(cluster)
        manifest = Manifest.load(registry / "synthetic" / "v1")
        measured.pop("stdout")
        report["publish"][engine] = {**measured, "rows_per_s": args.rows / measured["seconds"],
                                     "manifest_sha256": manifest.sha256,
                                     "rows_published": sum(s.rows for s in manifest.splits.values()),
                                     "shards": sum(len(manifest.split_shards(split)) for split in manifest.splits)}
    if len(engines) == 2:
        report["engines_agree"] = len({result["manifest_sha256"] for result in report["publish"].values()}) == 1
    fetched = workdir / "fetched"
    measured = run_measured([sys.executable, __file__, "--step", "fetch", "--registry", str(workdir /
                             f"registry-{engines[0]}"), "--data", str(fetched)])
    measured.pop("stdout")
    report["fetch"] = {**measured, "rows_per_s": args.rows / measured["seconds"],
                       "mb": sum(p.stat().st_size for p in fetched.rglob("*") if p.is_file()) / 2**20}
    report["epoch"] = epoch(fetched, workdir / "token-cache", 2, args.batch_size)
    train_rows = Manifest.load(fetched).splits["train"].rows
    report["epoch"]["train_rows"] = train_rows
    # data loading only (DataModule setup, cache conversion, the epoch), not the ranks' imports
    report["epoch"]["loading_seconds"] = max(rank["seconds"] for rank in report["epoch"]["ranks"])
    report["epoch"]["rows_per_s"] = train_rows / report["epoch"]["loading_seconds"]
    if not args.keep and args.workdir is None:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return report


def print_report(report: dict) -> None:
    print(f"CPU: {report['cpu']} ({report['cores']} cores; native bf16: {'yes' if report['native_bf16'] else 'no'})")
    print(f"input: {report['rows']:,} rows, {report['csv_mb']:.0f} MB of CSV")
    print(f"{'step':<18} {'rows/s':>10} {'seconds':>9} {'CPU s':>8} {'peak tree RSS MB':>17} "
          f"{'largest process MB':>19}")
    for name, result in [*((f"publish {engine}", result) for engine, result in report["publish"].items()),
                         ("fetch", report["fetch"])]:
        print(f"{name:<18} {result['rows_per_s']:>10,.0f} {result['seconds']:>9.1f} {result['cpu_seconds']:>8.1f} "
              f"{result['peak_tree_rss_mb']:>17.0f} {result['largest_process_mb']:>19.0f}")
    epoch = report["epoch"]
    print(f"{'epoch (2 ranks)':<18} {epoch['rows_per_s']:>10,.0f} {epoch['loading_seconds']:>9.1f}   "
          f"({epoch['train_rows']:,} train rows; {epoch['seconds']:.1f} s with the ranks' imports)")
    for rank in epoch["ranks"]:
        print(f"  rank {rank['rank']}: {rank['rows']:,} rows in {rank['batches']:,} batches, {rank['seconds']:.1f} s "
              f"(setup {rank['setup_seconds']:.1f} s); RSS growth {rank['rss_growth_mb']:.0f} MB "
              f"(anonymous {rank['anon_growth_mb']:.0f} MB), PSS at end {rank['pss_end_mb']:.0f} MB")
    if "engines_agree" in report:
        print(f"local and dask engines published identical manifests: {report['engines_agree']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows (10000000 for the 10M run)")
    parser.add_argument("--engine", choices=("local", "dask", "both"), default="local")
    parser.add_argument("--workers", type=int, help="publish worker processes (dask: cluster workers); "
                        "default one per core")
    parser.add_argument("--rows-per-shard", type=int, help="publish --rows-per-shard (default: publish's)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per rank and batch in the epoch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic rows")
    parser.add_argument("--workdir", help="keep everything in this folder (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--step", choices=("cluster", "fetch", "epoch"), help=argparse.SUPPRESS)
    parser.add_argument("--registry", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--world-size", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows must be >= 1, got {args.rows}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step == "cluster":
        serve_cluster(args.workers)
    elif args.step == "fetch":
        fetch_step(args.registry, args.data)
    elif args.step == "epoch":
        epoch_step(args.data, args.cache, args.rank, args.world_size, args.batch_size)
    else:
        report = run(args)
        print_report(report)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
