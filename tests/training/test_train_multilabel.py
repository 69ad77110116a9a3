"""`train(cfg)` on a multi-label (multi-source) version, in one process on a tiny from-config BERT."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from sklearn.metrics import f1_score

from cybulde.models.export import load_model
from cybulde.training import train as train_module
from tests.helpers import tiny_train
from tests.helpers.weights import assert_same_weights

# Class weights and temperature sampling ride along: both change what the multi-label loss sees.
RECIPE = {"train.class_weights": True, "train.source_temperature": 2.0}


def run_in_process(project, monkeypatch, overrides=()):
    monkeypatch.chdir(project)
    tiny_train.use_test_doubles(train_module, monkeypatch)
    return train_module.train(tiny_train.load(project, overrides))


def validation_rows(project: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    return pq.read_table(project / "data" / "fetched" / "validation.parquet").to_pydict()


def mean_over_sources(rows: dict[str, list], score: Callable[[list[int], list[int], int], float]) -> float:
    """The mean over sources of the mean over the questions each answers of `score(truth, row indices,
    question)`, taken on the rows of that source whose label for that question is present."""
    per_source = []
    for source in ("alpha", "beta", "gamma"):
        per_question = []
        for question in range(2):
            indices = [index for index, (labels, name) in enumerate(zip(rows["labels"], rows["source"], strict=True))
                       if name == source and labels[question] != -1]
            if indices:
                per_question.append(score([rows["labels"][index][question] for index in indices], indices, question))
        per_source.append(sum(per_question) / len(per_question))
    return sum(per_source) / len(per_source)


def binary_macro_f1(truth: list[int], predicted: list[int]) -> float:
    return f1_score(truth, predicted, average="macro", labels=[0, 1], zero_division=0)


def validation_scores(project: Path, pos_weight: list[float] | None = None) -> tuple[float, float]:
    """val/macro_f1 and val/loss of the exported model, recomputed with sklearn and `masked_bce` from its
    logits for the validation rows, each scored alone (no padding) in this process."""
    from cybulde.models.heads import masked_bce

    rows = validation_rows(project)
    model = load_model(project / "model").model
    with torch.no_grad():
        logits = torch.cat([model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
                            for ids in rows["input_ids"]])
    decisions = (logits.sigmoid() >= 0.5).long().tolist()
    score = mean_over_sources(rows, lambda truth, indices, question: binary_macro_f1(
        truth, [decisions[index][question] for index in indices]))
    weight = None if pos_weight is None else torch.tensor(pos_weight)
    return score, masked_bce(logits, torch.tensor(rows["labels"]), weight).item()


def best_constant_score(project: Path) -> float:
    """The per-source validation macro-F1 of the best constant answer for each source and question."""
    return mean_over_sources(validation_rows(project), lambda truth, indices, question: max(
        binary_macro_f1(truth, [answer] * len(truth)) for answer in (0, 1)))


def test_a_multilabel_version_trains_selects_on_per_source_macro_f1_and_exports(tmp_path, monkeypatch):
    project = tiny_train.make_multilabel_project(tmp_path / "project", {**RECIPE, "train.epochs": 3})
    result = run_in_process(project, monkeypatch)

    metrics = json.loads((project / "metrics" / "train.json").read_text())
    assert metrics == result.metrics and metrics["epochs_run"] >= 2
    assert metrics["global_steps"] == metrics["epochs_run"] * 9  # 72 training rows / 8 per batch
    loaded = load_model(project / "model")
    config = loaded.config
    assert config["head"] == "multilabel" and config["task"] == "multilabel"
    assert config["label_names"] == ["abusive", "hate"] and config["source_names"] == ["alpha", "beta", "gamma"]
    assert loaded.model.head.num_outputs == 2
    assert config["metadata"]["dataset"] == "tiny-multi" and config["metadata"]["train_metrics"] == metrics
    assert config["metadata"]["train_params"]["train"]["source_temperature"] == 2.0
    # The exported weights are those of the best epoch by val/macro_f1: their score, recomputed from scratch.
    # train.class_weights: pos_weight = no / yes over the present train cells, 8 rows of each kind per source:
    # abusive (alpha, beta) 16 no / 32 yes = 0.5, hate (alpha, gamma) 32 no / 16 yes = 2.
    macro_f1, loss = validation_scores(project, pos_weight=[0.5, 2.0])
    assert macro_f1 == pytest.approx(metrics["best_val_macro_f1"], abs=1e-6)
    assert loss == pytest.approx(metrics["best_val_loss"], abs=1e-5)
    # It learnt something: it beats every constant answer (the best one per source and question) on the
    # same rows. 12 validation rows per answered question, a third of one kind: the best constant scores
    # 0.4 each (F1 of the majority class 0.8, of the other 0).
    best_constant = best_constant_score(project)
    assert best_constant == pytest.approx(0.4)
    assert metrics["best_val_macro_f1"] > best_constant


@pytest.mark.slow
def test_two_multilabel_runs_with_the_same_seed_give_identical_weights(tmp_path, monkeypatch):
    first = tiny_train.make_multilabel_project(tmp_path / "first", RECIPE)
    second = tmp_path / "second"
    shutil.copytree(first, second)  # the same data (a freshly trained tokenizer may differ in its ids)
    run_in_process(first, monkeypatch)
    run_in_process(second, monkeypatch)
    assert_same_weights(first / "model", second / "model")
    assert (first / "metrics/train.json").read_text() == (second / "metrics/train.json").read_text()


@pytest.mark.slow
def test_sharded_multilabel_validation_under_two_ranks_equals_one_process_scoring_every_row(tmp_path):
    """2 gloo ranks under torchrun, 36 validation rows of 3 sources (each rank scores 18): the recorded
    metrics of the exported weights are those of scoring every row with them in one process."""
    from tests.helpers.ports import free_port
    from tests.training.test_train import torchrun, wait_all

    project = tiny_train.make_multilabel_project(
        tmp_path / "project", {"launch.nproc_per_node": 2, "train.global_batch_size": 16,
                               "train.source_temperature": 2.0})
    wait_all([torchrun(project, 1, 2, free_port())])
    metrics = json.loads((project / "metrics/train.json").read_text())
    macro_f1, loss = validation_scores(project)
    assert macro_f1 == pytest.approx(metrics["best_val_macro_f1"], abs=1e-6)
    assert loss == pytest.approx(metrics["best_val_loss"], abs=1e-5)


def refuse_any_work(monkeypatch) -> None:
    def no_work(*args, **kwargs):
        raise AssertionError("the mismatch must be refused before any model is built")

    monkeypatch.setattr(train_module, "build_module", no_work)


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_a_single_label_head_on_a_multilabel_version_is_refused_before_any_work(tmp_path, monkeypatch, head):
    from cybulde.models.classifier import HeadTaskMismatchError

    project = tiny_train.make_multilabel_project(tmp_path / "project", {"model.head": head})
    refuse_any_work(monkeypatch)
    with pytest.raises(HeadTaskMismatchError, match=f"model.head={head} cannot learn tiny-multi/v1: its task is "
                                                    "'multilabel'.*set model.head=multilabel"):
        run_in_process(project, monkeypatch)
    assert not (project / "model").exists() and not (project / ".cybulde").exists()


def test_the_multilabel_head_on_a_single_label_version_is_refused_before_any_work(tmp_path, monkeypatch):
    from cybulde.models.classifier import HeadTaskMismatchError

    project = tiny_train.make_project(tmp_path / "project", {"model.head": "multilabel"})
    refuse_any_work(monkeypatch)
    with pytest.raises(HeadTaskMismatchError, match="model.head=multilabel needs a multi-label dataset version, "
                                                    "but tiny/v1 has task 'multiclass'"):
        run_in_process(project, monkeypatch)
    assert not (project / "model").exists() and not (project / ".cybulde").exists()
