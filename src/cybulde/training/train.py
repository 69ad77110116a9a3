"""The `train` stage: fit the classifier under torchrun DDP and export the best checkpoint.

Every rank builds the same model and data module; only global rank 0 writes outputs (`model/`,
`metrics/train.json`, the Lightning checkpoint) and talks to MLflow.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.errors import CybuldeError

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from cybulde.config.schema import Config
    from cybulde.training.launch import LaunchEnv

log = logging.getLogger("cybulde.training")

MODEL_DIR = "model"
METRICS_FILE = "metrics/train.json"
# Lightning's checkpoints: scratch space outside the DVC outs, only the best one is kept.
CHECKPOINT_DIR = ".cybulde/checkpoints/train"
BEST_CHECKPOINT = "best"


class TrainingError(CybuldeError, RuntimeError):
    """Training ran but produced no model that can be exported."""


@dataclass
class TrainResult:
    rank: int
    model_dir: Path | None  # None on ranks other than 0
    metrics: dict[str, Any] = field(default_factory=dict)  # what metrics/train.json holds
    samples_per_s: float | None = None  # all ranks together, validation excluded
    tokens_per_s: float | None = None
    run_id: str | None = None


def train(cfg: Config) -> TrainResult:
    """Train with `cfg`; on rank 0 export the best checkpoint to `model/` and write metrics/train.json."""
    from cybulde.config.paths import fetched_path, project_root
    from cybulde.models.backbone import set_offline
    from cybulde.training.determinism import seed_everything
    from cybulde.training.launch import check_world_size, configure_threads, read_launch_env, threads_per_rank

    set_offline()
    env = read_launch_env()
    check_world_size(cfg, env)
    configure_threads(threads_per_rank(cfg, env))
    seed_everything(cfg.train.seed)

    if env.is_rank_zero:
        warn_if_slow_precision(cfg)
    root = project_root()
    data_dir = fetched_path(cfg)
    manifest = load_manifest(data_dir)
    module = build_module(cfg, manifest, data_dir)  # raises on a tokenizer mismatch, before any training
    datamodule = make_datamodule(cfg, data_dir, env)

    run = start_tracking(cfg) if env.is_rank_zero else None
    with run.stage("train") if run is not None else nullcontext():
        trainer, throughput, history = build_trainer(cfg, env, root, logger=_lightning_logger(run))
        trainer.fit(module, datamodule=datamodule)
        result = TrainResult(rank=env.rank, model_dir=None, samples_per_s=throughput.global_samples_per_s,
                             tokens_per_s=throughput.global_tokens_per_s,
                             run_id=getattr(run, "run_id", None))
        if trainer.is_global_zero:
            _export(cfg, trainer, module, manifest, data_dir, root, history, result)
            if run is not None:
                run.mark_model(result.model_dir)
                run.log_metrics({"train/samples_per_s": result.samples_per_s or 0.0,
                                 "train/tokens_per_s": result.tokens_per_s or 0.0},
                                step=trainer.global_step)
    return result


def warn_if_slow_precision(cfg: Config) -> None:
    from cybulde.hardware import BF16, cpu_has_native_bf16

    if cfg.launch.accelerator.value == "cpu" and cfg.train.precision == BF16 and not cpu_has_native_bf16():
        log.warning("train.precision=bf16-mixed on a CPU without AVX512-BF16/AMX: bf16 matmuls are emulated "
                    "and much slower than fp32 here; set train.precision=auto or 32-true on this machine")


def start_tracking(cfg: Config) -> Any:
    """The MLflow run of this training (rank 0 only): `cybulde.tracking.run.PipelineRun`."""
    from cybulde.tracking.run import PipelineRun

    return PipelineRun.start_training(cfg)


def _lightning_logger(run: Any) -> Any:
    return run.lightning_logger() if run is not None else False


def load_manifest(data_dir: Path) -> Any:
    from cybulde.data.manifest import Manifest

    return Manifest.load(data_dir)


def build_module(cfg: Config, manifest: Any, data_dir: Path) -> pl.LightningModule:
    from cybulde.models.classifier import build_classifier
    from cybulde.training.module import ClassifierModule, freeze_input_embeddings, inverse_frequency_weights

    manifest_dict = manifest.to_dict()
    model = build_classifier(cfg.model, manifest_dict, data_dir / "tokenizer")
    if cfg.train.freeze_embeddings:
        freeze_input_embeddings(model)
    class_weights = None
    if cfg.train.class_weights:
        counts = manifest_dict["splits"]["train"]["label_counts"]
        class_weights = inverse_frequency_weights([counts.get(name, 0) for name in model.label_names])
    return ClassifierModule(model, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                            warmup_ratio=cfg.train.warmup_ratio, class_weights=class_weights,
                            grad_clip=cfg.train.grad_clip, layer_lr_decay=cfg.train.layer_lr_decay)


def make_datamodule(cfg: Config, data_dir: Path, env: LaunchEnv) -> pl.LightningDataModule:
    from cybulde.data.datamodule import TextDataModule

    return TextDataModule(data_dir, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                          group_by_length=cfg.train.group_by_length, num_workers=cfg.train.num_workers,
                          world_size=env.world_size, rank=env.rank)


def build_trainer(cfg: Config, env: LaunchEnv, root: Path, logger: Any) -> tuple[pl.Trainer, Any, Any]:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    from cybulde.config.loader import gradient_accumulation
    from cybulde.hardware import resolve_precision
    from cybulde.training.callbacks import PlainProgress, Throughput, ValidationHistory

    checkpoint_dir = root / CHECKPOINT_DIR
    if env.is_rank_zero and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)  # a stale "best" from an earlier run must never be exported
    throughput, history = Throughput(), ValidationHistory()
    interactive = sys.stdout.isatty()
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=str(checkpoint_dir), filename=BEST_CHECKPOINT, monitor="val/macro_f1",
                        mode="max", save_top_k=1, save_weights_only=True, enable_version_counter=False),
        EarlyStopping(monitor="val/macro_f1", mode="max", patience=cfg.train.early_stopping_patience),
        throughput, history,
    ]
    if logger:  # rank 0 only; LearningRateMonitor needs a logger and keeps no state
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if not interactive:
        callbacks.append(PlainProgress(throughput, cfg.train.log_every_n_steps, env.world_size))
    accelerator = cfg.launch.accelerator.value
    trainer = pl.Trainer(
        accelerator=accelerator, devices=cfg.launch.nproc_per_node, num_nodes=cfg.launch.nnodes,
        strategy=_strategy(accelerator, env.world_size),
        precision=resolve_precision(cfg.train.precision, accelerator).precision,
        max_epochs=cfg.train.epochs, max_steps=cfg.train.max_steps,
        accumulate_grad_batches=gradient_accumulation(cfg),
        deterministic=True, use_distributed_sampler=False,  # gradient clipping: ClassifierModule
        callbacks=callbacks, logger=logger, log_every_n_steps=cfg.train.log_every_n_steps,
        enable_progress_bar=interactive, enable_model_summary=env.is_rank_zero, num_sanity_val_steps=0,
        default_root_dir=str(checkpoint_dir))
    return trainer, throughput, history


def _strategy(accelerator: str, world_size: int) -> Any:
    if world_size == 1:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(process_group_backend="nccl" if accelerator == "gpu" else "gloo",
                       find_unused_parameters=False, gradient_as_bucket_view=True)


def _export(cfg: Config, trainer: pl.Trainer, module: Any, manifest: Any, data_dir: Path, root: Path,
            history: Any, result: TrainResult) -> None:
    import torch

    from cybulde.config.loader import to_dict
    from cybulde.models.checkpoint import save_model

    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    best = history.best()
    if not best_path or best is None:
        raise TrainingError(
            "no validation epoch finished, so there is no best checkpoint to export; "
            "raise train.max_steps (or use -1) so at least one epoch completes")
    state = torch.load(best_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    metrics = {"best_epoch": int(best["epoch"]) + 1, "best_val_macro_f1": float(best["val_macro_f1"]),
               "best_val_loss": float(best["val_loss"]), "global_steps": int(trainer.global_step),
               "epochs_run": len(history.epochs)}
    params = to_dict(cfg)
    metadata = {"dataset": manifest.dataset, "version": manifest.version,
                "manifest_sha256": manifest.sha256, "tokenizer_sha256": manifest.tokenizer.sha256,
                "tokenizer_name": manifest.tokenizer.name,
                # The text path the model owns: raw text -> this cleaning -> the tokenizer (max_length).
                "cleaning": manifest.publish_params.get("cleaning"),
                "train_params": {key: params[key] for key in ("model", "train", "launch")},
                "train_metrics": metrics}
    result.model_dir = save_model(module.model, root / MODEL_DIR, metadata, data_dir / "tokenizer")
    metrics_path = root / METRICS_FILE
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    result.metrics = metrics
    log.info("exported the best checkpoint (epoch %d, val/macro_f1 %.4f) to %s", metrics["best_epoch"],
             metrics["best_val_macro_f1"], result.model_dir)
