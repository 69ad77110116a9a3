
import json
import sys

import pytest
import torch

from cybulde.config.schema import ModelConfig, ScratchBackboneConfig
from cybulde.files import sha256_file
from cybulde.models.backbone import (
    BackboneError,
    TokenizerMismatchError,
    TokenizerSpec,
    build_backbone,
    embedding_rows,
    minilm_dir,
)
from cybulde.models.classifier import build_classifier, compose_classifier
from cybulde.models.heads import make_head
from tests.helpers import tiny_data


def spec(vocab_size=120, sha256="0" * 64, max_length=32, kind="wordpiece"):
    return TokenizerSpec(name="tiny", kind=kind, sha256=sha256, vocab_size=vocab_size, pad_token_id=0,
                         max_length=max_length)


def small_scratch():
    return ScratchBackboneConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=64)


def test_scratch_backbone_takes_its_vocabulary_from_the_data_tokenizer():
    encoder = build_backbone("scratch", small_scratch(), spec(vocab_size=77))
    assert embedding_rows(encoder) == 77
    assert encoder.config.hidden_size == 16 and encoder.config.pad_token_id == 0
    assert getattr(encoder, "pooler", None) is None  # unused parameters would stall DDP


def test_scratch_backbone_needs_enough_positions_for_max_length():
    with pytest.raises(BackboneError, match="max_position_embeddings=64"):
        build_backbone("scratch", small_scratch(), spec(max_length=128))


def test_minilm_with_another_tokenizer_is_a_clear_error(tmp_path):
    data_dir = tiny_data.make_data_dir(tmp_path / "data", kind="pretrained")
    manifest = tiny_data.read_manifest(data_dir)
    with pytest.raises(TokenizerMismatchError, match="not the tokenizer of backbone 'minilm'"):
        build_classifier(ModelConfig(backbone="minilm"), manifest, data_dir / "tokenizer")


def test_minilm_accepts_its_own_tokenizer_also_when_re_saved(tmp_path):
    from transformers import PreTrainedTokenizerFast

    packaged = minilm_dir() / "tokenizer.json"
    encoder = build_backbone("minilm", small_scratch(), spec(vocab_size=30522, sha256=sha256_file(packaged)))
    assert embedding_rows(encoder) == 30522 and encoder.config.hidden_size == 384
    resaved = tmp_path / "tokenizer"
    PreTrainedTokenizerFast.from_pretrained(str(minilm_dir())).save_pretrained(str(resaved))
    resaved_spec = spec(vocab_size=30522, sha256=sha256_file(resaved / "tokenizer.json"))
    build_backbone("minilm", small_scratch(), resaved_spec, tokenizer_dir=resaved)


def test_local_backbone_with_too_small_embeddings_is_a_clear_error(tmp_path):
    from transformers import BertConfig, BertModel

    model_dir = tmp_path / "tiny-bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(str(model_dir))
    with pytest.raises(TokenizerMismatchError, match="vocab_size=120 but backbone .* has 50 embedding rows"):
        build_backbone(str(model_dir), small_scratch(), spec(vocab_size=120))
    assert embedding_rows(build_backbone(str(model_dir), small_scratch(), spec(vocab_size=50))) == 50


def test_unknown_backbone_name_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="cannot load backbone"):
        build_backbone(str(tmp_path / "missing"), small_scratch(), spec())


def minilm_checkpoint_tensor(name):
    from safetensors import safe_open

    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as weights:
        return weights.get_tensor(name)


@pytest.mark.parametrize("pooling", ["pooler", "mean"])
def test_minilm_pooler_weights_are_used_by_pooler_pooling_and_dropped_otherwise(tmp_path, pooling):
    from cybulde.config.schema import Pooling

    packaged = minilm_dir() / "tokenizer.json"
    data_dir = tiny_data.make_data_dir(tmp_path / "data", kind="pretrained", tokenizer_sha256=sha256_file(packaged))
    manifest = tiny_data.read_manifest(data_dir)
    manifest["tokenizer"]["vocab_size"] = 30522
    model = build_classifier(ModelConfig(backbone="minilm", pooling=Pooling(pooling)), manifest, data_dir / "tokenizer")
    names = [name for name, _ in model.named_parameters()]
    assert model.backbone.pooler is None and not any(name.startswith("backbone.pooler") for name in names)
    if pooling == "pooler":
        # Read straight from the packaged checkpoint: the pretrained pooler, not a fresh initialisation.
        assert torch.equal(model.adapter.pooler[0].weight, minilm_checkpoint_tensor("pooler.dense.weight"))
        assert torch.equal(model.adapter.pooler[0].bias, minilm_checkpoint_tensor("pooler.dense.bias"))
    else:
        assert not any("pooler" in name for name in names)


def test_a_pretrained_backbone_exports_no_path_of_this_machine():
    # Two checkouts that train the same weights must export the same config.json bytes.
    packaged = minilm_dir() / "tokenizer.json"
    encoder = build_backbone("minilm", small_scratch(), spec(vocab_size=30522, sha256=sha256_file(packaged)))
    assert str(minilm_dir()) in json.dumps(encoder.config.to_dict())  # what transformers records
    classifier = compose_classifier(encoder, make_head("softmax", 2), ["a", "b"], "mean", "none", 1, 0.1,
                                    max_length=32, backbone_name="minilm")
    exported = json.dumps(classifier.architecture())
    assert str(minilm_dir()) not in exported and sys.prefix not in exported
