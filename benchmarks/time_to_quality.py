"""Time to quality: the project's training against the Hugging Face Trainer, under one time budget.

For each seed, on the same fetched data (token ids made with the backbone's tokenizer), backbone and
global batch size:

  ours  the project's `train` (cybulde.training.train.train) under torchrun with the params file
        (default params.yaml) plus any `-S key=value` overrides, stopped by `train.max_time_s` =
        the budget; then the validate/test evaluation code (`evaluate_to_files`) on the exported model;
  hf    transformers.Trainer fine-tuning AutoModelForSequenceClassification (CLS + pooler + linear,
        all weights) with lr 5e-5, linear decay, no warmup, 2 epochs, group_by_length, bf16 where
        native (the same `auto` rule as ours), stopped by the same budget.

Both evaluate on validation after every epoch and at the stop, keep the best (by validation
macro-F1) and read the test split once with it. The budget counts the training loop's wall time,
in-loop validation included (Lightning's Timer; a callback here for the Trainer); `train s` and
`samples/s` count training steps only. Printed per seed and as mean +- std over the seeds, with the
CPU (or GPU) and whether it has native bf16.

    python benchmarks/time_to_quality.py --data-dir data/fetched --seeds 3 --budget-s 600
    python benchmarks/time_to_quality.py --data-dir data/fetched --seeds 3 -S train.epochs=2 -S train.lr=5e-5

`--max-rows N` keeps N rows of each split (seeded sample) for a quick check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import RESULT_PREFIX, hf_model, hf_rows, parse_results, split_rows  # noqa: E402

SYSTEMS = ("ours", "hf")
HF_RECIPE = {"learning_rate": 5e-5, "num_train_epochs": 2, "lr_scheduler_type": "linear", "warmup_steps": 0}
HF_EVAL_BATCH_SIZE = 64
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="a fetched dataset version (default: data/fetched, else "
                                                       "TweetEval offensive published into .cybulde/bench-registry)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="ours: the params file")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="ours: a params override, as `dvc exp run -S` (repeatable)")
    parser.add_argument("--budget-s", type=float, default=600.0, help="training-time budget per run, in seconds")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1, the same for both systems")
    parser.add_argument("--max-rows", type=int, default=0, help="keep at most this many rows of each split (0: all)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}")
    parser.add_argument("--threads", type=int, default=0, help="hf: intra-op threads (0: all cores)")
    parser.add_argument("--json", type=Path, help="also write every result as JSON here")
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--accelerator", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget_s <= 0 or args.seeds < 1 or args.max_rows < 0:
        parser.error("--budget-s must be > 0, --seeds >= 1 and --max-rows >= 0")
    unknown = set(args.systems.split(",")) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; expected a subset of {SYSTEMS}")
    return args


# -- data ---------------------------------------------------------------------------------------------
def resolve_data_dir(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir.resolve()
    fetched = REPO / "data" / "fetched"
    if (fetched / "manifest.json").is_file():
        return fetched
    from train_throughput import default_data_dir

    return default_data_dir()


def capped_copy(data_dir: Path, max_rows: int, out_dir: Path, seed: int = 0) -> Path:
    """A copy of a dataset version with at most `max_rows` rows per split (a seeded sample, row order
    kept) and a manifest that says so."""
    import shutil

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cybulde.registry.manifest import SPLITS, Manifest, hash_files, tokenizer_dir
    from cybulde.registry.splits import split_paths

    manifest = Manifest.load(data_dir)
    out_dir.mkdir(parents=True)
    shutil.copytree(tokenizer_dir(data_dir), out_dir / "tokenizer")
    splits = {}
    for split in SPLITS:
        table = pa.concat_tables([pq.read_table(path) for path in split_paths(data_dir, split, manifest)])
        if table.num_rows > max_rows:
            keep = np.sort(np.random.default_rng(seed).choice(table.num_rows, max_rows, replace=False))
            table = table.take(keep)
        pq.write_table(table, out_dir / f"{split}.parquet")
        labels = table.column("label").to_pylist()
        counts = {name: labels.count(index) for index, name in enumerate(manifest.label_names)}
        splits[split] = replace(manifest.splits[split], rows=table.num_rows, label_counts=counts)
    # One file per split: the single-file (format 1) layout, which every reader still accepts.
    replace(manifest, splits=splits, files=hash_files(out_dir), shards=None, format_version=1).write(out_dir)
    return out_dir


# -- ours -----------------------------------------------------------------------------------------------
def ours_config(args: argparse.Namespace, data_dir: Path, seed: int, project: Path) -> Any:
    """The params of one run of ours: the params file, the overrides, then this benchmark's settings."""
    from cybulde.config.loader import load_config

    settings = [f"data.fetched_dir={data_dir}", f"train.seed={seed}", f"train.max_time_s={args.budget_s}",
                f"mlflow.tracking_uri=sqlite:///{project / 'mlflow.db'}", "mlflow.run_id="]
    return load_config(args.params, [*args.overrides, *settings])


