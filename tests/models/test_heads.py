import math

import pytest
import torch
import torch.nn.functional as F

from cybulde.config.schema import Head as HeadKind
from cybulde.models.heads import HEADS, MISSING, HeadError, MultiLabelHead, SigmoidHead, SoftmaxHead, make_head


def test_softmax_head_uses_cross_entropy_on_k_logits():
    head = make_head("softmax", 3)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    labels = torch.tensor([0, 2])
    assert isinstance(head, SoftmaxHead) and head.num_outputs == 3
    assert torch.allclose(head.loss(logits, labels), F.cross_entropy(logits, labels))
    probabilities = head.probabilities(logits)
    assert probabilities.shape == (2, 3)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(2))
    assert head.predict(probabilities).tolist() == [0, 2]


def test_softmax_class_weights_match_weighted_cross_entropy():
    head = make_head("softmax", 2)
    logits, labels = torch.randn(6, 2), torch.tensor([0, 0, 0, 0, 1, 1])
    weights = torch.tensor([0.75, 1.5])
    assert torch.allclose(head.loss(logits, labels, weights), F.cross_entropy(logits, labels, weight=weights))


def test_binary_sigmoid_head_has_one_logit_and_bce_on_raw_logits():
    head = make_head("sigmoid", 2)
    assert isinstance(head, SigmoidHead) and head.num_outputs == 1
    logits = torch.tensor([[3.0], [-2.0], [0.0]])
    labels = torch.tensor([1, 0, 1])
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    assert torch.allclose(head.loss(logits, labels), expected)
    # A double sigmoid would squash the logits first and give a clearly different loss.
    assert not torch.allclose(head.loss(logits, labels),
                              F.binary_cross_entropy_with_logits(logits.sigmoid()[:, 0], labels.float()))
    probabilities = head.probabilities(logits)
    assert probabilities.shape == (3, 2)
    assert torch.allclose(probabilities[:, 1], logits[:, 0].sigmoid())
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(3))


def test_binary_sigmoid_threshold_decides_the_positive_class():
    head = make_head("sigmoid", 2)
    probabilities = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    assert head.predict(probabilities).tolist() == [0, 1, 1]
    assert head.predict(probabilities, threshold=0.25).tolist() == [1, 1, 1]
    assert head.predict(probabilities, threshold=0.7).tolist() == [0, 0, 1]


def test_only_a_binary_sigmoid_head_decides_by_threshold():
    assert make_head("sigmoid", 2).decides_by_threshold
    assert not make_head("sigmoid", 3).decides_by_threshold
    assert not make_head("softmax", 2).decides_by_threshold
    probabilities = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    assert make_head("softmax", 2).predict(probabilities, threshold=0.25).tolist() == [0, 1]


def test_every_kind_the_schema_lists_has_a_head():
    assert list(HEADS) == [member.value for member in HeadKind]


@pytest.mark.parametrize("kind", list(HEADS))
def test_the_config_knows_which_head_kinds_decide_by_threshold(kind):
    assert HeadKind(kind).may_decide_by_threshold == make_head(kind, 2).decides_by_threshold


def test_multiclass_sigmoid_is_one_vs_rest():
    head = make_head("sigmoid", 3)
    assert head.num_outputs == 3
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    expected = F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, 3).float())
    assert torch.allclose(head.loss(logits, labels), expected)
    assert torch.allclose(head.probabilities(logits), logits.sigmoid())
    assert head.predict(head.probabilities(logits)).tolist() == logits.argmax(dim=1).tolist()


def test_sigmoid_class_weights_weight_each_example_by_its_label():
    head = make_head("sigmoid", 2)
    logits, labels = torch.randn(4, 1), torch.tensor([0, 1, 1, 1])
    weights = torch.tensor([2.0, 1.0])
    per_example = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
    expected = (weights[labels] * per_example).sum() / weights[labels].sum()
    assert torch.allclose(head.loss(logits, labels, weights), expected)


def test_bf16_logits_give_a_float32_loss():
    for kind in ("softmax", "sigmoid"):
        head = make_head(kind, 2)
        logits = torch.randn(4, head.num_outputs).to(torch.bfloat16)
        assert head.loss(logits, torch.tensor([0, 1, 0, 1])).dtype == torch.float32


def test_unknown_head_and_too_few_labels_are_errors():
    with pytest.raises(HeadError, match="unknown head 'tanh'"):
        make_head("tanh", 2)
    with pytest.raises(HeadError, match="at least 2 labels"):
        make_head("softmax", 1)


