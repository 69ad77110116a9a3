"""A head type added in this one file runs through export, evaluation and scoring.

Evaluation tunes a threshold, serving accepts one, and both decide with it, only because the head
answers `decides_by_threshold`: nothing outside `cybulde.models.heads` tests a head's kind.
"""

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from cybulde.config.schema import Config
from cybulde.evaluation.evaluate import evaluate_to_files
from cybulde.models.heads import HEADS, SoftmaxHead
from cybulde.serving.errors import ServingError
from cybulde.serving.predict import predict
from cybulde.serving.scorer import TextScorer
from tests.helpers.tiny_model import make_data_dir, make_model_dir

FP32 = "32-true"


class ThresholdSoftmaxHead(SoftmaxHead):
    """Softmax probabilities; on two labels a threshold on the positive class decides."""

    kind = "threshold_softmax"

    @property
    def decides_by_threshold(self) -> bool:
        return self.num_labels == 2


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setitem(HEADS, ThresholdSoftmaxHead.kind, ThresholdSoftmaxHead)
    data_dir = make_data_dir(tmp_path / "data" / "fetched")
    make_model_dir(tmp_path / "model", data_dir, head=ThresholdSoftmaxHead.kind)
    return tmp_path


def test_the_exported_model_keeps_the_new_head(project):
    scorer = TextScorer.from_dir(project / "model", precision=FP32)
    assert isinstance(scorer.model.head, ThresholdSoftmaxHead)
    assert scorer.decides_by_threshold


def test_evaluation_tunes_the_threshold_on_validation_and_applies_it_on_test(project, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("scratch")
    validation = evaluate_to_files(Config(), "validation", project, scratch)
    threshold = validation.metrics["threshold"]
    assert isinstance(threshold, float) and 0 < threshold < 1

    test = evaluate_to_files(Config(), "test", project, scratch)
    assert test.metrics["threshold"] == threshold
    frame = pq.read_table(project / "predictions" / "test.parquet").to_pandas()
    expected = np.where(frame["prob_offensive"] >= threshold, "offensive", "not_offensive")
    clear = (frame["prob_offensive"] - threshold).abs() > 1e-5  # the file's probabilities are rounded
    assert (frame["predicted"][clear] == expected[clear]).all()


def test_scoring_accepts_a_threshold_and_decides_with_it(project, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("you are an idiot\nhave a nice day\nwhat a lovely morning\n", encoding="utf-8")

    def labels(threshold):
        table = predict(str(source), str(project / "model"), stdout=io.StringIO(), precision=FP32,
                        threshold=threshold)
        return table["label"].tolist()

    assert labels(1e-6) == ["offensive"] * 3
    assert labels(1 - 1e-6) == ["not_offensive"] * 3


def test_scoring_refuses_a_threshold_the_head_does_not_decide_by(project, monkeypatch):
    monkeypatch.setattr(ThresholdSoftmaxHead, "decides_by_threshold", property(lambda head: False))
    with pytest.raises(ServingError, match="threshold"):
        predict("-", str(project / "model"), stdin=io.BytesIO(b"hello\n"), stdout=io.StringIO(),
                threshold=0.5)
