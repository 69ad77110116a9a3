"""The configuration schema: every knob of the pipeline, its type, default and allowed values.

`params.yaml` is merged onto these structured configs (see `cybulde.config.loader`), so a wrong
type or an unknown key fails before any work starts; the enums below list the allowed values and
`validate_config` checks the ranges that a type cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from cybulde.hardware import PRECISIONS  # noqa: F401 (re-exported: the allowed train.precision values)


class Head(str, Enum):
    softmax = "softmax"
    sigmoid = "sigmoid"


class Pooling(str, Enum):
    cls = "cls"
    mean = "mean"


class Adapter(str, Enum):
    none = "none"
    mlp = "mlp"




class Accelerator(str, Enum):
    cpu = "cpu"
    gpu = "gpu"


@dataclass
class DataConfig:
    # A local folder (relative paths are taken from the project root), file:// or gs:// URL.
    registry: str = "registry"
    dataset: str = "tweeteval_offensive"
    version: str = "v1"
    # Where `fetch` writes the verified copy; the pipeline's `fetch` out.
    fetched_dir: str = "data/fetched"


@dataclass
class ScratchBackboneConfig:
    """A BERT encoder built from this config and trained from scratch (backbone: scratch)."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 512


@dataclass
class ModelConfig:
    # "minilm" (the packaged all-MiniLM-L6-v2), "scratch", or a local HF model directory / hub name.
    backbone: str = "minilm"
    scratch: ScratchBackboneConfig = field(default_factory=ScratchBackboneConfig)
    pooling: Pooling = Pooling.mean
    adapter: Adapter = Adapter.none
    adapter_hidden_size: int = 256
    dropout: float = 0.1
    head: Head = Head.softmax


@dataclass
class TrainConfig:
    seed: int = 1234
    epochs: int = 1
    # Stop after this many optimizer steps in total (-1: run all epochs). Used by tiny test configs.
    max_steps: int = -1
    batch_size: int = 16  # per device (per rank)
    global_batch_size: int = 32  # = batch_size * world_size * gradient accumulation
    lr: float = 1.0e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    class_weights: bool = False
    # Layer-wise learning-rate decay: each layer below the top trains at this factor of the one above
    # (1.0: one learning rate for the whole model).
    layer_lr_decay: float = 1.0
    # Keep the backbone's token-embedding table fixed (less optimizer work and DDP traffic).
    freeze_embeddings: bool = False
    early_stopping_patience: int = 2
    precision: str = "32-true"  # one of PRECISIONS; "auto": bf16-mixed where bf16 is native (cybulde.hardware)
    group_by_length: bool = True
    num_workers: int = 0
    log_every_n_steps: int = 20


@dataclass
class LaunchConfig:
    """How torchrun starts the `train` stage; Lightning checks that it agrees with torchrun."""

    nnodes: int = 1
    nproc_per_node: int = 2
    rdzv_endpoint: str = "127.0.0.1:29400"
    accelerator: Accelerator = Accelerator.cpu
    # Intra-op threads per rank; 0 = the machine's cores divided by the ranks on this node.
    threads_per_rank: int = 0


@dataclass
class EvaluationConfig:
    batch_size: int = 64
    # Sigmoid head on a binary task: "tune" picks the threshold maximising validation macro-F1;
    # a number in (0, 1) fixes it.
    threshold: str = "tune"


@dataclass
class ServingConfig:
    """The served model (logged by the `test` stage): its request limits and how it computes."""

    # A request with more rows than this is refused (HTTP 400).
    max_rows: int = 1000
    # A text longer than this many characters is refused (HTTP 400).
    max_chars: int = 10000
    # One of PRECISIONS, resolved where the model is served ("auto": bf16 where native).
    precision: str = "auto"


@dataclass
class MlflowConfig:
    # Empty: $MLFLOW_TRACKING_URI if set, else a SQLite store in the project root.
    tracking_uri: str = ""
    experiment: str = "cybulde"
    # Log into this existing run instead of creating one (e.g. one run for several nodes).
    run_id: str = ""
    # The `test` stage registers the model under this name with the alias `candidate` ('' : not registered).
    registered_model: str = "cybulde-classifier"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
