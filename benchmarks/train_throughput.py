"""Training throughput, side by side on the same data, backbone and batch size.

Modes (each runs in its own process so peak RSS is per mode; DDP reports it per rank):
  ours-1proc   our LightningModule + TextDataModule (length-grouped, dynamic padding), 1 process, the
               defaults of the train config
  ours-float32-states  the defaults but float32 hidden states (train.hidden_states=float32)
  ours-packed  packed dropout masks alone (train.dropout_masks=packed, train.embedding_updates=dense,
               train.hidden_states=float32)
  ours-lazy    lazy embedding updates alone
  ours-bf16-states  bf16 hidden states alone
  ours-dense-torch  none of the three options (the train config's defaults before them)
  ours-ddp2    the same as ours-1proc under torchrun, 2 ranks (gloo), threads split between them
  hf-default   transformers.Trainer, dynamic padding, random order
  hf-grouped   transformers.Trainer with train_sampling_strategy="group_by_length"
  ceiling-fp32 / ceiling-bf16   a bare forward+backward+AdamW step on a fixed batch (rows x mean length)

    python benchmarks/train_throughput.py --data-dir data/fetched --steps 50 --precision bf16-mixed

Without --data-dir, TweetEval offensive is published once (pretrained MiniLM tokenizer) into
.cybulde/bench-registry and fetched into .cybulde/bench-data. Samples/s and tokens/s (non-padding tokens) exclude `--warmup-steps`.
For the HF modes tokens/s is estimated from the split's mean row length (their batches are not visible).

MFU (model FLOPs utilisation): 6 x the classifier's matmul parameters x non-padding tokens/s (see
benchmarks/gpu_report.py), over the peak of the same threads: the best rate of a large square matmul
(`--peak-size`, bf16 or fp32 as `--precision`) measured in its own process, unless `--peak-tflops`
gives one. A measured matmul rate, not a data-sheet figure: what these cores reach on the best-shaped
matmul, so the column says how far the training step is from it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling gpu_report.py: one MFU formula
from gpu_report import matmul_params, mfu  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Our single-process modes: the train config's defaults, and options set explicitly. Each option mode
# names every option, so that it measures the same thing whatever the defaults are.
OURS_OPTIONS = {
    "ours-1proc": {},
    "ours-float32-states": {"dropout_masks": "packed", "embedding_updates": "lazy", "hidden_states": "float32"},
    "ours-packed": {"dropout_masks": "packed", "embedding_updates": "dense", "hidden_states": "float32"},
    "ours-lazy": {"dropout_masks": "torch", "embedding_updates": "lazy", "hidden_states": "float32"},
    "ours-bf16-states": {"dropout_masks": "torch", "embedding_updates": "dense", "hidden_states": "bf16"},
    "ours-dense-torch": {"dropout_masks": "torch", "embedding_updates": "dense", "hidden_states": "float32"},
}


def set_train_options(train_cfg: Any, options: dict[str, str]) -> None:
    """Set train config options by name from their values (`{"dropout_masks": "torch"}`), each as its
    schema enum."""
    for option, value in options.items():
        setattr(train_cfg, option, type(getattr(train_cfg, option))(value))


MODES = ("ceiling-fp32", "ceiling-bf16", "hf-default", "hf-grouped", *OURS_OPTIONS, "ours-ddp2")
PEAK = "matmul-peak"
RESULT_PREFIX = "BENCH_RESULT "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="a fetched/published dataset version directory")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size (rows per optimizer step)")
    parser.add_argument("--steps", type=int, default=50, help="timed optimizer steps per mode")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores to use in total")
    parser.add_argument("--precision", default="bf16-mixed", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"],
                        help="gpu: one CUDA device per process (ours-ddp2 needs two)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--freeze-embeddings", action="store_true",
                        help="our modes: train.freeze_embeddings=true (token-embedding table fixed)")
    parser.add_argument("--nan-fill", action="store_true",
                        help="our modes: keep torch's deterministic-mode NaN fill of new tensors (the train stage "
                             "turns it off; this measures what it costs)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {MODES}")
    parser.add_argument("--peak-size", type=int, default=4096, help="side of the square matmul that measures the peak")
    parser.add_argument("--peak-tflops", type=float, help="the peak to divide by (default: measured here)")
    parser.add_argument("--worker", choices=[*MODES, PEAK], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- data --------------------------------------------------------------------------------------------
def default_data_dir() -> Path:
    from cybulde.config.paths import project_root
    from cybulde.preparation.publish import default_datasets_dir, ensure_published
    from cybulde.registry.store import Registry

    registry = project_root() / ".cybulde" / "bench-registry"
    manifest = ensure_published("tweeteval_offensive", default_datasets_dir() / "tweeteval_offensive", str(registry),
                                "bench", tokenizer="pretrained")
    copy = project_root() / ".cybulde" / "bench-data" / manifest.sha256[:16]  # a fetched copy: files beside manifest
    if not (copy / "manifest.json").is_file():
        staging = copy.with_name(f"{copy.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        Registry(str(registry)).download("tweeteval_offensive", "bench", staging)
        staging.rename(copy)
    return copy


def split_rows(data_dir: Path, split: str = "train") -> tuple[list[list[int]], list[int]]:
    """The token ids and labels of one split of a fetched/published version."""
    from cybulde.registry.splits import read_split_columns

    table = read_split_columns(data_dir, split, columns=("input_ids", "label"))
    return table["input_ids"], table["label"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(mode: str, samples: int, tokens: float, seconds: float, **extra) -> None:
    result = {"mode": mode, "samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds,
              "peak_rss_mb": peak_rss_mb(), "rank": int(os.environ.get("RANK", 0)), **extra}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# -- ceiling -------------------------------------------------------------------------------------------
def run_ceiling(args: argparse.Namespace, bf16: bool) -> None:
    import torch

    from cybulde.hardware import BF16, FP32, autocast
    from cybulde.training.module import fused_if_supported

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    ids, _ = split_rows(args.data_dir)
    length = round(sum(map(len, ids)) / len(ids))
    model = classifier(args).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, **fused_if_supported())
    input_ids = torch.randint(1000, 2000, (args.batch_size, length), device=device)
    mask = torch.ones_like(input_ids)
    labels = torch.randint(0, 2, (args.batch_size,), device=device)

    def step() -> None:
        with autocast(BF16 if bf16 else FP32, device):
            logits = model(input_ids, mask)
        model.head.loss(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def synchronize() -> None:  # CUDA runs asynchronously: time finished work only
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup_steps):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize()
    seconds = time.perf_counter() - start
    report(f"ceiling-{'bf16' if bf16 else 'fp32'}", args.steps * args.batch_size,
           args.steps * args.batch_size * length, seconds, rows_x_tokens=f"{args.batch_size}x{length}")


def classifier(args: argparse.Namespace):
    from cybulde.config.schema import ModelConfig
    from cybulde.models.classifier import build_classifier
    from cybulde.registry.manifest import Manifest, tokenizer_dir

    manifest = Manifest.load(args.data_dir).to_dict()
    return build_classifier(ModelConfig(backbone=args.backbone), manifest, tokenizer_dir(args.data_dir))


# -- Hugging Face Trainer ------------------------------------------------------------------------------
def run_hf(args: argparse.Namespace, grouped: bool) -> None:
    import torch
    from transformers import (
        DataCollatorWithPadding,
        PreTrainedTokenizerFast,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from cybulde.registry.manifest import tokenizer_dir

    torch.set_num_threads(args.threads)
    ids, labels = split_rows(args.data_dir)
    mean_length = sum(map(len, ids)) / len(ids)
    dataset = hf_rows(ids, labels)
    model = hf_model(args.backbone, num_labels=max(labels) + 1)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir(args.data_dir)))
    timer = _StepTimer(args.warmup_steps)

    class TimerCallback(TrainerCallback):
        def on_step_end(self, *_, **__):
            timer.tick()

    training_args = TrainingArguments(
        output_dir=str(Path(".cybulde") / "bench-hf"), per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup_steps + args.steps, learning_rate=5e-5, use_cpu=args.accelerator == "cpu",
        bf16=args.precision == "bf16-mixed", report_to="none", save_strategy="no", logging_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0, seed=1234,
        train_sampling_strategy="group_by_length" if grouped else "random")
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                      callbacks=[TimerCallback()])
    trainer.train()
    samples = args.steps * args.batch_size
    report("hf-grouped" if grouped else "hf-default", samples, samples * mean_length, timer.seconds,
           tokens_estimated=True)


def hf_rows(ids: list[list[int]], labels: list[int]) -> list[dict]:
    """Rows as the HF Trainer's data collator takes them."""
    return [{"input_ids": row, "labels": label} for row, label in zip(ids, labels, strict=True)]


