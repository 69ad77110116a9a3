import torch
from torch import nn

from cybulde.training.module import inverse_frequency_weights, optimizer_groups


def test_inverse_frequency_weights_balance_the_classes():
    weights = inverse_frequency_weights([30, 10])
    assert torch.allclose(weights, torch.tensor([40 / 60, 40 / 20]))
    assert torch.allclose(weights * torch.tensor([30.0, 10.0]), torch.tensor([20.0, 20.0]))


def test_no_weight_decay_on_biases_and_layer_norm():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    decay, no_decay = optimizer_groups(model, 0.01, lr=1e-3)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert decay["lr"] == no_decay["lr"] == 1e-3
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias),
                                                  id(model[2].bias)}


def tiny_classifier(tmp_path):
    import json

    from cybulde.config.schema import ModelConfig
    from cybulde.models.classifier import build_classifier
    from tests.models.tiny_data import make_data_dir

    data_dir = make_data_dir(tmp_path / "data")
    manifest = json.loads((data_dir / "manifest.json").read_text())
    return build_classifier(ModelConfig(backbone="scratch"), manifest, data_dir / "tokenizer")


def test_layer_lr_decay_scales_each_layer_below_the_top(tmp_path):
    model = tiny_classifier(tmp_path)  # 2 transformer layers: embeddings 0, layers 1-2, top 3
    groups = optimizer_groups(model, 0.01, lr=1.0, layer_lr_decay=0.5)
    lr_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    backbone = model.backbone
    assert lr_of[id(model.output.weight)] == 1.0
    assert lr_of[id(backbone.encoder.layer[1].attention.self.query.weight)] == 0.5
    assert lr_of[id(backbone.encoder.layer[0].output.dense.bias)] == 0.25
    assert lr_of[id(backbone.embeddings.word_embeddings.weight)] == 0.125
    assert len(lr_of) == sum(1 for p in model.parameters() if p.requires_grad)  # each parameter once
    assert groups[0]["lr"] == 1.0  # group 0 carries the base lr that the progress line shows


def test_frozen_embeddings_are_left_out_of_the_optimizer(tmp_path):
    from cybulde.training.module import freeze_input_embeddings

    model = tiny_classifier(tmp_path)
    freeze_input_embeddings(model)
    table = model.backbone.embeddings.word_embeddings.weight
    optimized = {id(p) for group in optimizer_groups(model, 0.01, lr=1e-3) for p in group["params"]}
    assert not table.requires_grad and id(table) not in optimized
    assert id(model.backbone.embeddings.position_embeddings.weight) in optimized


def test_module_trains_a_backbone_loaded_in_eval_mode(tmp_path):
    from cybulde.training.module import ClassifierModule

    model = tiny_classifier(tmp_path).eval()
    module = ClassifierModule(model, lr=1e-3, weight_decay=0.0, warmup_ratio=0.0)
    assert all(submodule.training for submodule in module.modules())  # dropout is active


def test_training_leaves_frozen_embeddings_untouched(tmp_path):
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from cybulde.training.module import ClassifierModule, freeze_input_embeddings

    model = tiny_classifier(tmp_path)
    freeze_input_embeddings(model)
    table = model.backbone.embeddings.word_embeddings.weight.detach().clone()
    top_layer = model.backbone.encoder.layer[1].output.dense.weight.detach().clone()
    ids = torch.randint(5, 50, (8, 6))
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(8) % 2}]
    module = ClassifierModule(model, lr=1e-2, weight_decay=0.01, warmup_ratio=0.0, layer_lr_decay=0.5)
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, train_dataloaders=DataLoader(batches * 3, batch_size=None))
    assert torch.equal(model.backbone.embeddings.word_embeddings.weight, table)
    assert not torch.equal(model.backbone.encoder.layer[1].output.dense.weight, top_layer)