def write_params(cfg: Any, project: Path) -> None:
    from omegaconf import OmegaConf

    from cybulde.config.loader import to_dict

    project.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(to_dict(cfg)), project / "params.yaml")


def run_ours(args: argparse.Namespace, data_dir: Path, seed: int, scratch: Path) -> dict[str, Any]:
    from cybulde.config.topology import resolve_topology
    from cybulde.evaluation.evaluate import evaluate_to_files

    project = scratch / f"ours-seed{seed}"
    cfg = ours_config(args, data_dir, seed, project)
    if cfg.launch.nnodes != 1:
        raise SystemExit("time_to_quality runs ours on one node: set launch.nnodes=1")
    write_params(cfg, project)
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
               f"--nproc_per_node={resolve_topology(cfg).nproc_per_node}", "--rdzv_backend=c10d",
               "--rdzv_endpoint=127.0.0.1:0", str(Path(__file__).resolve()), "--worker", "ours",
               "--project", str(project)]
    result = single_result(run_worker(command, "ours"), "ours")
    metrics = {}
    for split in ("validation", "test"):  # the validate and test stages' code, on the exported best model
        metrics[split] = evaluate_to_files(cfg, split, project, project / "eval-scratch")
    return {**result, "val_macro_f1": metrics["validation"].metrics["macro_f1"],
            "test_macro_f1": metrics["test"].metrics["macro_f1"]}


def ours_worker(project: Path) -> None:
    """Under torchrun: the project's `train` on `project/params.yaml`; rank 0 reports."""
    from cybulde.config.loader import load_config
    from cybulde.config.topology import resolve_topology
    from cybulde.training.distributed import read_launch_env
    from cybulde.training.train import load_manifest, make_datamodule, train

    os.chdir(project)
    cfg = load_config(project / "params.yaml")
    result = train(cfg)
    if result.model_dir is None:
        return
    env, topology = read_launch_env(), resolve_topology(cfg)
    data_dir = Path(cfg.data.fetched_dir)
    batches = len(make_datamodule(cfg, topology, data_dir, load_manifest(data_dir), env).train_batch_sampler())
    planned = cfg.train.epochs * -(-batches // topology.accumulation)
    if cfg.train.max_steps > 0:
        planned = min(planned, cfg.train.max_steps)
    steps = int(result.metrics["global_steps"])
    emit({"system": "ours", "train_s": result.train_seconds, "samples_per_s": result.samples_per_s,
          "steps": steps, "stopped_early": steps < planned, "best_epoch": result.metrics["best_epoch"]})


# -- Hugging Face Trainer -------------------------------------------------------------------------------
def run_hf(args: argparse.Namespace, data_dir: Path, seed: int, scratch: Path, batch_size: int,
           accelerator: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "hf", "--data-dir", str(data_dir),
               "--seed", str(seed), "--budget-s", str(args.budget_s), "--batch-size", str(batch_size),
               "--threads", str(args.threads), "--accelerator", accelerator, "--project", str(scratch / f"hf-seed{seed}")]
    return single_result(run_worker(command, "hf"), "hf")


def hf_worker(args: argparse.Namespace) -> None:
    import copy

    import torch
    from transformers import DataCollatorWithPadding, PreTrainedTokenizerFast, Trainer, TrainingArguments

    from cybulde.hardware import BF16, resolve_precision
    from cybulde.registry.manifest import Manifest, tokenizer_dir

    torch.set_num_threads(args.threads or (os.cpu_count() or 1))
    manifest = Manifest.load(args.data_dir)
    label_names = list(manifest.label_names)
    rows = {split: split_rows(args.data_dir, split) for split in ("train", "validation", "test")}
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir(args.data_dir)))
    collator = DataCollatorWithPadding(tokenizer)
    model = hf_model("minilm", num_labels=len(label_names))
    precision = resolve_precision("auto", args.accelerator).precision
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")

    def validation_macro_f1(model: Any) -> float:
        return hf_evaluate(model, rows["validation"], label_names, collator, device, precision)["macro_f1"]

    callback = budget_and_selection(args.budget_s, len(rows["train"][1]), validation_macro_f1)
    training_args = TrainingArguments(
        output_dir=str(args.project), per_device_train_batch_size=args.batch_size, **HF_RECIPE, seed=args.seed,
        data_seed=args.seed, bf16=precision == BF16, use_cpu=args.accelerator != "gpu", report_to="none",
        save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=training_args, train_dataset=hf_rows(*rows["train"]), data_collator=collator,
                      processing_class=tokenizer, callbacks=[callback])
    trainer.train()
    best_f1, best_evaluation, state_dict = callback.best
    model.load_state_dict(copy.deepcopy(state_dict))
    test = hf_evaluate(model, rows["test"], label_names, collator, device, precision)  # read once
    emit({"system": "hf", "train_s": callback.train_s, "samples_per_s": callback.samples / callback.train_s,
          "steps": trainer.state.global_step, "stopped_early": callback.stopped_early, "best_epoch": best_evaluation,
          "val_macro_f1": best_f1, "test_macro_f1": test["macro_f1"]})


