"""The `train` stage: fit the classifier under torchrun DDP and export the best checkpoint.

Every rank builds the same model and data module; only global rank 0 writes outputs (`model/`,
`metrics/train.json`) and talks to MLflow. Training is resumable: the full state is checkpointed
under `.cybulde/resume/train/<key>/` (see `cybulde.training.resume`) every
`train.checkpoint_every_n_steps` steps and at each epoch end, and a training started with the same
params, code and data continues from the latest checkpoint, bit-identical to an uninterrupted run,
in the same MLflow run. The resume state is removed once `model/` has been exported.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from cybulde.config.loader import to_dict
from cybulde.config.paths import MODEL_DIR, fetched_path, project_root
from cybulde.config.schema import Config
from cybulde.config.topology import Topology, resolve_topology
from cybulde.errors import CybuldeError
from cybulde.files import write_json
from cybulde.hardware import BF16, ResolvedPrecision, cpu_has_native_bf16, resolve_precision
from cybulde.loading.datamodule import TextDataModule
from cybulde.models.classifier import build_classifier, check_head_fits_task
from cybulde.models.export import save_model
from cybulde.registry.manifest import Manifest, tokenizer_dir
from cybulde.tracking.run import PipelineRun
from cybulde.training.callbacks import PlainProgress, Throughput, ValidationHistory, selection_monitor
from cybulde.training.checkpoints import AtomicCheckpointIO, NodeLocalDDPStrategy, ResumeCheckpoint, epoch_batches_done
from cybulde.training.determinism import seed_everything
from cybulde.training.distributed import (
    LaunchEnv,
    barrier,
    check_world_size,
    configure_threads,
    init_distributed,
    read_launch_env,
    stop_with_launcher,
    threads_per_rank,
)
from cybulde.training.module import (
    ClassifierModule,
    freeze_input_embeddings,
    inverse_frequency_weights,
    positive_weights,
)
from cybulde.training.recipe import focal_gamma, recipe_callbacks
from cybulde.training.resume import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    ResumeState,
    agreed_step,
    open_resume_state,
    resume_key,
)

log = logging.getLogger("cybulde.training")

METRICS_FILE = "metrics/train.json"
RESUMED_TAG = "cybulde.resumed_at_step"


class TrainingError(CybuldeError, RuntimeError):
    """Training ran but produced no model that can be exported."""


@dataclass
class TrainResult:
    rank: int
    model_dir: Path | None  # None on ranks other than 0
    metrics: dict[str, Any] = field(default_factory=dict)  # what metrics/train.json holds
    samples_per_s: float | None = None  # all ranks together, validation excluded
    tokens_per_s: float | None = None
    train_seconds: float | None = None  # time in training steps (rank 0), validation excluded
    run_id: str | None = None


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed training picks up: its global step, the epoch (0-based) it goes on with, and
    the batches of that epoch it had already trained on."""

    step: int
    epoch: int
    batches_done: int


