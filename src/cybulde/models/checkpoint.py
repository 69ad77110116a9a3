"""Export and load a trained classifier: safetensors weights + a self-describing config.json.

Layout of a model directory:
  model.safetensors   the classifier's state dict (no pickle)
  config.json         {"format_version", architecture keys (backbone, backbone_config, pooling, adapter,
                       adapter_hidden_size, dropout, head, num_labels, num_outputs, label_names,
                       max_length), "metadata": {dataset, version, manifest_sha256, tokenizer_sha256,
                       train_params, ...}}
  tokenizer/          a copy of the data's tokenizer directory
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.errors import CybuldeError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from cybulde.models.classifier import TextClassifier

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1


class ModelFormatError(CybuldeError, ValueError):
    """A model directory is incomplete or was written by an unknown format version."""


@dataclass
class LoadedModel:
    model: TextClassifier
    tokenizer: PreTrainedTokenizerFast
    config: dict[str, Any]


def save_model(model: TextClassifier, out_dir: str | Path, metadata: dict[str, Any],
               tokenizer_dir: str | Path) -> Path:
    """Write `model` into `out_dir` (replacing what was there) and return the directory."""
    from safetensors.torch import save_model as save_safetensors

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    save_safetensors(model, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {"format_version": FORMAT_VERSION, **model.architecture(), "metadata": metadata}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n",
                                       encoding="utf-8")
    shutil.copytree(tokenizer_dir, out_dir / TOKENIZER_DIR)
    return out_dir


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
    from cybulde.models.backbone import set_offline, without_pooler

    set_offline()
    from transformers import AutoConfig, AutoModel

    from cybulde.models.classifier import compose_classifier
    from cybulde.models.heads import make_head

    backbone_config = dict(config["backbone_config"])
    hf_config = AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config)
    backbone = without_pooler(AutoModel.from_config(hf_config))
    head = make_head(config["head"], int(config["num_labels"]))
    return compose_classifier(
        backbone, head, config["label_names"], config["pooling"], config["adapter"],
        config["adapter_hidden_size"] or 1, float(config["dropout"]),
        max_length=config.get("max_length"), backbone_name=config.get("backbone", ""))


def inference_precision(config: dict[str, Any], accelerator: str) -> Any:
    """The precision to run an exported model in on this machine (a `cybulde.hardware.ResolvedPrecision`).

    The `train.precision` its training was configured with ("auto" by default), resolved by the same
    rule as training for `accelerator` ("cpu" | "gpu") here: a model trained with "auto" runs in bf16
    where bf16 is native, whatever machine trained it. 32-true for a model that records no precision.
    """
    from cybulde.hardware import FP32, resolve_precision

    train_params = (config.get("metadata") or {}).get("train_params") or {}
    requested = (train_params.get("train") or {}).get("precision") or FP32
    return resolve_precision(str(requested), accelerator)


def load_model(model_dir: str | Path) -> LoadedModel:
    """The exported model in eval mode, its tokenizer and config; reads no training config."""
    from cybulde.models.backbone import set_offline

    set_offline()
    from safetensors.torch import load_model as load_safetensors
    from transformers import PreTrainedTokenizerFast

    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFormatError(f"{weights} not found")
    model = rebuild_classifier(config)
    load_safetensors(model, str(weights), strict=True)
    model.eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir / TOKENIZER_DIR))
    return LoadedModel(model=model, tokenizer=tokenizer, config=config)
