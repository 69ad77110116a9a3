"""Inference in the resolved precision: bf16 autocast where the model's `train.precision` resolves to it."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
import torch

from cybulde.evaluation.inference import collect_outputs
from cybulde.loading.datamodule import TextDataModule
from cybulde.models.export import load_model
from cybulde.serving.scorer import TextScorer
from tests.helpers.cpus import WITH_BF16, WITHOUT_BF16, fake_cpu
from tests.helpers.tiny_data import make_multilabel_data_dir
from tests.helpers.tiny_model import make_data_dir, make_model_dir


@pytest.fixture(scope="module")
def data_and_model(tmp_path_factory):
    base = tmp_path_factory.mktemp("inference")
    data_dir = make_data_dir(base / "data")
    return data_dir, make_model_dir(base / "model", data_dir)


def trained_with(model_dir, tmp_path, precision):
    """A copy of `model_dir` whose training recorded `train.precision: precision`."""
    copy = shutil.copytree(model_dir, tmp_path / f"model-{precision}")
    config = json.loads((copy / "config.json").read_text())
    config["metadata"]["train_params"] = {"train": {"precision": precision}}
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_collect_outputs_in_bf16_is_the_model_under_bf16_autocast_with_float32_logits(data_and_model):
    data_dir, model_dir = data_and_model
    model = load_model(model_dir).model
    loader = TextDataModule(data_dir, batch_size=64, seed=0).eval_dataloader("validation")
    fp32 = collect_outputs(model, loader, 20)
    bf16 = collect_outputs(model, loader, 20, precision="bf16-mixed")
    [batch] = list(loader)  # the other path: the whole split in one batch, autocast by hand
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        by_hand = model(batch["input_ids"], batch["attention_mask"])
    in_row_order = torch.empty_like(bf16.logits)
    in_row_order[batch["index"]] = by_hand.float()  # the batch holds the rows shortest first
    assert bf16.logits.dtype == torch.float32
    assert torch.equal(bf16.logits, in_row_order)
    assert not torch.equal(bf16.logits, fp32.logits)  # bf16 rounding shows
    assert torch.allclose(bf16.logits, fp32.logits, atol=0.25)


@pytest.mark.parametrize(("cpuinfo", "expected"), [(WITH_BF16, "bf16-mixed"), (WITHOUT_BF16, "32-true")],
                         ids=["bf16-cpu", "fp32-cpu"])
def test_text_scorer_follows_the_same_rule(data_and_model, tmp_path, monkeypatch, cpuinfo, expected):
    _, model_dir = data_and_model
    fake_cpu(tmp_path, monkeypatch, cpuinfo)
    scorer = TextScorer.from_dir(trained_with(model_dir, tmp_path, "auto"))
    assert scorer.precision == expected
    texts = ["the cat idiot stupid", "a day in the park", "hate ugly loser"]
    fp32 = TextScorer.from_dir(trained_with(model_dir, tmp_path, "32-true")).probabilities(texts)
    probabilities = scorer.probabilities(texts)
    assert torch.equal(probabilities, fp32) == (expected == "32-true")
    assert torch.allclose(probabilities, fp32, atol=0.05)


def test_collect_outputs_of_a_multilabel_model_keeps_missing_answers_and_averages_over_present_ones(tmp_path):
    data_dir = make_multilabel_data_dir(tmp_path / "data")
    model = load_model(make_model_dir(tmp_path / "model", data_dir, head="multilabel")).model
    datamodule = TextDataModule(data_dir, batch_size=7, seed=0, group_by_length=False)
    num_rows = len(datamodule.split("validation"))
    outputs = collect_outputs(model, datamodule.eval_dataloader("validation"), num_rows)

    stored = torch.tensor(pq.read_table(data_dir / "validation.parquet").column("labels").to_pylist())
    assert torch.equal(outputs.labels, stored)  # row order, -1 where a source does not answer
    assert bool((stored == -1).any()) and bool((stored != -1).any())
    present = stored != -1  # by hand: the mean binary cross-entropy over the present answers only
    probabilities = torch.sigmoid(outputs.logits.double())[present]
    answers = stored[present].double()
    by_hand = -(answers * probabilities.log() + (1 - answers) * (1 - probabilities).log()).mean()
    assert outputs.loss == pytest.approx(float(by_hand), rel=1e-5)