def train(cfg: Config) -> TrainResult:
    """Train with `cfg`; on rank 0 export the best checkpoint to `model/` and write metrics/train.json."""
    env = read_launch_env()
    topology = resolve_topology(cfg)
    check_world_size(topology, env)
    stop_with_launcher(env)
    configure_threads(threads_per_rank(cfg, env))
    seed_everything(cfg.train.seed)

    if env.is_rank_zero:
        warn_if_slow_precision(cfg)
    root = project_root()
    data_dir = fetched_path(cfg)
    manifest = load_manifest(data_dir)  # this process's only read of manifest.json
    check_head_fits_task(cfg.model.head, manifest.task, f"{manifest.dataset}/{manifest.version}")
    module = build_module(cfg, manifest, data_dir)  # raises on a tokenizer mismatch, before any training
    init_distributed(cfg, env)
    state, resume = find_resume_point(cfg, env, root, manifest.sha256)
    datamodule = make_datamodule(cfg, topology, data_dir, manifest, env, resume)

    run = start_tracking(cfg, state) if env.is_rank_zero else None
    with tracked(run):
        if env.is_rank_zero:
            log_precision(cfg, run)
            log_topology(topology, run)
        if run is not None and resume is not None:
            announce_resume(run, resume.step)
        trainer, throughput, history = build_trainer(cfg, topology, env, state.folder,
                                                       logger=_lightning_logger(run))
        trainer.fit(module, datamodule=datamodule, weights_only=True,
                    ckpt_path=str(state.last_checkpoint) if resume is not None else None)
        result = TrainResult(rank=env.rank, model_dir=None, samples_per_s=throughput.global_samples_per_s,
                             tokens_per_s=throughput.global_tokens_per_s,
                             train_seconds=throughput.train_seconds, run_id=getattr(run, "run_id", None))
        if trainer.is_global_zero:
            _export(cfg, trainer, module, manifest, data_dir, root, history, result)
            if run is not None:
                run.mark_model(result.model_dir)
                run.log_metrics({"train/samples_per_s": result.samples_per_s or 0.0,
                                 "train/tokens_per_s": result.tokens_per_s or 0.0},
                                step=trainer.global_step)
        barrier(env)  # the model is exported: no rank needs the resume state any more
        if env.local_rank == 0:
            state.remove()
    return result


def find_resume_point(cfg: Config, env: LaunchEnv, root: Path,
                      data_sha256: str) -> tuple[ResumeState, ResumePoint | None]:
    """This training's resume state, and the point all ranks can resume from (None: start over)."""
    state = open_resume_state(root, resume_key(cfg, data_sha256), node_leader=env.local_rank == 0)
    saved = state.load_summary()
    step = agreed_step(None if saved is None else int(saved["global_step"]), env.world_size)
    if step is None or saved is None:
        if saved is not None and env.is_rank_zero:
            log.warning("the ranks found different checkpoints in %s; training starts over", state.folder)
        return state, None
    batches_done = epoch_batches_done(saved)
    saved_epoch = int(saved["epoch"])  # 0-based; an epoch-end checkpoint's epoch is complete
    resume = ResumePoint(step, saved_epoch if batches_done else saved_epoch + 1, batches_done)
    if env.is_rank_zero:
        where = (f"{batches_done} batches into epoch {saved_epoch + 1}" if batches_done
                 else f"after epoch {saved_epoch + 1}")
        log.info("resuming training from step %d (%s) from %s", step, where, state.last_checkpoint)
    return state, resume


def announce_resume(run: PipelineRun, step: int) -> None:
    run.set_tags({RESUMED_TAG: step})
    run.log_metrics({"train/resumed_at_step": float(step)}, step=step)


def warn_if_slow_precision(cfg: Config) -> None:
    if cfg.launch.accelerator.value == "cpu" and cfg.train.precision == BF16 and not cpu_has_native_bf16():
        log.warning("train.precision=bf16-mixed on a CPU without AVX512-BF16/AMX: bf16 matmuls are emulated "
                    "and much slower than fp32 here; set train.precision=auto or 32-true on this machine")


PRECISION_PARAM = "train.precision_resolved"
PRECISION_TAG = "cybulde.precision"


def training_precision(cfg: Config) -> ResolvedPrecision:
    """`train.precision` resolved for `launch.accelerator` on this machine."""
    return resolve_precision(cfg.train.precision, cfg.launch.accelerator.value)


def log_precision(cfg: Config, run: PipelineRun | None) -> None:
    """What `train.precision` means on this machine, in the train log and (rank 0) the MLflow run."""
    resolved = training_precision(cfg)
    log.info("train.precision=%s runs as %s (%s)", cfg.train.precision, resolved.precision, resolved.reason)
    if run is not None:
        run.log_params({PRECISION_PARAM: resolved.precision})
        run.set_tags({PRECISION_TAG: resolved.reason})


