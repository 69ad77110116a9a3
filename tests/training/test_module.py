import math

import pytest
import torch
import torch.nn.functional as F
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
    from tests.helpers.tiny_data import make_data_dir

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


@pytest.mark.parametrize(("schedule", "lr_at_step_4"), [("linear", 0.75), ("cosine", 0.5 * (1 + math.cos(math.pi / 4)))])
def test_warmup_then_linear_or_cosine_decay(schedule, lr_at_step_4):
    from cybulde.training.module import warmup_then_decay

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_then_decay(optimizer, schedule, warmup_steps=2, total_steps=10)
    rates = []
    for _ in range(11):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # By hand: warmup 0, 0.5, 1.0; then after 2 of the 8 decay steps linear gives 6/8, cosine (1 + cos(pi/4)) / 2.
    assert rates[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert rates[4] == pytest.approx(lr_at_step_4)
    assert rates[6] == pytest.approx(0.5) and rates[10] == pytest.approx(0.0, abs=1e-12)


def batches_of(ids, labels, sizes):
    batches, start = [], 0
    for size in sizes:
        part = slice(start, start + size)
        batches.append({"input_ids": ids[part], "attention_mask": torch.ones_like(ids[part]), "labels": labels[part]})
        start += size
    return batches


def test_validation_loss_and_macro_f1_are_over_examples_not_batches(tmp_path):
    import lightning.pytorch as pl
    from sklearn.metrics import f1_score
    from torch.utils.data import DataLoader

    from cybulde.training.module import ClassifierModule

    torch.manual_seed(0)
    model = tiny_classifier(tmp_path)
    module = ClassifierModule(model, lr=1e-3, weight_decay=0.0, warmup_ratio=0.0)
    ids, labels = torch.randint(5, 50, (7, 6)), torch.tensor([0, 1, 1, 0, 1, 0, 0])
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.validate(module, DataLoader(batches_of(ids, labels, [5, 2]), batch_size=None), verbose=False)
    model.eval()
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids))
    # All 7 rows at once: a batch-mean of the two batch means would weigh the 2-row batch like the 5-row one.
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)
    assert trainer.callback_metrics["val/macro_f1"].item() == pytest.approx(
        f1_score(labels, logits.argmax(1), average="macro", zero_division=0), abs=1e-6)


def test_ema_weights_are_validated_and_saved_in_a_weights_only_checkpoint(tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    from cybulde.training.callbacks import AveragedWeights
    from cybulde.training.module import ClassifierModule

    torch.manual_seed(0)
    model = tiny_classifier(tmp_path)
    module = ClassifierModule(model, lr=5e-2, weight_decay=0.0, warmup_ratio=0.0)
    ids, labels = torch.randint(5, 50, (12, 6)), torch.arange(12) % 2
    train_batches = batches_of(ids, labels, [4, 4, 4])
    snapshots = []

    class Snapshot(pl.Callback):  # the raw training weights after every optimizer step
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            snapshots.append({k: v.detach().clone() for k, v in pl_module.model.named_parameters()})

    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="best", monitor="val/macro_f1", mode="max",
                                 save_weights_only=True)
    full = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="full", monitor="val/loss", mode="min")
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", num_sanity_val_steps=0,
                         callbacks=[AveragedWeights(decay=0.5), Snapshot(), checkpoint, full])
    trainer.fit(module, DataLoader(train_batches, batch_size=None),
                DataLoader(batches_of(ids, labels, [6, 6]), batch_size=None))

    # By hand: the average starts as the weights after step 1, then ema = 0.5 * ema + 0.5 * weights.
    ema = dict(snapshots[0])
    for weights in snapshots[1:]:
        ema = {name: 0.5 * ema[name] + 0.5 * weights[name] for name in ema}
    saved = torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"]
    for name, expected in ema.items():
        assert torch.allclose(saved[f"model.{name}"], expected, atol=1e-6), name
    assert not all(torch.equal(snapshots[-1][name], ema[name]) for name in ema)  # the raw weights differ
    # A full checkpoint, written while the average is in place, keeps Lightning's layout for a resume.
    resumable = torch.load(full.best_model_path, weights_only=True)
    for name, expected in ema.items():
        assert torch.allclose(resumable["state_dict"][f"model.{name}"], expected, atol=1e-6), name
        assert torch.equal(resumable["current_model_state"][f"model.{name}"], snapshots[-1][name]), name
    model.eval()  # what was validated: the averaged weights (now also the module's, after training)
    with torch.no_grad():
        expected_loss = F.cross_entropy(model(ids, torch.ones_like(ids)), labels).item()
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(expected_loss, abs=1e-5)