def budget_and_selection(budget_s: float, train_rows: int, validation_macro_f1: Any) -> Any:
    """A TrainerCallback that stops training once `budget_s` seconds have passed since it began (evaluation
    included), evaluates at every epoch end (a stop ends the epoch too) and keeps the best weights by
    `validation_macro_f1(model)`; it times the training steps without the evaluations."""
    from transformers import TrainerCallback

    class BudgetAndSelection(TrainerCallback):
        def __init__(self) -> None:
            self.start = self.last = 0.0
            self.train_s = self.samples = 0.0
            self.best: tuple[float, int, dict] | None = None  # (val macro-F1, evaluation number, weights)
            self.stopped_early = False
            self.evaluations = 0

        def on_train_begin(self, train_args, state, control, **kwargs):
            self.start = time.perf_counter()  # the budget's clock, like Lightning's Timer (on_train_start)

        def on_step_begin(self, train_args, state, control, **kwargs):
            if not self.last:  # the step clock starts with the first step, like ours (Throughput)
                self.last = time.perf_counter()

        def on_step_end(self, train_args, state, control, **kwargs):
            now = time.perf_counter()
            self.train_s += now - self.last
            self.last = now
            if now - self.start >= budget_s:
                self.stopped_early = state.global_step < state.max_steps
                control.should_training_stop = True

        def on_epoch_end(self, train_args, state, control, model=None, **kwargs):
            self.samples = state.epoch * train_rows
            macro_f1 = validation_macro_f1(model)
            self.evaluations += 1
            if self.best is None or macro_f1 > self.best[0]:
                weights = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
                self.best = (macro_f1, self.evaluations, weights)
            self.last = time.perf_counter()  # evaluation time is not training time

    return BudgetAndSelection()


def hf_evaluate(model: Any, split: tuple[list, list], label_names: list[str], collator: Any, device: Any,
                precision: str) -> dict[str, Any]:
    """The project's metrics (`compute_metrics`) of the HF model's argmax predictions on one split."""
    import torch

    from cybulde.evaluation.metrics import compute_metrics
    from cybulde.hardware import autocast

    ids, labels = split
    was_training = model.training
    model.eval()
    logits = []
    with torch.inference_mode():
        for start in range(0, len(ids), HF_EVAL_BATCH_SIZE):
            batch = collator(hf_rows(ids[start:start + HF_EVAL_BATCH_SIZE], labels[start:start + HF_EVAL_BATCH_SIZE]))
            with autocast(precision, device):
                output = model(input_ids=batch["input_ids"].to(device),
                               attention_mask=batch["attention_mask"].to(device))
            logits.append(output.logits.float().cpu())
    model.train(was_training)
    all_logits, target = torch.cat(logits), torch.tensor(labels)
    loss = float(torch.nn.functional.cross_entropy(all_logits, target))
    probabilities = all_logits.softmax(dim=-1)
    return compute_metrics(probabilities, probabilities.argmax(dim=-1), target, loss, label_names)


