"""Load `params.yaml` (plus Hydra-style `key=value` overrides) into a validated `Config`.

`params.yaml` is the single source of truth that DVC tracks: `dvc repro` and `dvc exp run -S ...`
both edit or read that file, and every stage reads it through `load_config`, so they always see the
same values. Hydra's compose API applies the overrides (its grammar and its errors for unknown keys),
the structured schema checks types and allowed values, and `validate_config` checks ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cybulde.config.access import record_reads_if_asked
from cybulde.config.schema import PRECISIONS, Backbone, Config, Head
from cybulde.errors import CybuldeError, first_line
from cybulde.hardware import is_worker_count


class ConfigError(CybuldeError, ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


PARAMS_FILE = "params.yaml"


def load_config(params_path: str | Path = PARAMS_FILE, overrides: Sequence[str] = ()) -> Config:
    """Read `params_path`, apply `overrides` (e.g. `model.head=sigmoid`) and validate the result."""
    params_path = Path(params_path).resolve()
    if not params_path.is_file():
        raise ConfigError(f"params file not found: {params_path}")
    raw = _compose(params_path, list(overrides))
    config = _to_schema(raw)
    validate_config(config)
    from cybulde.config.paths import check_path_params  # paths imports this module

    check_path_params(config, params_path.parent)
    return record_reads_if_asked(config)  # only under the dependency check ($CYBULDE_RECORD_PARAMS)


def _compose(params_path: Path, overrides: list[str]) -> DictConfig:
    # hydra only when composing: modules that need just the schema or these helpers import this one
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(params_path.parent), version_base=None):
            return compose(config_name=params_path.stem, overrides=overrides)
    except HydraException as error:
        raise ConfigError(f"bad override in {overrides}: {error}") from error


def _to_schema(raw: DictConfig) -> Config:
    schema = OmegaConf.structured(Config)
    try:
        merged = OmegaConf.merge(schema, raw)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or "?"
        raise ConfigError(f"invalid parameter '{key}': {first_line(error)}") from error


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"invalid parameter '{key}': {message}")


def validate_config(config: Config) -> None:
    """Range checks that the schema's types cannot express; each error names its key."""
    data, model, train, launch = config.data, config.model, config.train, config.launch
    _require(bool(data.dataset.strip()), "data.dataset", "must not be empty")
    _require(bool(data.version.strip()), "data.version", "must not be empty")
    _require(data.manifest_sha256 == "" or _is_sha256(data.manifest_sha256), "data.manifest_sha256",
             f"must be '' (unpinned) or 64 lowercase hex digits, got {data.manifest_sha256!r}")
    _require(bool(model.backbone.strip()), "model.backbone",
             "must be 'minilm', 'scratch', or a model directory / hub name")
    _require(0.0 <= model.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {model.dropout}")
    _require(model.adapter_hidden_size > 0, "model.adapter_hidden_size", "must be > 0")
    scratch = model.scratch
    _require(scratch.hidden_size % scratch.num_attention_heads == 0, "model.scratch.hidden_size",
             "must be divisible by model.scratch.num_attention_heads")
    _require(train.epochs >= 1, "train.epochs", f"must be >= 1, got {train.epochs}")
    _require(train.max_steps == -1 or train.max_steps >= 1, "train.max_steps", "must be -1 or >= 1")
    _require(train.lr > 0, "train.lr", f"must be > 0, got {train.lr}")
    _require(train.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _require(0.0 <= train.warmup_ratio < 1.0, "train.warmup_ratio", "must be in [0, 1)")
    _require(train.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 disables clipping)")
    _require(0.0 < train.layer_lr_decay <= 1.0, "train.layer_lr_decay",
             f"must be in (0, 1] (1 disables the decay), got {train.layer_lr_decay}")
    _require(train.batch_size >= 0, "train.batch_size",
             "must be >= 0 (0: train.global_batch_size / world size, no gradient accumulation)")
    _require(train.precision in PRECISIONS, "train.precision",
             f"expected one of {list(PRECISIONS)}, got {train.precision!r}")
    _require(train.early_stopping_patience >= 1, "train.early_stopping_patience", "must be >= 1")
    _require(train.focal_gamma >= 0, "train.focal_gamma", f"must be >= 0, got {train.focal_gamma}")
    _require(0.0 <= train.ema_decay < 1.0, "train.ema_decay",
             f"must be in [0, 1) (0 disables the average), got {train.ema_decay}")
    _require(train.max_time_s >= 0, "train.max_time_s", f"must be >= 0 (0 = no limit), got {train.max_time_s}")
    _require(train.source_temperature > 0, "train.source_temperature",
             f"must be > 0 (1 keeps the sources' own shares), got {train.source_temperature}")
    _require(train.num_workers >= 0, "train.num_workers", "must be >= 0")
    _require(train.log_every_n_steps >= 1, "train.log_every_n_steps", "must be >= 1")
    _require(train.checkpoint_every_n_steps >= 0, "train.checkpoint_every_n_steps",
             "must be >= 0 (0: checkpoints at epoch ends only)")
    _require(launch.nnodes >= 1, "launch.nnodes", "must be >= 1")
    nproc = str(launch.nproc_per_node)
    _require(is_worker_count(nproc), "launch.nproc_per_node",
             f"must be 'auto' (one process per GPU, or one per CPU node) or a positive integer, got {nproc!r}")
    _require(launch.threads_per_rank >= 0, "launch.threads_per_rank", "must be >= 0 (0 = auto)")
    _require(launch.max_restarts >= 0, "launch.max_restarts", "must be >= 0")
    _require(config.evaluation.batch_size >= 1, "evaluation.batch_size", "must be >= 1")
    _require(config.mlflow.http_timeout_s >= 1, "mlflow.http_timeout_s", "must be >= 1")
    _require(config.mlflow.http_max_retries >= 0, "mlflow.http_max_retries", "must be >= 0")
    threshold = config.evaluation.threshold
    _require(threshold == "tune" or _is_probability(threshold), "evaluation.threshold",
             f"must be 'tune' or a number in (0, 1), got {threshold!r}")
    serving = config.serving
    _require(serving.max_rows >= 1, "serving.max_rows", f"must be >= 1, got {serving.max_rows}")
    _require(serving.max_chars >= 1, "serving.max_chars", f"must be >= 1, got {serving.max_chars}")
    _require(serving.precision in ("", *PRECISIONS), "serving.precision",
             f"expected '' (the model's own train.precision) or one of {list(PRECISIONS)}, got {serving.precision!r}")
    name = config.mlflow.registered_model
    _require(name == name.strip() and not set(name) & set("/@'\"`"), "mlflow.registered_model",
             f"must be a model name without /, @, quotes or surrounding spaces ('' disables registering), got {name!r}")
    check_combinations(config)


def check_combinations(config: Config) -> None:
    """Values that are valid alone but contradict each other (each error says what to change).

    A sigmoid head with `train.class_weights` is fine: its loss weights each example like weighted
    cross-entropy does (`cybulde.models.heads.SigmoidHead.loss`).
    """
    model, train = config.model, config.train
    _require(not (model.backbone == Backbone.scratch.value and train.freeze_embeddings), "train.freeze_embeddings",
             "true would freeze the randomly initialised embeddings of model.backbone=scratch, which then "
             "never learn; set train.freeze_embeddings=false")
    threshold = config.evaluation.threshold
    _require(threshold == "tune" or Head(model.head).may_decide_by_threshold, "evaluation.threshold",
             f"a fixed threshold ({threshold}) applies only to a binary sigmoid head, but model.head="
             f"{getattr(model.head, 'value', model.head)} decides by argmax; set model.head=sigmoid or "
             f"evaluation.threshold=tune")


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(char in "0123456789abcdef" for char in text)


def _is_probability(text: str) -> bool:
    try:
        return 0.0 < float(text) < 1.0
    except ValueError:
        return False


def to_flat_dict(config: Config) -> dict[str, Any]:
    """`{"model.head": "softmax", ...}`: the form MLflow params and `dvc exp show` use."""
    container = OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node.value if isinstance(node, Enum) else node

    walk("", container)
    return flat


def to_dict(config: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(config), enum_to_str=True)  # type: ignore[return-value]
