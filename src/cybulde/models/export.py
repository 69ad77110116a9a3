"""Export and load a trained classifier: safetensors weights + a self-describing config.json.

Layout of a model directory:
  model.safetensors   the classifier's state dict (no pickle)
  config.json         {"format_version", architecture keys (backbone, backbone_config, pooling, adapter,
                       adapter_hidden_size, dropout, head, num_labels, num_outputs, label_names,
                       max_length; a multi-label model also task: "multilabel" and source_names, its
                       label_names being the questions), "metadata": {dataset, version, manifest_sha256,
                       tokenizer_sha256, train_params, ...}}
  tokenizer/          a copy of the data's tokenizer directory

`load_model` reads the weights' safetensors header (8 bytes little-endian length, then JSON with each
tensor's shape) and checks that the architecture config.json describes has exactly those tensors and
shapes before it builds anything: a config asking for huge tensors is refused in one line, not
allocated.

`save_model` is atomic: the files are written and fsync'ed in a staging folder beside the target
(`.model.partial-*`) and renamed into place, so a model directory is complete or absent, never
partial, whether the export is killed or runs out of disk; leftovers of a killed export are
removed by the next one.

Tracking, publishing and `cybulde predict` import this module for the format's names and
`read_model_config`, so torch, safetensors, transformers and the classifier are imported inside the
functions that build or load a model (transformers only after `set_offline()`: it reads
`HF_HUB_OFFLINE` when imported).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.errors import CybuldeError
from cybulde.files import check_readable, fsync_tree, honour_umask, replace_folder, write_json
from cybulde.hardware import FP32, ResolvedPrecision, resolve_precision
from cybulde.models.backbone import set_offline, without_pooler

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from cybulde.models.classifier import TextClassifier

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 * 2**20  # of a safetensors header (its JSON index of tensors)


class ModelFormatError(CybuldeError, ValueError):
    """A model directory is incomplete or was written by an unknown format version."""


class ModelExportError(CybuldeError, OSError):
    """The model could not be written (e.g. the disk is full); the target directory is unchanged."""


@dataclass
class LoadedModel:
    model: TextClassifier
    tokenizer: PreTrainedTokenizerFast
    config: dict[str, Any]


def save_model(model: TextClassifier, out_dir: str | Path, metadata: dict[str, Any],
               tokenizer_dir: str | Path) -> Path:
    """Write `model` into `out_dir`, replacing what was there all at once, and return the directory."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_export_leftovers(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        write_model_files(model, staging, metadata, tokenizer_dir)
        fsync_tree(staging)
        replace_folder(staging, out_dir)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if _disk_full(error):
            unchanged = "left as it was" if out_dir.exists() else "not created"
            raise ModelExportError(f"cannot write the model to {out_dir}: {os.strerror(errno.ENOSPC)}; "
                                   f"{out_dir} was {unchanged}") from error
        raise
    return out_dir