def hf_model(backbone: str, num_labels: int):
    """`AutoModelForSequenceClassification` on the same backbone (CLS + pooler + linear), offline."""
    from transformers import AutoModelForSequenceClassification

    from cybulde.models.backbone import minilm_dir

    source = str(minilm_dir()) if backbone == "minilm" else backbone
    return AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels, local_files_only=True)


class _StepTimer:
    """Wall time of the steps after the first `warmup` ones."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.steps = 0
        self.start: float | None = None
        self.seconds = 0.0
        self.samples = 0
        self.tokens = 0

    def tick(self, samples: int = 0, tokens: int = 0) -> None:
        self.steps += 1
        now = time.perf_counter()
        if self.steps == self.warmup:
            self.start = now
        elif self.start is not None:
            self.seconds = now - self.start
            self.samples += samples
            self.tokens += tokens


# -- ours -----------------------------------------------------------------------------------------------
def run_ours(args: argparse.Namespace) -> None:
    import lightning.pytorch as pl

    from cybulde.config.schema import Config
    from cybulde.config.topology import resolve_topology
    from cybulde.registry.manifest import Manifest
    from cybulde.training.determinism import seed_everything
    from cybulde.training.distributed import configure_threads, read_launch_env
    from cybulde.training.train import _strategy, build_module, make_datamodule

    env = read_launch_env()
    configure_threads(max(1, args.threads // env.local_world_size))
    cfg = Config()
    cfg.model.backbone = args.backbone
    cfg.launch.nproc_per_node = str(env.local_world_size)
    cfg.train.global_batch_size, cfg.train.batch_size = args.batch_size, 0  # the global batch split over ranks
    cfg.train.precision = args.precision
    cfg.train.freeze_embeddings = args.freeze_embeddings
    set_train_options(cfg.train, OURS_OPTIONS.get(args.worker, {}))
    seed_everything(cfg.train.seed)  # and deterministic kernels, as the train stage
    if args.nan_fill:
        import torch

        torch.utils.deterministic.fill_uninitialized_memory = True
    manifest = Manifest.load(args.data_dir)
    module = build_module(cfg, manifest, args.data_dir)
    datamodule = make_datamodule(cfg, resolve_topology(cfg), args.data_dir, manifest, env)
    timer = _StepTimer(args.warmup_steps)

    class TimerCallback(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            timer.tick(int(batch["labels"].shape[0]), int(batch["attention_mask"].sum()))

    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=env.local_world_size, num_nodes=1,
        strategy=_strategy(args.accelerator, env.world_size),
        precision=args.precision, max_steps=args.warmup_steps + args.steps, limit_val_batches=0,
        use_distributed_sampler=False, deterministic=True, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[TimerCallback()])
    trainer.fit(module, datamodule=datamodule)
    # Per-rank counts times the world size: every rank takes equal batches of the same global step.
    report(args.worker, timer.samples * env.world_size,
           timer.tokens * env.world_size, timer.seconds, threads_per_rank=max(1, args.threads // env.local_world_size))


# -- the peak MFU divides by ------------------------------------------------------------------------------
def run_matmul_peak(args: argparse.Namespace, repeats: int = 10) -> None:
    """The best of `repeats` timings of one square matmul in the benchmark's precision, in TFLOP/s."""
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    dtype = torch.bfloat16 if args.precision == "bf16-mixed" else torch.float32
    size = args.peak_size
    left, right = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up (packing, thread pool)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(left, right)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    print(RESULT_PREFIX + json.dumps({"mode": PEAK, "tflops": 2 * size**3 / best / 1e12, "size": size,
                                      "dtype": str(dtype).removeprefix("torch."), "rank": 0}), flush=True)


