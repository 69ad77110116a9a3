"""Validation metrics of training that torchmetrics lacks: the multi-label checkpoint-selection F1.

`SourceMacroF1` is val/macro_f1 of a multi-label (multi-source) model: for each source, the mean
over the questions it answers (those its validation rows answer both yes and no) of the binary
macro-F1 at the head's decisions (threshold 0.5): the mean of the F1 of "yes" and of "no", each 0
where it has no true and no predicted cells (`zero_division=0`, as evaluation computes it); then
the mean over the sources that answer anything. Its state is a confusion count per source, question,
truth and decision, summed over DDP ranks, so the value is that of one process scoring every row.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from cybulde.models.heads import MISSING


class SourceMacroF1(Metric):
    """Mean over sources of the mean over their answered questions of binary macro-F1 (see the module)."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, num_sources: int, num_questions: int) -> None:
        super().__init__()
        if num_sources < 1 or num_questions < 1:
            raise ValueError(f"need at least one source and one question, got {num_sources} and {num_questions}")
        self.num_sources, self.num_questions = num_sources, num_questions
        # counts[source, question, truth, decision]
        self.add_state("counts", default=torch.zeros(num_sources, num_questions, 2, 2, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, predictions: torch.Tensor, labels: torch.Tensor, sources: torch.Tensor) -> None:
        """`predictions` `[B, Q]` 0/1, `labels` `[B, Q]` 1/0/`MISSING`, `sources` `[B]` source indices."""
        present = labels != MISSING
        questions = torch.arange(self.num_questions, device=labels.device).expand_as(labels)
        cells = ((sources.unsqueeze(-1) * self.num_questions + questions) * 2 + labels.clamp(min=0)) * 2 \
            + predictions.long()
        self.counts += torch.bincount(cells[present], minlength=self.counts.numel()).view_as(self.counts)

    def compute(self) -> torch.Tensor:
        return source_macro_f1(self.counts)


def source_macro_f1(counts: torch.Tensor) -> torch.Tensor:
    """The metric from `counts[source, question, truth, decision]` (see the module docstring)."""
    counts = counts.double()
    true_no, false_yes = counts[..., 0, 0], counts[..., 0, 1]
    false_no, true_yes = counts[..., 1, 0], counts[..., 1, 1]
    f1_yes = _safe_ratio(2 * true_yes, 2 * true_yes + false_yes + false_no)
    f1_no = _safe_ratio(2 * true_no, 2 * true_no + false_no + false_yes)
    # [source, question]: answered both yes and no (a question a source answers one way only is left out,
    # as evaluation leaves it out: its macro-F1 would be capped at 0.5 whatever the model does)
    answered = (counts[..., 0, :].sum(dim=-1) > 0) & (counts[..., 1, :].sum(dim=-1) > 0)
    questions_answered = answered.sum(dim=-1)
    per_source = _safe_ratio(((f1_yes + f1_no) / 2 * answered).sum(dim=-1), questions_answered)
    sources_answering = questions_answered > 0
    if not sources_answering.any():
        return torch.zeros((), dtype=torch.float32, device=counts.device)
    return per_source[sources_answering].mean().float()


def _safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.zeros_like(numerator))