TOPOLOGY_PARAMS = ("launch.nproc_per_node_resolved", "train.batch_size_resolved", "train.accumulation_resolved")
TOPOLOGY_TAG = "cybulde.topology"


def log_topology(topology: Topology, run: PipelineRun | None) -> None:
    """What `launch.nproc_per_node` and `train.batch_size` mean on this machine, in the log and the MLflow run."""
    log.info("%d process(es) per node x %d node(s) (%s); micro-batch %d, %d accumulated per optimizer step",
             topology.nproc_per_node, topology.nnodes, topology.reason, topology.micro_batch_size,
             topology.accumulation)
    if run is not None:
        values = (topology.nproc_per_node, topology.micro_batch_size, topology.accumulation)
        run.log_params(dict(zip(TOPOLOGY_PARAMS, values, strict=True)))
        run.set_tags({TOPOLOGY_TAG: topology.reason})


def start_tracking(cfg: Config, state: ResumeState) -> PipelineRun:
    """The MLflow run of this training (rank 0 only): `cybulde.tracking.run.PipelineRun`, the one recorded
    in the resume state if this training resumes, recorded there otherwise."""
    run = PipelineRun.start_training(cfg, continue_run_id=state.run_id())
    state.record_run(run.run_id)
    return run


@contextmanager
def tracked(run: PipelineRun | None) -> Iterator[None]:
    """The train stage inside its MLflow run (rank 0), with metrics buffered so an outage never stops training."""
    if run is None:
        yield
        return
    with run.stage("train"), run.buffered():
        yield


def _lightning_logger(run: PipelineRun | None) -> Any:
    return run.lightning_logger() if run is not None else False


def load_manifest(data_dir: Path) -> Manifest:
    return Manifest.load(data_dir)


def build_module(cfg: Config, manifest: Manifest, data_dir: Path) -> pl.LightningModule:
    # The models package reads the manifest's fields as plain data (it does not import the registry).
    model = build_classifier(cfg.model, manifest.to_dict(), tokenizer_dir(data_dir, manifest),
                             hidden_states=cfg.train.hidden_states.value)
    if cfg.train.freeze_embeddings:
        freeze_input_embeddings(model)
    class_weights = None
    if cfg.train.class_weights:
        class_weights = training_class_weights(manifest, model.label_names)
    return ClassifierModule(model, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                            warmup_ratio=cfg.train.warmup_ratio, class_weights=class_weights,
                            grad_clip=cfg.train.grad_clip, layer_lr_decay=cfg.train.layer_lr_decay,
                            focal_gamma=focal_gamma(cfg), lr_schedule=cfg.train.lr_schedule.value,
                            embedding_updates=cfg.train.embedding_updates.value,
                            dropout_masks=cfg.train.dropout_masks.value)


def training_class_weights(manifest: Manifest, label_names: list[str]) -> torch.Tensor:
    """`train.class_weights`: inverse class frequencies, or for a multi-label version one pos_weight
    per question (no / yes over the present cells of the train split)."""
    train_split = manifest.splits["train"]
    if manifest.is_multilabel:
        if train_split.answers is None:
            raise TrainingError(f"train.class_weights=true needs the per-source answers of the train split, and "
                                f"the manifest of {manifest.dataset}/{manifest.version} has none")
        return positive_weights(train_split.answers, label_names)
    counts = train_split.label_counts
    return inverse_frequency_weights([counts.get(name, 0) for name in label_names])


def make_datamodule(cfg: Config, topology: Topology, data_dir: Path, manifest: Manifest, env: LaunchEnv,
                    resume: ResumePoint | None = None) -> pl.LightningDataModule:
    return TextDataModule(data_dir, manifest=manifest, batch_size=topology.micro_batch_size, seed=cfg.train.seed,
                          group_by_length=cfg.train.group_by_length, num_workers=cfg.train.num_workers,
                          world_size=env.world_size, rank=env.rank,
                          start_epoch=resume.epoch if resume else 0,
                          start_batch=resume.batches_done if resume else 0,
                          source_temperature=cfg.train.source_temperature)