# -- driver ---------------------------------------------------------------------------------------------
def run_worker(args: argparse.Namespace) -> None:
    runners = {"ceiling-fp32": lambda: run_ceiling(args, False), "ceiling-bf16": lambda: run_ceiling(args, True),
               "hf-default": lambda: run_hf(args, False), "hf-grouped": lambda: run_hf(args, True),
               **{mode: lambda: run_ours(args) for mode in OURS_OPTIONS},
               "ours-ddp2": lambda: run_ours(args), PEAK: lambda: run_matmul_peak(args)}
    runners[args.worker]()


def launch(mode: str, args: argparse.Namespace) -> list[dict]:
    common = ["--data-dir", str(args.data_dir), "--backbone", args.backbone, "--batch-size", str(args.batch_size),
              "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps), "--threads", str(args.threads),
              "--precision", args.precision, "--accelerator", args.accelerator, "--worker", mode,
              "--peak-size", str(args.peak_size),
              *(["--freeze-embeddings"] if args.freeze_embeddings else []),
              *(["--nan-fill"] if args.nan_fill else [])]
    script = str(Path(__file__).resolve())
    if mode == "ours-ddp2":
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
                   "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:0", script, *common]
    else:
        command = [sys.executable, script, *common]
    completed = subprocess.run(command, capture_output=True, text=True)
    results = parse_results(completed.stdout)
    if completed.returncode != 0 or not results:
        print(f"{mode} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}", file=sys.stderr)
    return results


