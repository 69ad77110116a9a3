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
    with pytest.raises(AdapterError, match="unknown pooling 'max'"):
        Adapter(8, pooling="max")
    with pytest.raises(AdapterError, match="unknown adapter 'lora'"):
        Adapter(8, kind="lora")
