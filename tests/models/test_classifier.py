"""The encoder's hidden states under bf16 autocast (`train.hidden_states`), observed layer by layer."""

import pytest
import torch
from torch import nn

from cybulde.config.schema import Adapter, Head, ModelConfig, Pooling, ScratchBackboneConfig
from cybulde.models.classifier import build_classifier
from tests.helpers import tiny_data

MODEL = ModelConfig(backbone="scratch", head=Head.softmax, adapter=Adapter.none, pooling=Pooling.mean,
                    scratch=ScratchBackboneConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                                  intermediate_size=32, max_position_embeddings=64))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tiny_data.make_data_dir(tmp_path_factory.mktemp("data"))


def classifier(data_dir, hidden_states: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier(MODEL, tiny_data.read_manifest(data_dir), data_dir / "tokenizer",
                            hidden_states=hidden_states).eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    input_ids = torch.tensor([[2, 40, 41, 42, 43, 3], [2, 44, 45, 3, 0, 0]])
    return input_ids, (input_ids != 0).long()


def layer_input_dtypes(model, autocast: bool) -> list[torch.dtype]:
    """The dtype of the hidden states each encoder layer receives, in order."""
    seen: list[torch.dtype] = []
    handles = [layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
               for layer in model.backbone.encoder.layer]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(*batch())
    for handle in handles:
        handle.remove()
    return seen


def test_under_autocast_bf16_hidden_states_reach_every_layer_and_float32_is_autocasts_own(data_dir):
    # float32 is not a choice of this code: it is what CPU autocast itself leaves between the layers
    assert layer_input_dtypes(classifier(data_dir, "float32"), autocast=True) == [torch.float32] * 2
    assert layer_input_dtypes(classifier(data_dir, "bf16"), autocast=True) == [torch.bfloat16] * 2


def test_without_autocast_bf16_hidden_states_change_nothing(data_dir):
    float32, bf16 = classifier(data_dir, "float32"), classifier(data_dir, "bf16")
    bf16.load_state_dict(float32.state_dict())
    assert layer_input_dtypes(bf16, autocast=False) == [torch.float32] * 2
    with torch.no_grad():
        assert torch.equal(float32(*batch()), bf16(*batch()))


def test_under_autocast_the_logits_differ_by_bf16_rounding_only(data_dir):
    float32, bf16 = classifier(data_dir, "float32"), classifier(data_dir, "bf16")
    bf16.load_state_dict(float32.state_dict())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference, logits = float32(*batch()).float(), bf16(*batch()).float()
    assert not torch.equal(reference, logits)  # the option is not a no-op under autocast
    # a handful of bf16 roundings (8 significant bits each) through two layers: a few percent at most
    torch.testing.assert_close(logits, reference, rtol=0.05, atol=0.05)


def test_bf16_hidden_states_train_every_weight_in_float32(data_dir):
    model = classifier(data_dir, "bf16").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(*batch())
    torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1])).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.dtype == torch.float32, name
        assert parameter.dtype == torch.float32, name


def test_an_unknown_setting_and_a_backbone_without_embeddings_are_refused(data_dir):
    with pytest.raises(ValueError, match=r"unknown hidden_states 'fp16': expected one of \['float32', 'bf16'\]"):
        classifier(data_dir, "fp16")

    from cybulde.models.classifier import encoder_embeddings

    with pytest.raises(ValueError, match="needs a backbone with an `embeddings` module; Linear has none"):
        encoder_embeddings(nn.Linear(2, 2))