def test_positive_weights_are_no_over_yes_over_the_present_train_cells():
    from cybulde.training.module import positive_weights

    answers = {"alpha": {"abusive": {"yes": 10, "no": 30, "missing": 0}, "hate": {"yes": 4, "no": 36, "missing": 0}},
               "beta": {"abusive": {"yes": 10, "no": 10, "missing": 0}, "hate": {"yes": 0, "no": 0, "missing": 20}}}
    # abusive: (30 + 10) / (10 + 10) = 2; hate: 36 / 4 = 9 (beta's missing cells count for nothing)
    assert positive_weights(answers, ["abusive", "hate"]).tolist() == pytest.approx([2.0, 9.0])
    assert positive_weights({"a": {"q": {"yes": 0, "no": 5, "missing": 0}}}, ["q"]).tolist() == [5.0]


def test_multilabel_validation_masks_the_loss_and_scores_per_source(tmp_path):
    import json

    import lightning.pytorch as pl
    from sklearn.metrics import f1_score
    from torch.utils.data import DataLoader

    from cybulde.config.schema import ModelConfig
    from cybulde.models.classifier import build_classifier
    from cybulde.models.heads import masked_bce
    from cybulde.training.module import ClassifierModule
    from tests.helpers.tiny_data import make_multilabel_data_dir

    data_dir = make_multilabel_data_dir(tmp_path / "data")
    manifest = json.loads((data_dir / "manifest.json").read_text())
    torch.manual_seed(0)
    model = build_classifier(ModelConfig(backbone="scratch", head="multilabel"), manifest, data_dir / "tokenizer")
    assert model.head.num_outputs == 2 and model.source_names == ["alpha", "beta", "gamma"]
    ids = torch.randint(5, 50, (8, 6))
    with torch.no_grad():  # centre each question's logits on these rows: decisions of both kinds
        model.output.bias.sub_(model.eval()(ids, torch.ones_like(ids)).median(dim=0).values - 1e-4)
    module = ClassifierModule(model, lr=1e-3, weight_decay=0.0, warmup_ratio=0.0)
    labels = torch.tensor([[1, 1], [0, 0], [1, -1], [0, -1], [1, 0], [-1, 1], [-1, 0], [0, 1]])
    sources = torch.tensor([0, 0, 1, 1, 0, 2, 2, 0])
    batches = [{"input_ids": ids[part], "attention_mask": torch.ones_like(ids[part]), "labels": labels[part],
                "source": sources[part]} for part in (slice(0, 5), slice(5, 8))]
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.validate(module, DataLoader(batches, batch_size=None), verbose=False)
    model.eval()
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids))
    # The loss over the 13 present cells of both batches at once (not a mean of two batch means).
    assert trainer.callback_metrics["val/loss"].item() == pytest.approx(masked_bce(logits, labels).item(), rel=1e-5)
    decisions = (logits.sigmoid() >= 0.5).long()

    def macro(source, question):
        rows = (sources == source) & (labels[:, question] != -1)
        return f1_score(labels[rows, question], decisions[rows, question], average="macro", labels=[0, 1],
                        zero_division=0)

    expected = ((macro(0, 0) + macro(0, 1)) / 2 + macro(1, 0) + macro(2, 1)) / 3
    assert 0 < expected < 1 and trainer.callback_metrics["val/macro_f1"].item() == pytest.approx(expected, abs=1e-6)
