import torch
from torch import nn

from cybulde.training.module import inverse_frequency_weights, optimizer_groups


def test_inverse_frequency_weights_balance_the_classes():
    weights = inverse_frequency_weights([30, 10])
    assert torch.allclose(weights, torch.tensor([40 / 60, 40 / 20]))
    assert torch.allclose(weights * torch.tensor([30.0, 10.0]), torch.tensor([20.0, 20.0]))


def test_no_weight_decay_on_biases_and_layer_norm():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    decay, no_decay = optimizer_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias),
                                                  id(model[2].bias)}


def test_module_trains_a_backbone_loaded_in_eval_mode(tmp_path):
    import json

    from cybulde.config.schema import ModelConfig
    from cybulde.models.classifier import build_classifier
    from cybulde.training.module import ClassifierModule
    from tests.models.tiny_data import make_data_dir

    data_dir = make_data_dir(tmp_path / "data")
    manifest = json.loads((data_dir / "manifest.json").read_text())
    model = build_classifier(ModelConfig(backbone="scratch"), manifest, data_dir / "tokenizer").eval()
    module = ClassifierModule(model, lr=1e-3, weight_decay=0.0, warmup_ratio=0.0)
    assert all(submodule.training for submodule in module.modules())  # dropout is active
