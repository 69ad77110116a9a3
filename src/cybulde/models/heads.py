"""Classification heads: each decides the number of logits, the loss, probabilities and predictions.

`softmax`: K logits, cross-entropy. `sigmoid`: one-vs-rest logits with binary cross-entropy on the
raw logits (the sigmoid lives inside `binary_cross_entropy_with_logits`; the model never applies it),
and a single logit for a binary task. `probabilities` always returns one column per label.
`multilabel`: one logit per *question* of a multi-source dataset (e.g. abusive?, hate?); labels are a
`[N, Q]` matrix of 1 / 0 / `MISSING` (-1: the row's source cannot answer that question), and the loss
is the binary cross-entropy averaged over the present cells only (`masked_bce`). Its probabilities
are `[N, Q]` (one sigmoid per question) and its decisions `[N, Q]` 0/1, one threshold per question.

A head answers every fact about itself that callers need: `num_outputs`, `loss`, `probabilities`,
`decides_by_threshold` (whether a decision threshold on the positive-class probability may replace
the argmax) and `predict` (the decision, given an optional threshold). Evaluation, serving and
training ask the head; none of them tests a head's kind.

`focal_gamma` > 0 turns either loss into the focal loss (Lin et al. 2017): each example's (or, for
sigmoid, each logit's) cross-entropy `-log p_t` is scaled by `(1 - p_t) ** gamma`, so confidently
right examples count less and the rare, hard ones more. `focal_gamma=0` is the plain loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cybulde.config.schema import Head as HeadKind
from cybulde.errors import CybuldeError

if TYPE_CHECKING:
    import torch


class HeadError(CybuldeError, ValueError):
    """An unknown head kind or an impossible number of labels."""


class Head:
    kind: str = ""
    min_labels: int = 2  # a softmax or sigmoid classifier needs two classes to choose between

    def __init__(self, num_labels: int) -> None:
        if num_labels < self.min_labels:
            raise HeadError(f"a {type(self).__name__} needs at least {self.min_labels} labels, "
                            f"got num_labels={num_labels}")
        self.num_labels = num_labels

    @property
    def num_outputs(self) -> int:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor,
             class_weights: torch.Tensor | None = None, focal_gamma: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def decides_by_threshold(self) -> bool:
        """Whether `predict` may compare the positive-class probability (label 1) with a threshold."""
        return False

    def predict(self, probabilities: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Label indices `[N]`: `probabilities[:, 1] >= threshold` where the head decides by a
        threshold and one is given, else the argmax."""
        if threshold is not None and self.decides_by_threshold:
            return (probabilities[:, 1] >= threshold).long()
        return probabilities.argmax(dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_labels={self.num_labels})"


class SoftmaxHead(Head):
    kind = HeadKind.softmax.value

    @property
    def num_outputs(self) -> int:
        return self.num_labels

    def loss(self, logits, labels, class_weights=None, focal_gamma=0.0):
        # torch is imported where a head computes: asking a head its facts must not load it
        import torch.nn.functional as F

        logits = logits.float()
        weight = None if class_weights is None else class_weights.to(logits.device, logits.dtype)
        if not focal_gamma:
            return F.cross_entropy(logits, labels, weight=weight)
        per_example = focal(F.cross_entropy(logits, labels, reduction="none"), focal_gamma)
        return weighted_mean(per_example, labels, weight)

    def probabilities(self, logits):
        return logits.float().softmax(dim=-1)