def _disk_full(error: BaseException) -> bool:
    """An OSError for a full disk or quota, or safetensors' error wrapping one (it is no OSError)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return f"os error {errno.ENOSPC})" in str(error) or f"os error {errno.EDQUOT})" in str(error)


def write_model_files(model: TextClassifier, folder: Path, metadata: dict[str, Any],
                      tokenizer_dir: str | Path) -> None:
    from safetensors.torch import save_model as save_safetensors

    honour_umask(folder)  # mkdtemp and safetensors make theirs private; an exported model is ordinary data
    save_safetensors(model, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    honour_umask(folder / WEIGHTS_FILE)
    config = {"format_version": FORMAT_VERSION, **model.architecture(), "metadata": metadata}
    write_json(config, folder / CONFIG_FILE, default=str)
    shutil.copytree(tokenizer_dir, folder / TOKENIZER_DIR)


def remove_export_leftovers(out_dir: Path) -> None:
    """Staging and retired folders of exports that were killed before they could clean up."""
    for pattern in (f".{out_dir.name}.partial-*", f".{out_dir.name}.old-*"):
        for leftover in out_dir.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise ModelFormatError(f"{path} not found: {model_dir} is not an exported model directory")
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} has format_version={config.get('format_version')!r}, expected {FORMAT_VERSION}")
    return config


def rebuild_classifier(config: dict[str, Any]) -> TextClassifier:
    """An untrained classifier with the architecture described by `config`."""
    set_offline()
    from transformers import AutoConfig, AutoModel

    from cybulde.models.classifier import FLOAT32_HIDDEN_STATES, compose_classifier
    from cybulde.models.heads import make_head

    backbone_config = dict(config["backbone_config"])
    hf_config = AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config)
    backbone = without_pooler(AutoModel.from_config(hf_config))
    head = make_head(config["head"], int(config["num_labels"]))
    return compose_classifier(
        backbone, head, config["label_names"], config["pooling"], config["adapter"],
        config["adapter_hidden_size"] or 1, float(config["dropout"]),
        max_length=config.get("max_length"), backbone_name=config.get("backbone", ""),
        source_names=config.get("source_names"),
        hidden_states=config.get("hidden_states", FLOAT32_HIDDEN_STATES))


def weights_header_shapes(weights: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the safetensors header of `weights` (nothing else is read)."""
    size = weights.stat().st_size
    with open(weights, "rb") as stream:
        length_bytes = stream.read(8)
        length = int.from_bytes(length_bytes, "little") if len(length_bytes) == 8 else -1
        if not 0 < length <= min(MAX_HEADER_BYTES, size - 8):
            raise ModelFormatError(f"{weights} is not a safetensors file: its header length {length:,} does not fit "
                                   f"the file's {size:,} bytes")
        try:
            header = json.loads(stream.read(length))
            return {name: [int(dim) for dim in entry["shape"]] for name, entry in header.items()
                    if name != "__metadata__"}
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ModelFormatError(f"{weights} is not a safetensors file: unreadable header ({error})") from error


def check_config_against_weights(config: dict[str, Any], weights: Path, config_path: Path) -> None:
    """Refuse a config.json whose architecture has other tensors or shapes than the weights file holds,
    before any memory is allocated for it (the architecture is built on the `meta` device)."""
    import torch

    stored = weights_header_shapes(weights)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            described = {name: list(tensor.shape) for name, tensor in rebuild_classifier(config).state_dict().items()}
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFormatError(f"{config_path} does not describe a model: {error!r}") from error
    for name in sorted(described.keys() | stored.keys()):
        if described.get(name) != stored.get(name):
            raise ModelFormatError(
                f"{config_path} does not match {weights}: tensor {name} is {_shape(described.get(name))} in the "
                f"config's architecture and {_shape(stored.get(name))} in the weights; refusing to build it")


def _shape(shape: list[int] | None) -> str:
    return "absent" if shape is None else "[" + ", ".join(f"{dim:,}" for dim in shape) + "]"


def inference_precision(config: dict[str, Any], accelerator: str) -> ResolvedPrecision:
    """The precision to run an exported model in on this machine.

    The `train.precision` its training was configured with ("auto" by default), resolved by the same
    rule as training for `accelerator` ("cpu" | "gpu") here: a model trained with "auto" runs in bf16
    where bf16 is native, whatever machine trained it. 32-true for a model that records no precision.
    """
    train_params = (config.get("metadata") or {}).get("train_params") or {}
    requested = (train_params.get("train") or {}).get("precision") or FP32
    return resolve_precision(str(requested), accelerator)


def load_model(model_dir: str | Path) -> LoadedModel:
    """The exported model in eval mode, its tokenizer and config; reads no training config."""
    set_offline()
    from safetensors.torch import load_model as load_safetensors
    from transformers import PreTrainedTokenizerFast

    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFormatError(f"{weights} not found")
    check_readable(weights)
    check_config_against_weights(config, weights, model_dir / CONFIG_FILE)
    model = rebuild_classifier(config)
    load_safetensors(model, str(weights), strict=True)
    model.eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir / TOKENIZER_DIR))
    return LoadedModel(model=model, tokenizer=tokenizer, config=config)
