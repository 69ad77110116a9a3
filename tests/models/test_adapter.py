import pytest
import torch

from cybulde.models.adapter import Adapter, AdapterError, pool


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 2.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 1.0]]


def test_mlp_adapter_maps_to_its_hidden_size():
    adapter = Adapter(hidden_size=8, pooling="mean", kind="mlp", adapter_hidden_size=5, dropout=0.0)
    out = adapter(torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.long))
    assert out.shape == (3, 5) and adapter.output_size == 5


def test_no_adapter_keeps_the_pooled_size():
    adapter = Adapter(hidden_size=8, pooling="cls", kind="none")
    assert adapter(torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.long)).shape == (2, 8)


def test_unknown_pooling_or_adapter_is_an_error():
    with pytest.raises(AdapterError, match="unknown pooling 'max': expected one of \\['cls', 'mean', 'pooler'\\]"):
        Adapter(8, pooling="max")
    with pytest.raises(AdapterError, match="unknown adapter 'lora'"):
        Adapter(8, kind="lora")


def test_pooler_pooling_is_tanh_of_a_dense_layer_over_the_first_token():
    adapter = Adapter(hidden_size=2, pooling="pooler", kind="none", dropout=0.0)
    dense = adapter.pooler[0]
    with torch.no_grad():
        dense.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, -1.0]]))
        dense.bias.copy_(torch.tensor([0.0, 0.5]))
    hidden = torch.tensor([[[0.5, 2.0], [9.0, 9.0]]])  # the second token must not matter
    out = adapter(hidden, torch.tensor([[1, 1]]))
    # By hand: W h0 + b = [0.5, 0.5 - 2.0 + 0.5] = [0.5, -1.0]
    assert torch.allclose(out, torch.tanh(torch.tensor([[0.5, -1.0]])))


def test_pooler_pooling_starts_from_the_pretrained_pooler_weights():
    from transformers import BertConfig, BertModel

    encoder = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=16))
    adapter = Adapter(8, pooling="pooler", pretrained_pooler=encoder.pooler)
    assert torch.equal(adapter.pooler[0].weight, encoder.pooler.dense.weight)
    assert torch.equal(adapter.pooler[0].bias, encoder.pooler.dense.bias)
    assert adapter.pooler[0].weight.data_ptr() != encoder.pooler.dense.weight.data_ptr()  # a copy


def test_mean_and_cls_pooling_have_no_parameters_of_their_own():
    for pooling in ("mean", "cls"):
        assert not list(Adapter(8, pooling=pooling, kind="none").parameters())
