import numpy as np
import pytest
from sklearn.metrics import f1_score

from cybulde.evaluation.thresholds import (
    ThresholdError,
    candidate_thresholds,
    macro_f1_at,
    parse_threshold,
    tune_threshold,
)


def brute_force_macro_f1(threshold, scores, labels):
    preds = (np.asarray(scores) >= threshold).astype(int)
    return f1_score(labels, preds, average="macro", labels=[0, 1], zero_division=0)


def test_separable_scores_get_a_threshold_between_the_classes():
    scores = [0.1, 0.2, 0.3, 0.7, 0.8]
    labels = [0, 0, 0, 1, 1]
    assert tune_threshold(scores, labels) == pytest.approx(0.5)  # midpoint of 0.3 and 0.7


def test_hand_checked_case_prefers_a_low_threshold():
    # labels 0: 0.05, 0.3 ; labels 1: 0.2, 0.25, 0.6
    scores = [0.05, 0.2, 0.25, 0.3, 0.6]
    labels = [0, 1, 1, 0, 1]
    # t=0.125: TP=3 FP=1 FN=0 TN=1 -> F1+ = 6/7, F1- = 2/3 -> 0.761905 (the best)
    # t=0.45 : TP=1 FP=0 FN=2 TN=2 -> F1+ = 0.5, F1- = 4/6  -> 0.583333
    assert tune_threshold(scores, labels) == pytest.approx(0.125)
    assert macro_f1_at(np.array([0.125]), scores, labels)[0] == pytest.approx((6 / 7 + 2 / 3) / 2)


def test_vectorised_f1_matches_sklearn_on_every_candidate():
    rng = np.random.default_rng(3)
    scores = np.round(rng.uniform(size=300), 2)  # many ties
    labels = (rng.uniform(size=300) < scores).astype(int)
    candidates = candidate_thresholds(scores)
    fast = macro_f1_at(candidates, scores, labels)
    slow = [brute_force_macro_f1(t, scores, labels) for t in candidates]
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    best = tune_threshold(scores, labels)
    assert brute_force_macro_f1(best, scores, labels) == pytest.approx(max(slow))


def test_ties_break_towards_one_half_deterministically():
    # Every threshold between 0.2 and 0.8 separates perfectly; 0.5 is one of the candidates.
    scores = [0.1, 0.2, 0.8, 0.9]
    labels = [0, 0, 1, 1]
    assert tune_threshold(scores, labels) == 0.5
    # A shuffled copy gives the same answer.
    assert tune_threshold(scores[::-1], labels[::-1]) == 0.5


def test_candidates_cover_both_extremes_and_stay_probabilities():
    candidates = candidate_thresholds([0.0, 1.0])
    assert candidates.min() > 0.0 and candidates.max() < 1.0
    assert 0.5 in candidates


def test_result_is_rounded_to_six_decimals():
    scores = [0.1234561, 0.1234569, 0.9]
    labels = [0, 1, 1]
    value = tune_threshold(scores, labels)
    assert value == round(value, 6)


def test_empty_or_mismatched_inputs_fail_clearly():
    with pytest.raises(ThresholdError, match="empty"):
        tune_threshold([], [])
    with pytest.raises(ThresholdError, match="3 probabilities but 2 labels"):
        tune_threshold([0.1, 0.2, 0.3], [0, 1])


def test_parse_threshold():
    assert parse_threshold("tune") is None
    assert parse_threshold("0.3") == 0.3
    with pytest.raises(ThresholdError, match=r"\(0, 1\)"):
        parse_threshold("1.5")
    with pytest.raises(ThresholdError, match="'tune' or a number"):
        parse_threshold("high")
