"""Packed dropout masks: the draw's statistics, its bit layout, gradients, attention and the model swap."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cybulde.training.dropout import (
    PACKED_SDPA,
    PackedDropout,
    dropped_levels,
    keep_scale,
    packed_dropout,
    packed_keep_mask,
    packed_sdpa_attention,
    use_packed_dropout,
)


def test_p_is_rounded_to_a_multiple_of_one_in_65536():
    # by hand: 0.1 * 65536 = 6553.6 -> 6554 levels; kept elements scale by 65536 / (65536 - 6554)
    assert dropped_levels(0.1) == 6554
    assert keep_scale(0.1) == 65536 / 58982
    assert dropped_levels(0.5) == 32768 and keep_scale(0.5) == 2.0
    assert dropped_levels(0.0) == 0 and keep_scale(0.0) == 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dropped_levels(1.0)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_dropped_share_is_p_within_the_binomial_spread(p):
    torch.manual_seed(0)
    count = 2_000_000
    dropped = (~packed_keep_mask((count,), p)).sum().item() / count
    rounded = dropped_levels(p) / 65536
    assert abs(dropped - rounded) < 5 * math.sqrt(rounded * (1 - rounded) / count)


def test_each_64_bit_draw_gives_four_16_bit_levels_in_little_endian_order():
    torch.manual_seed(3)
    mask = packed_keep_mask((2, 4), 0.3)
    torch.manual_seed(3)
    words = torch.empty(2, dtype=torch.int64).random_(-(1 << 63), None).tolist()
    expected = []
    for word in words:  # by hand: the word's 16-bit pieces, lowest first, read as signed numbers
        for piece in range(4):
            level = (word >> (16 * piece)) & 0xFFFF
            signed = level - 65536 if level >= 32768 else level
            expected.append(signed >= -32768 + round(0.3 * 65536))
    assert mask.flatten().tolist() == expected


def test_a_mask_shorter_than_its_draws_takes_the_first_levels():
    torch.manual_seed(5)
    odd = packed_keep_mask((7,), 0.5)
    torch.manual_seed(5)
    even = packed_keep_mask((8,), 0.5)
    assert torch.equal(odd, even[:7])


def test_every_element_keeps_its_mean():
    torch.manual_seed(1)
    count = 1_000_000
    out = packed_dropout(torch.ones(count), 0.1)
    kept = 1 - dropped_levels(0.1) / 65536
    spread = keep_scale(0.1) * math.sqrt(kept * (1 - kept) / count)  # the std of the mean of scale * Bernoulli
    assert abs(out.mean().item() - 1.0) < 5 * spread
    values = out.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(keep_scale(0.1))]


def test_the_gradient_is_the_forward_mask_times_the_scale():
    torch.manual_seed(2)
    inputs = torch.randn(64, 48, requires_grad=True)
    out = packed_dropout(inputs, 0.25)
    upstream = torch.randn(64, 48)
    out.backward(upstream)
    kept = out != 0
    assert 0 < kept.float().mean().item() < 1
    assert torch.allclose(out, torch.where(kept, inputs.detach() * keep_scale(0.25), 0.0), rtol=0, atol=1e-6)
    assert torch.allclose(inputs.grad, torch.where(kept, upstream * keep_scale(0.25), 0.0), rtol=0, atol=1e-6)


def test_the_seed_decides_the_masks():
    inputs = torch.randn(1000)
    torch.manual_seed(9)
    first = packed_dropout(inputs, 0.1)
    torch.manual_seed(9)
    again = packed_dropout(inputs, 0.1)
    torch.manual_seed(10)
    other = packed_dropout(inputs, 0.1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_eval_mode_and_p_zero_pass_the_input_through():
    inputs = torch.randn(10)
    layer = PackedDropout(0.3).eval()
    assert layer(inputs) is inputs
    assert packed_dropout(inputs, 0.0) is inputs


def _attention_inputs():
    torch.manual_seed(4)
    query, key, value = (torch.randn(2, 3, 5, 8) for _ in range(3))
    attend = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    attend[1, :, :, 3:] = False  # the second row has 3 real tokens
    return query, key, value, attend


def test_attention_without_dropout_is_torch_sdpa():
    query, key, value, attend = _attention_inputs()
    module = nn.Module()
    module.is_causal = False
    out, _ = packed_sdpa_attention(module, query, key, value, attend, dropout=0.0, scaling=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attend, scale=0.3)
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-6)


@pytest.mark.parametrize("mask_kind", ["bool", "additive"])
def test_attention_with_dropout_drops_probabilities_with_the_packed_mask(mask_kind):
    query, key, value, attend = _attention_inputs()
    mask = attend if mask_kind == "bool" else torch.zeros(attend.shape).masked_fill(~attend, -1e9)
    torch.manual_seed(11)
    out, _ = packed_sdpa_attention(nn.Module(), query, key, value, mask, dropout=0.2, scaling=0.3)
    torch.manual_seed(11)
    keep = packed_keep_mask((2, 3, 5, 5), 0.2)
    # by hand: softmax over the attended keys only, dropped and rescaled, times the values
    scores = (query @ key.transpose(-2, -1)) * 0.3
    weights = torch.exp(scores - scores.amax(-1, keepdim=True)) * attend
    probabilities = weights / weights.sum(-1, keepdim=True)
    expected = (probabilities * keep * keep_scale(0.2)) @ value
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-5)


def _tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, attn_implementation="sdpa")
    return nn.Sequential(BertModel(config, add_pooling_layer=False))


def test_the_swap_replaces_every_dropout_and_keeps_the_weights_and_exported_config():
    model = _tiny_bert()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    config_before = model[0].config.to_dict()
    use_packed_dropout(model)
    assert not [module for module in model.modules() if type(module) is nn.Dropout]
    assert sum(isinstance(module, PackedDropout) for module in model.modules()) == 1 + 2 * 3  # embeddings, per layer 3
    assert model[0].config._attn_implementation == PACKED_SDPA
    assert model[0].config.to_dict() == config_before
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[name], before[name]) for name in before)


def test_a_swapped_model_infers_as_before_and_trains_reproducibly():
    plain, packed = _tiny_bert(), _tiny_bert()
    use_packed_dropout(packed)
    input_ids = torch.tensor([[1, 5, 7, 9, 2], [1, 6, 2, 0, 0]])
    attention_mask = (input_ids != 0).long()
    plain.eval()
    packed.eval()
    with torch.no_grad():
        expected = plain[0](input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        got = packed[0](input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    assert torch.equal(got, expected)

    packed.train()
    outputs = []
    for _ in range(2):
        torch.manual_seed(21)
        outputs.append(packed[0](input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.allclose(outputs[0], expected)  # dropout is on in training
    outputs[0].sum().backward()
    assert all(parameter.grad is not None for parameter in packed.parameters())


def test_causal_attention_is_left_to_sdpa_and_torchs_masks():
    query, key, value, _ = _attention_inputs()
    module = nn.Module()
    module.is_causal = True
    torch.manual_seed(1)
    dropped, _ = packed_sdpa_attention(module, query, key, value, None, dropout=0.5, scaling=0.3)
    torch.manual_seed(1)
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=0.3,
                                                                dropout_p=0.5)
    assert torch.equal(dropped, expected.transpose(1, 2))
