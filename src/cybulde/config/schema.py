"""The configuration schema: every knob of the pipeline, its type, default and allowed values.

`params.yaml` is merged onto these structured configs (see `cybulde.config.loader`), so a wrong
type or an unknown key fails before any work starts; the enums below list the allowed values (the
model code uses them too) and `validate_config` checks the ranges and combinations that a type
cannot express. The defaults here are the pipeline's recipe: `params.yaml` holds the same values
(tests/config/test_schema.py fails when the two drift apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from cybulde.hardware import PRECISIONS  # noqa: F401 (re-exported: the allowed train.precision values)


class Backbone(str, Enum):
    """The backbones known by name; any other `model.backbone` is a local HF model directory or a
    hub name already in the local cache."""

    minilm = "minilm"  # the packaged all-MiniLM-L6-v2, pretrained
    scratch = "scratch"  # a BERT built from `model.scratch`, randomly initialised


class Head(str, Enum):
    softmax = "softmax"
    sigmoid = "sigmoid"
    multilabel = "multilabel"  # one sigmoid per question of a multi-source dataset; missing answers masked

    @property
    def may_decide_by_threshold(self) -> bool:
        """Whether this kind's head decides by a threshold on a binary task: the config, checked
        before any head exists, asks this; a head itself answers `decides_by_threshold`
        (`cybulde.models.heads`, whose tests hold the two answers equal)."""
        return self in (Head.sigmoid, Head.multilabel)


class Pooling(str, Enum):
    cls = "cls"
    mean = "mean"
    pooler = "pooler"  # first token through the backbone's pretrained pooler (dense + tanh)


class Adapter(str, Enum):
    none = "none"
    mlp = "mlp"




class Loss(str, Enum):
    ce = "ce"  # cross-entropy (the head's own: softmax CE or sigmoid BCE)
    focal = "focal"  # the same scaled by (1 - p_t) ** train.focal_gamma


class LrSchedule(str, Enum):
    linear = "linear"
    cosine = "cosine"


class EmbeddingUpdates(str, Enum):
    dense = "dense"  # AdamW over the whole token-embedding table every step
    lazy = "lazy"  # only the rows a batch uses (cybulde.training.optim)


class DropoutMasks(str, Enum):
    torch = "torch"  # torch's dropout: one generator call per element
    packed = "packed"  # four mask elements per 64-bit draw (cybulde.training.dropout)


class HiddenStates(str, Enum):
    float32 = "float32"  # autocast's own: float32 between the encoder's layers
    bf16 = "bf16"  # bf16 from the embeddings' output on (cybulde.models.classifier)


class SelectOn(str, Enum):
    macro_f1 = "macro_f1"  # the checkpoint with the highest val/macro_f1
    loss = "loss"  # the checkpoint with the lowest val/loss


class Accelerator(str, Enum):
    cpu = "cpu"
    gpu = "gpu"


@dataclass
class DataConfig:
    # A local folder (relative paths are taken from the project root), file:// or gs:// URL.
    registry: str = "registry"
    dataset: str = "tweeteval_offensive"
    # v2: TweetEval offensive in the sharded layout (manifest format 2); its rows equal v1's.
    version: str = "v2"
    # Where `fetch` writes the verified copy; the pipeline's `fetch` out.
    fetched_dir: str = "data/fetched"
    # The sha256 of the version's manifest.json (64 lowercase hex digits) that `fetch` accepts: a
    # version changed in the registry is then an error, not a silent retrain. Printed by
    # `cybulde publish --print-pin` and by `fetch`; "" accepts any manifest, with a warning. The default
    # pins the default version (tweeteval_offensive/v2 as `cybulde publish` makes it from the datasets).
    manifest_sha256: str = "e38d71206b3619ba06dbb1cbf387d82497108ed38ce23987e42220d09a160941"


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
    # "minilm" (the packaged all-MiniLM-L6-v2), "scratch", or a local HF model directory / hub name
    # (a string, not a `Backbone`, because of the last two).
    backbone: str = Backbone.minilm.value
    scratch: ScratchBackboneConfig = field(default_factory=ScratchBackboneConfig)
    pooling: Pooling = Pooling.pooler
    adapter: Adapter = Adapter.none
    adapter_hidden_size: int = 256
    dropout: float = 0.1
    head: Head = Head.softmax


@dataclass
class TrainConfig:
    seed: int = 1234
    epochs: int = 2
    # Stop after this many optimizer steps in total (-1: run all epochs). Used by tiny test configs.
    max_steps: int = -1
    # The samples behind each optimizer step, however many processes share them (the recipe).
    global_batch_size: int = 32
    # Samples per process per forward pass; 0: global_batch_size / world size (no gradient accumulation).
    # A smaller divisor accumulates gradients, with the same global batch (cybulde.config.topology).
    batch_size: int = 0
    lr: float = 1.0e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    # After warmup the learning rate decays to 0 linearly, or along a half cosine.
    lr_schedule: LrSchedule = LrSchedule.linear
    grad_clip: float = 1.0
    class_weights: bool = False
    loss: Loss = Loss.ce
    focal_gamma: float = 2.0  # used by loss: focal only
    # Exponential moving average of the weights, updated every optimizer step (0: off). Validation,
    # model selection and the exported model all use the averaged weights.
    ema_decay: float = 0.0
    # Which validation metric picks the exported checkpoint (and drives early stopping).
    select_on: SelectOn = SelectOn.macro_f1
    # Layer-wise learning-rate decay: each layer below the top trains at this factor of the one above
    # (1.0: one learning rate for the whole model).
    layer_lr_decay: float = 1.0
    # Keep the backbone's token-embedding table fixed (less optimizer work and DDP traffic); only for
    # a pretrained backbone: a scratch backbone must learn its embeddings (an error otherwise).
    freeze_embeddings: bool = False
    # How the token-embedding table is trained: "dense" (AdamW over all of it every step) or "lazy"
    # (a sparse gradient; only the rows a batch uses are updated, with their moments and weight
    # decay: less work per step, a different optimizer for unused rows; docs/speed.md). A table that
    # freeze_embeddings keeps fixed gets no updates either way.
    embedding_updates: EmbeddingUpdates = EmbeddingUpdates.lazy
    # How dropout draws its masks: "torch" (torch's dropout) or "packed" (four elements per 64-bit
    # random number, p rounded to 1/65536: a quarter of the generator calls; other draws than torch's,
    # so other weights; docs/speed.md).
    dropout_masks: DropoutMasks = DropoutMasks.packed
    # Under bf16-mixed, the dtype of the encoder's hidden states between its layers: "float32" (what
    # autocast gives on a CPU: every linear layer casts its input, every elementwise op runs in
    # float32) or "bf16" (the embeddings' output cast once, then every layer in bf16: fewer casts and
    # half the memory traffic; bf16 rounding in the residual sums and layer norms, so other weights;
    # docs/speed.md). The exported model records it and is scored the same way. No effect in 32-true.
    hidden_states: HiddenStates = HiddenStates.bf16
    early_stopping_patience: int = 2
    # Stop training after this many seconds (validation at the stop, the best checkpoint exported);
    # 0: no limit. Where it stops depends on the machine's speed, so a limited run is not reproducible.
    max_time_s: float = 0.0
    # One of PRECISIONS. "auto": bf16-mixed where bf16 is native (a GPU with bf16, a CPU with
    # AVX512-BF16 or AMX), 32-true otherwise (cybulde.hardware); validate/test follow the same rule.
    precision: str = "auto"
    group_by_length: bool = True
    # A multi-label (multi-source) version: each training epoch draws source s's share of its rows in
    # proportion to n_s^(1/T), n_s its training rows. 1.0: every row once, the sources as the data has
    # them (single-source runs are unaffected by it); > 1 flattens the shares towards uniform, so small
    # sources are seen more often; < 1 sharpens them. Must be > 0.
    source_temperature: float = 1.0
    num_workers: int = 0
    log_every_n_steps: int = 20
    # Full training state (weights, optimizer, loop position, RNG) is saved under .cybulde/ every this
    # many optimizer steps and at each epoch end, so a killed run resumes (0: at epoch ends only).
    checkpoint_every_n_steps: int = 200


@dataclass
class LaunchConfig:
    """How torchrun starts the `train` stage; Lightning checks that it agrees with torchrun."""

    nnodes: int = 1
    # Training processes per node: "auto" = one per GPU on a GPU node, one using every core on a CPU
    # node (cybulde.hardware.resolve_workers), or a number.
    nproc_per_node: str = "auto"
    # The rendezvous of several nodes (nnodes > 1); a single node meets on a free loopback port.
    rdzv_endpoint: str = "127.0.0.1:29400"
    accelerator: Accelerator = Accelerator.cpu
    # Intra-op threads per rank; 0 = the machine's cores divided by the ranks on this node.
    threads_per_rank: int = 0
    # torchrun --max-restarts: a failed or killed rank restarts all local workers, which resume.
    max_restarts: int = 3


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
    # '': the model's own train.precision, resolved where it is served (as validate/test do); or one of
    # PRECISIONS to override it ("auto": bf16 where native).
    precision: str = ""


@dataclass
class MlflowConfig:
    # Empty: $MLFLOW_TRACKING_URI if set, else a SQLite store in the project root.
    tracking_uri: str = ""
    experiment: str = "cybulde"
    # Log into this existing run instead of creating one (e.g. one run for several nodes).
    run_id: str = ""
    # HTTP tracking servers: seconds to wait for each request, and retries of a failed one.
    http_timeout_s: int = 20
    http_max_retries: int = 3
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
