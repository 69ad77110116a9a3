"""The multi-label val/macro_f1, against sklearn's f1_score on hand-written arrays."""

import pytest
import torch
from sklearn.metrics import f1_score
from torchmetrics.utilities.data import dim_zero_sum

from cybulde.training.metrics import SourceMacroF1, source_macro_f1

# Two sources, two questions (abusive, hate); -1: the source cannot answer. Source 0 answers both,
# source 1 only `abusive`. Rows:           labels      prediction  source
ROWS = [((1, 1), (1, 1), 0),
        ((1, 0), (1, 1), 0),
        ((0, 0), (0, 0), 0),
        ((0, 0), (1, 0), 0),
        ((1, 1), (0, 1), 0),
        ((1, -1), (1, 0), 1),
        ((0, -1), (0, 1), 1),
        ((0, -1), (1, 1), 1),
        ((1, -1), (1, 0), 1),
        ((0, -1), (0, 0), 1)]


def expected_by_hand() -> float:
    def macro(truth, predicted):
        return f1_score(truth, predicted, average="macro", labels=[0, 1], zero_division=0)

    # Source 0, abusive: truth 1 1 0 0 1, decisions 1 1 0 1 0; hate: truth 1 0 0 0 1, decisions 1 1 0 0 1.
    source_0 = (macro([1, 1, 0, 0, 1], [1, 1, 0, 1, 0]) + macro([1, 0, 0, 0, 1], [1, 1, 0, 0, 1])) / 2
    # Source 1 answers abusive only: truth 1 0 0 1 0, decisions 1 0 1 1 0 (its hate decisions do not count).
    source_1 = macro([1, 0, 0, 1, 0], [1, 0, 1, 1, 0])
    return (source_0 + source_1) / 2


def tensors(rows):
    labels = torch.tensor([row[0] for row in rows])
    predictions = torch.tensor([row[1] for row in rows])
    sources = torch.tensor([row[2] for row in rows])
    return predictions, labels, sources


def test_source_macro_f1_is_the_mean_over_sources_of_their_questions_macro_f1():
    # By hand: source 0 abusive: F1(yes) = 2*2/(4+1+1) = 2/3, F1(no) = 2*1/(2+1+1) = 1/2 -> 7/12;
    # hate: F1(yes) = 4/5, F1(no) = 2*2/(4+1) = 4/5 -> 4/5; source 0: (7/12 + 4/5) / 2 = 83/120.
    # Source 1 abusive: F1(yes) = 4/5, F1(no) = 4/5 -> 4/5. Mean: (83/120 + 96/120) / 2 = 179/240.
    assert expected_by_hand() == pytest.approx(179 / 240)
    metric = SourceMacroF1(num_sources=2, num_questions=2)
    metric.update(*tensors(ROWS[:3]))
    metric.update(*tensors(ROWS[3:]))  # batches of any size: the counts add up
    assert metric.compute().item() == pytest.approx(179 / 240, abs=1e-6)


def test_rank_states_summed_equal_one_process_scoring_every_row():
    ranks = [SourceMacroF1(2, 2), SourceMacroF1(2, 2)]
    ranks[0].update(*tensors(ROWS[0::2]))
    ranks[1].update(*tensors(ROWS[1::2]))
    assert ranks[0]._reductions["counts"] is dim_zero_sum  # what DDP does with the ranks' states
    summed = ranks[0].counts + ranks[1].counts
    assert source_macro_f1(summed).item() == pytest.approx(expected_by_hand(), abs=1e-6)


def test_a_source_without_answered_rows_is_left_out_and_nothing_answered_gives_zero():
    metric = SourceMacroF1(num_sources=3, num_questions=2)  # source 2 has no validation rows
    metric.update(*tensors(ROWS))
    assert metric.compute().item() == pytest.approx(expected_by_hand(), abs=1e-6)
    empty = SourceMacroF1(num_sources=2, num_questions=2)
    empty.update(torch.tensor([[1, 1]]), torch.tensor([[-1, -1]]), torch.tensor([0]))
    assert empty.compute().item() == 0.0


def test_a_source_that_answers_every_question_one_way_only_counts_for_nothing():
    metric = SourceMacroF1(num_sources=2, num_questions=1)
    # source 0: yes and no answers; source 1: only "no" (left out, not scored 0.5 or 0)
    metric.update(torch.tensor([[1], [0], [0], [1]]), torch.tensor([[1], [0], [0], [0]]), torch.tensor([0, 0, 1, 1]))
    expected = f1_score([1, 0], [1, 0], average="macro", labels=[0, 1], zero_division=0)
    assert expected == 1.0 and metric.compute().item() == pytest.approx(expected)


def test_a_question_a_source_answers_one_way_only_is_left_out():
    # counts[source, question, truth, decision]; question 1 is only ever answered "no" (OLID's hate).
    counts = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    counts[0, 0, 1, 1], counts[0, 0, 1, 0], counts[0, 0, 0, 0] = 3, 1, 4  # TP 3, FN 1, TN 4, FP 0
    counts[0, 1, 0, 0], counts[0, 1, 0, 1] = 5, 1
    by_hand = (6 / 7 + 8 / 9) / 2  # F1 of yes 2*3/(2*3+0+1), of no 2*4/(2*4+1+0)
    assert source_macro_f1(counts).item() == pytest.approx(by_hand, rel=1e-6)