LOG3 = 1.0986122886681098  # ln 3: softmax([0, ln 3]) = [0.25, 0.75], sigmoid(ln 3) = 0.75


def test_softmax_focal_loss_matches_a_hand_computation():
    head = make_head("softmax", 2)
    logits = torch.tensor([[0.0, LOG3], [0.0, LOG3]])
    labels = torch.tensor([1, 0])  # p_t = 0.75, then 0.25
    # -(1 - p_t)^2 ln p_t: 0.0625 * 0.2876821 = 0.0179801 and 0.5625 * 1.3862944 = 0.7797906
    assert head.loss(logits, labels, focal_gamma=2.0).item() == pytest.approx((0.0179801 + 0.7797906) / 2, abs=1e-6)
    weights = torch.tensor([3.0, 1.0])  # label 0 weighs 3: (1 * 0.0179801 + 3 * 0.7797906) / 4
    assert head.loss(logits, labels, weights, focal_gamma=2.0).item() == pytest.approx(
        (0.0179801 + 3 * 0.7797906) / 4, abs=1e-6)


def test_sigmoid_focal_loss_matches_a_hand_computation():
    head = make_head("sigmoid", 2)
    logits = torch.tensor([[LOG3], [LOG3]])
    labels = torch.tensor([1, 0])  # p_t = 0.75 (positive), then 0.25 (negative, 1 - 0.75)
    assert head.loss(logits, labels, focal_gamma=2.0).item() == pytest.approx((0.0179801 + 0.7797906) / 2, abs=1e-6)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_focal_loss_with_gamma_zero_is_the_plain_loss_and_down_weights_easy_examples(kind):
    head = make_head(kind, 3)
    logits, labels = torch.randn(8, 3), torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    weights = torch.tensor([0.5, 1.0, 2.0])
    assert torch.allclose(head.loss(logits, labels, weights, focal_gamma=0.0), head.loss(logits, labels, weights))
    assert head.loss(logits, labels, focal_gamma=2.0) < head.loss(logits, labels)


# ---- the multi-label head: one logit per question, missing answers masked -----------------------

def _bce(logit: float, target: int) -> float:
    """-log sigmoid(x) for a yes, -log(1 - sigmoid(x)) = log(1 + e^x) for a no (by hand)."""
    return math.log1p(math.exp(-logit)) if target == 1 else math.log1p(math.exp(logit))


def test_masked_multilabel_loss_matches_a_hand_computation_on_a_3x2_example():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0], [-2.0, 0.5]])
    labels = torch.tensor([[1, MISSING], [0, 1], [MISSING, MISSING]])
    present = [(0.0, 1), (1.0, 0), (-1.0, 1)]  # the three answered cells: (logit, truth)
    expected = sum(_bce(logit, truth) for logit, truth in present) / 3
    assert MultiLabelHead(2).loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_missing_cells_carry_no_gradient():
    logits = torch.tensor([[0.3, -0.7], [1.1, 0.2]], requires_grad=True)
    MultiLabelHead(2).loss(logits, torch.tensor([[1, MISSING], [MISSING, 0]])).backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0
    assert logits.grad[0, 0] != 0 and logits.grad[1, 1] != 0


def test_multilabel_pos_weight_scales_the_positive_cells_only():
    logits = torch.tensor([[0.5, -0.5], [-1.0, 1.5]])
    labels = torch.tensor([[1, 0], [0, MISSING]])
    weights = torch.tensor([3.0, 2.0])
    expected = (3.0 * _bce(0.5, 1) + _bce(-0.5, 0) + _bce(-1.0, 0)) / 3
    assert MultiLabelHead(2).loss(logits, labels, weights).item() == pytest.approx(expected, rel=1e-6)


def test_a_batch_without_any_answer_has_zero_loss():
    logits = torch.zeros(2, 2, requires_grad=True)
    loss = MultiLabelHead(2).loss(logits, torch.full((2, 2), MISSING))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(2, 2))


def test_multilabel_head_decides_each_question_by_its_own_threshold():
    head = make_head(HeadKind.multilabel, 2)
    probabilities = head.probabilities(torch.tensor([[0.0, 3.0], [-3.0, -0.1]]))
    assert probabilities.shape == (2, 2)
    assert head.predict(probabilities).tolist() == [[1, 1], [0, 0]]  # 0.5 each: sigmoid(0) = 0.5 counts as yes
    assert head.predict(probabilities, [0.6, 0.4]).tolist() == [[0, 1], [0, 1]]