def parse_results(output: str) -> list[dict]:
    """Every `BENCH_RESULT {...}` in a worker's output; the ranks of a DDP run share one stdout, so
    their lines can run into each other."""
    decoder, results, position = json.JSONDecoder(), [], output.find(RESULT_PREFIX)
    while position >= 0:
        result, end = decoder.raw_decode(output, position + len(RESULT_PREFIX))
        results.append(result)
        position = output.find(RESULT_PREFIX, end)
    return results


def merge_ranks(results: list[dict]) -> dict:
    first = min(results, key=lambda result: result["rank"])
    return {**first, "peak_rss_mb": [round(result["peak_rss_mb"]) for result in sorted(results, key=lambda r: r["rank"])]}


def with_mfu(rows: dict[str, dict], params: int, peak_tflops: float) -> dict[str, dict]:
    """Each row with `tflops` (6 x matmul parameters x tokens/s) and `mfu` (that over the peak)."""
    shares = {mode: mfu(row["tokens_per_s"], params, peak_tflops) for mode, row in rows.items()}
    return {mode: {**row, "tflops": shares[mode] * peak_tflops, "mfu": shares[mode]} for mode, row in rows.items()}


def mfu_share(row: dict) -> str:
    return f"{100 * row['mfu']:.1f}%" if "mfu" in row else "n/a"


def print_table(rows: dict[str, dict], args: argparse.Namespace) -> None:
    hf_default = rows.get("hf-default", {}).get("samples_per_s")
    hf_grouped = rows.get("hf-grouped", {}).get("samples_per_s")
    ceiling = rows.get("ceiling-bf16" if args.precision == "bf16-mixed" else "ceiling-fp32", {}).get("samples_per_s")
    print(f"\nbackbone={args.backbone} batch={args.batch_size} precision={args.precision} accelerator={args.accelerator} "
          f"threads={args.threads} "
          f"steps={args.steps} freeze_embeddings={args.freeze_embeddings} nan_fill={args.nan_fill} data={args.data_dir}")
    header = (f"{'mode':<18}{'samples/s':>10}{'tokens/s':>10}{'peak RSS MB':>16}{'x HF def':>10}{'x HF grp':>10}"
              f"{'of ceil':>9}{'MFU':>7}")
    print(header + "\n" + "-" * len(header))
    for mode in MODES:
        if mode not in rows:
            continue
        row = rows[mode]
        rate = row["samples_per_s"]

        def ratio(base, rate=rate):
            return f"{rate / base:.2f}" if base else "n/a"

        print(f"{mode:<18}{rate:>10.1f}{row['tokens_per_s']:>10.0f}{str(row['peak_rss_mb']):>16}"
              f"{ratio(hf_default):>10}{ratio(hf_grouped):>10}{ratio(ceiling):>9}{mfu_share(row):>7}")
    print("ceiling = bare forward+backward+AdamW on one fixed batch at the mean row length "
          f"({'bf16 autocast' if args.precision == 'bf16-mixed' else 'fp32'}); HF tokens/s estimated from mean length")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    args.data_dir = (args.data_dir or default_data_dir()).resolve()
    rows = {}
    for mode in args.modes.split(","):
        results = launch(mode.strip(), args)
        if results:
            rows[mode.strip()] = merge_ranks(results)
            print(f"{mode}: {rows[mode.strip()]['samples_per_s']:.1f} samples/s", flush=True)
    peak = measured_peak(args)
    if peak is not None:
        params = matmul_params(classifier(args))
        rows = with_mfu(rows, params, peak["tflops"])
        print(f"peak: {peak['tflops']:.2f} TFLOP/s ({peak.get('dtype', 'given')} matmul {peak.get('size', '')}, "
              f"{args.threads} threads); {params / 1e6:.1f}M matmul parameters")
    print_table(rows, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {key: str(value) for key, value in vars(args).items()},
                                         "peak": peak, "rows": rows}, indent=2) + "\n")
    return 0


def measured_peak(args: argparse.Namespace) -> dict | None:
    """`--peak-tflops`, else the matmul peak measured in a worker of its own (None if it failed)."""
    if args.peak_tflops:
        return {"tflops": args.peak_tflops}
    results = launch(PEAK, args)
    return results[0] if results else None


if __name__ == "__main__":
    sys.exit(main())