# -- driver ---------------------------------------------------------------------------------------------
def emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_worker(command: list[str], system: str) -> list[dict]:
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    results = parse_results(completed.stdout)
    if completed.returncode != 0 or not results:
        raise SystemExit(f"{system} failed (exit {completed.returncode}):\n{completed.stdout[-2000:]}\n"
                         f"{completed.stderr[-4000:]}")
    return results


def single_result(results: list[dict], system: str) -> dict:
    if len(results) != 1:
        raise SystemExit(f"{system}: expected one result, got {len(results)}")
    return results[0]


def summarize(results: list[dict], systems: list[str]) -> list[dict]:
    """Mean and (with 2+ seeds) sample standard deviation of each figure, per system."""
    rows = []
    for system in systems:
        runs = [result for result in results if result["system"] == system]
        row: dict[str, Any] = {"system": system, "seed": "mean", "runs": len(runs),
                               "stopped_early": sum(bool(run["stopped_early"]) for run in runs)}
        for key in ("train_s", "samples_per_s", "val_macro_f1", "test_macro_f1"):
            values = [float(run[key]) for run in runs]
            row[key] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    import torch

    from cybulde.hardware import cpu_has_native_bf16, cpu_model_name, cuda_has_bf16

    if torch.cuda.is_available():
        return {"device": torch.cuda.get_device_name(0), "native_bf16": cuda_has_bf16(), "accelerator": "gpu"}
    return {"device": cpu_model_name(), "native_bf16": cpu_has_native_bf16(), "accelerator": "cpu"}


def print_table(results: list[dict], summary: list[dict], header: dict[str, Any]) -> None:
    print(f"\n{header['device']} (native bf16: {'yes' if header['native_bf16'] else 'no'}); budget "
          f"{header['budget_s']:g} s per training; seeds {header['seeds']}; batch {header['batch_size']}; "
          f"data {header['data_dir']} ({header['train_rows']} train rows)")
    title = f"{'system':<7}{'seed':>6}{'train s':>10}{'samples/s':>11}{'steps':>7}{'stopped':>9}{'val F1':>9}{'test F1':>9}"
    print(title + "\n" + "-" * len(title))
    for result in results:
        print(f"{result['system']:<7}{result['seed']:>6}{result['train_s']:>10.1f}{result['samples_per_s']:>11.1f}"
              f"{result['steps']:>7}{'yes' if result['stopped_early'] else 'no':>9}{result['val_macro_f1']:>9.4f}"
              f"{result['test_macro_f1']:>9.4f}")
    for row in summary:
        print(f"{row['system']:<7}{'mean':>6}{row['train_s']:>10.1f}{row['samples_per_s']:>11.1f}{'':>7}"
              f"{row['stopped_early']:>7}/{row['runs']}{row['val_macro_f1']:>9.4f}{row['test_macro_f1']:>9.4f}"
              f"   (test F1 std {row['test_macro_f1_std']:.4f}, val F1 std {row['val_macro_f1_std']:.4f})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker == "ours":
        ours_worker(args.project)
        return 0
    if args.worker == "hf":
        hf_worker(args)
        return 0
    systems = [system for system in SYSTEMS if system in args.systems.split(",")]
    data_dir = resolve_data_dir(args.data_dir)
    header = {**machine(), "budget_s": args.budget_s, "seeds": list(range(args.seeds)), "overrides": args.overrides}
    results = []
    with tempfile.TemporaryDirectory(prefix="cybulde-time-to-quality-") as scratch_dir:
        scratch = Path(scratch_dir)
        if args.max_rows:
            data_dir = capped_copy(data_dir, args.max_rows, scratch / "data")
        batch_size = ours_config(args, data_dir, 0, scratch).train.global_batch_size
        header.update(batch_size=batch_size, data_dir=str(args.data_dir or data_dir),
                      train_rows=len(split_rows(data_dir)[1]))
        for seed in header["seeds"]:
            for system in systems:
                if system == "ours":
                    result = run_ours(args, data_dir, seed, scratch)
                else:
                    result = run_hf(args, data_dir, seed, scratch, batch_size, header["accelerator"])
                results.append({**result, "seed": seed})
                print(f"{system} seed {seed}: {result['train_s']:.1f} s, val macro-F1 {result['val_macro_f1']:.4f}, "
                      f"test macro-F1 {result['test_macro_f1']:.4f}", flush=True)
    summary = summarize(results, systems)
    print_table(results, summary, header)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": header, "runs": results, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