def build_trainer(cfg: Config, topology: Topology, env: LaunchEnv, checkpoint_dir: Path,
                  logger: Any) -> tuple[pl.Trainer, Throughput, ValidationHistory]:
    """The Trainer and its callbacks; checkpoints (best weights, full resume state) go to `checkpoint_dir`."""
    # A resumed training finds its own checkpoints there, and its data loader starts at the batch it had
    # reached (TextDataModule(start_epoch=..., start_batch=...)), which Lightning cannot see.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch")
    throughput, history = Throughput(), ValidationHistory(cfg.train.select_on.value)
    selection = selection_monitor(cfg.train.select_on.value)
    interactive = sys.stdout.isatty()
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(dirpath=str(checkpoint_dir), filename=BEST_CHECKPOINT, **selection,
                        save_top_k=1, save_weights_only=True, enable_version_counter=False),
        EarlyStopping(**selection, patience=cfg.train.early_stopping_patience),
        throughput, history, *recipe_callbacks(cfg),
        # After ModelCheckpoint (checkpoint callbacks keep their order, last): its state includes the best.
        ResumeCheckpoint(checkpoint_dir / LAST_CHECKPOINT, cfg.train.checkpoint_every_n_steps),
    ]
    if logger:  # rank 0 only; LearningRateMonitor needs a logger and keeps no state
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if not interactive:
        callbacks.append(PlainProgress(throughput, cfg.train.log_every_n_steps, env.world_size))
    accelerator = cfg.launch.accelerator.value
    trainer = pl.Trainer(
        accelerator=accelerator, devices=topology.nproc_per_node, num_nodes=topology.nnodes,
        strategy=_strategy(accelerator, env.world_size),
        precision=training_precision(cfg).precision,
        max_epochs=cfg.train.epochs, max_steps=cfg.train.max_steps,
        accumulate_grad_batches=topology.accumulation,
        deterministic=True, use_distributed_sampler=False,  # gradient clipping: ClassifierModule
        callbacks=callbacks, logger=logger, log_every_n_steps=cfg.train.log_every_n_steps,
        enable_progress_bar=interactive, enable_model_summary=env.is_rank_zero, num_sanity_val_steps=0,
        default_root_dir=str(checkpoint_dir), plugins=[AtomicCheckpointIO()])
    return trainer, throughput, history


def _strategy(accelerator: str, world_size: int) -> Any:
    if world_size == 1:
        return "auto"
    return NodeLocalDDPStrategy(process_group_backend="nccl" if accelerator == "gpu" else "gloo",
                                find_unused_parameters=False, gradient_as_bucket_view=True)


def _export(cfg: Config, trainer: pl.Trainer, module: Any, manifest: Manifest, data_dir: Path, root: Path,
            history: ValidationHistory, result: TrainResult) -> None:
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
    metadata = {"dataset": manifest.dataset, "version": manifest.version,
                "manifest_sha256": manifest.sha256, "tokenizer_sha256": manifest.tokenizer.sha256,
                "tokenizer_name": manifest.tokenizer.name,
                # The text path the model owns: raw text -> this cleaning -> the tokenizer (max_length).
                "cleaning": manifest.publish_params.get("cleaning"),
                # Only the sections the stage declares: model/config.json is an output of `train`.
                "train_params": {key: to_dict(getattr(cfg, key)) for key in ("model", "train", "launch")},
                "train_metrics": metrics}
    result.model_dir = save_model(module.model, root / MODEL_DIR, metadata, tokenizer_dir(data_dir, manifest))
    write_json(metrics, root / METRICS_FILE)
    result.metrics = metrics
    log.info("exported the best checkpoint (epoch %d, val/macro_f1 %.4f) to %s", metrics["best_epoch"],
             metrics["best_val_macro_f1"], result.model_dir)