class SigmoidHead(Head):
    """One-vs-rest: a binary task has one logit (the positive class, label 1)."""

    kind = HeadKind.sigmoid.value

    @property
    def is_binary(self) -> bool:
        return self.num_labels == 2

    @property
    def num_outputs(self) -> int:
        return 1 if self.is_binary else self.num_labels

    @property
    def decides_by_threshold(self) -> bool:
        return self.is_binary

    def loss(self, logits, labels, class_weights=None, focal_gamma=0.0):
        import torch.nn.functional as F

        logits = logits.float()
        if self.is_binary:
            targets = labels.to(logits.dtype).unsqueeze(-1)
        else:
            targets = F.one_hot(labels, self.num_labels).to(logits.dtype)
        per_logit = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        per_example = focal(per_logit, focal_gamma).mean(dim=-1)
        weight = None if class_weights is None else class_weights.to(logits.device, logits.dtype)
        return weighted_mean(per_example, labels, weight)

    def probabilities(self, logits):
        import torch

        scores = logits.float().sigmoid()
        if self.is_binary:
            return torch.cat([1.0 - scores, scores], dim=-1)
        return scores  # one-vs-rest scores: rows need not sum to 1


def focal(cross_entropy: torch.Tensor, gamma: float) -> torch.Tensor:
    """`(1 - p_t) ** gamma * CE` elementwise, with `p_t = exp(-CE)` the probability given to the truth."""
    import torch

    if not gamma:
        return cross_entropy
    return (-torch.expm1(-cross_entropy)).pow(gamma) * cross_entropy  # 1 - exp(-CE), accurate near 0


def weighted_mean(per_example: torch.Tensor, labels: torch.Tensor,
                  class_weights: torch.Tensor | None) -> torch.Tensor:
    """The plain mean, or weighted cross-entropy's normalisation `sum(w_i * l_i) / sum(w_i)`."""
    if class_weights is None:
        return per_example.mean()
    weights = class_weights[labels]
    return (weights * per_example).sum() / weights.sum()


MISSING = -1  # a label cell that the row's source does not answer (multi-label datasets)


class MultiLabelHead(Head):
    """One logit per question; each question is decided by its own threshold (0.5 unless given)."""

    kind = HeadKind.multilabel.value
    min_labels = 1  # one question (label) is enough: each is a yes/no of its own

    @property
    def num_outputs(self) -> int:
        return self.num_labels

    @property
    def decides_by_threshold(self) -> bool:
        return True

    def loss(self, logits, labels, class_weights=None, focal_gamma=0.0):
        """`class_weights`, if given, is one positive-class weight per question (`pos_weight`)."""
        return masked_bce(logits, labels, class_weights, focal_gamma)

    def probabilities(self, logits):
        return logits.float().sigmoid()

    def predict(self, probabilities, threshold=None):
        """`[N, Q]` 0/1: question q is answered yes where `probabilities[:, q] >= threshold[q]`
        (`threshold`: one number for every question, a sequence or tensor of Q, or None for 0.5)."""
        import torch

        cut = torch.as_tensor(0.5 if threshold is None else threshold, dtype=probabilities.dtype,
                              device=probabilities.device)
        return (probabilities >= cut).long()


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None,
               focal_gamma: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy over the present cells of `labels` (`MISSING` cells contribute nothing),
    divided by the number of present cells; 0 (with a gradient) when no cell is present."""
    import torch.nn.functional as F

    logits = logits.float()
    present = labels != MISSING
    targets = labels.clamp(min=0).to(logits.dtype)
    weight = None if pos_weight is None else pos_weight.to(logits.device, logits.dtype)
    per_cell = F.binary_cross_entropy_with_logits(logits, targets, reduction="none", pos_weight=weight)
    per_cell = focal(per_cell, focal_gamma) * present
    return per_cell.sum() / present.sum().clamp(min=1)


# Each head class under its `kind`, the name config.json records (the schema's `Head` enum lists
# the kinds `model.head` may take).
HEADS: dict[str, type[Head]] = {head.kind: head for head in (SoftmaxHead, SigmoidHead, MultiLabelHead)}
HEAD_KINDS = tuple(member.value for member in HeadKind)  # the schema's enum (name kept for existing importers)


def make_head(kind: str | HeadKind, num_labels: int) -> Head:
    head_class = HEADS.get(str(getattr(kind, "value", kind)))
    if head_class is None:
        raise HeadError(f"unknown head {kind!r}: expected one of {list(HEAD_KINDS)}")
    return head_class(num_labels)
