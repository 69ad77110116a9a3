"""The decision threshold of a head that decides by one (`Head.decides_by_threshold`), chosen on the
validation split.

An example is predicted positive when its positive-class probability is `>= threshold` (the rule of
`Head.predict`). Any threshold between two neighbouring distinct probabilities gives the same
predictions, so the candidates are the midpoints between neighbours (plus one below the smallest
and one above the largest): they cover every distinct outcome and sit as far as possible from the
validation scores, which makes the choice less brittle on the test split.

Ties in macro-F1 are broken towards the candidate nearest 0.5, then towards the smaller one, so
the result is a deterministic function of the validation scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cybulde.errors import CybuldeError

THRESHOLD_DIGITS = 6


class ThresholdError(CybuldeError, ValueError):
    """A threshold cannot be chosen or is not a valid probability."""


def parse_threshold(setting: str) -> float | None:
    """`evaluation.threshold`: None for "tune", else the fixed probability it names."""
    if str(setting).strip() == "tune":
        return None
    try:
        value = float(setting)
    except ValueError as error:
        raise ThresholdError(
            f"evaluation.threshold must be 'tune' or a number in (0, 1), got {setting!r}") from error
    if not 0.0 < value < 1.0:
        raise ThresholdError(f"evaluation.threshold must be in (0, 1), got {value}")
    return value


def candidate_thresholds(positive_probabilities: Any) -> np.ndarray:
    """Midpoints between neighbouring distinct probabilities, plus one outside each end."""
    scores = np.unique(np.asarray(positive_probabilities, dtype=np.float64))
    if scores.size == 0:
        raise ThresholdError("cannot tune a threshold on an empty validation split")
    inner = (scores[:-1] + scores[1:]) / 2.0
    below = scores[0] / 2.0
    above = (scores[-1] + 1.0) / 2.0
    candidates = np.concatenate([[below], inner, [above]])
    candidates = np.round(candidates, THRESHOLD_DIGITS)
    # Rounding may push a candidate to 0 or 1 (scores at the very ends); keep it a probability.
    candidates = np.clip(candidates, 10.0**-THRESHOLD_DIGITS, 1.0 - 10.0**-THRESHOLD_DIGITS)
    return np.unique(candidates)


def macro_f1_at(thresholds: np.ndarray, positive_probabilities: Any, labels: Any) -> np.ndarray:
    """Binary macro-F1 (mean of both classes' F1) for each threshold, in O((N + C) log N)."""
    scores = np.asarray(positive_probabilities, dtype=np.float64).reshape(-1)
    target = np.asarray(labels).reshape(-1).astype(bool)
    total = scores.size
    positives = np.sort(scores[target])
    negatives = np.sort(scores[~target])
    # Examples at or above the threshold are predicted positive.
    true_pos = positives.size - np.searchsorted(positives, thresholds, side="left")
    false_pos = negatives.size - np.searchsorted(negatives, thresholds, side="left")
    false_neg = positives.size - true_pos
    true_neg = total - true_pos - false_pos - false_neg
    f1_positive = _safe_ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg)
    f1_negative = _safe_ratio(2 * true_neg, 2 * true_neg + false_neg + false_pos)
    return (f1_positive + f1_negative) / 2.0


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator),
                     where=denominator > 0)


def tune_threshold(positive_probabilities: Any, labels: Any) -> float:
    """The threshold maximising validation macro-F1 (rounded to 6 decimals, as it is recorded)."""
    scores = np.asarray(positive_probabilities, dtype=np.float64).reshape(-1)
    target = np.asarray(labels).reshape(-1)
    if scores.size != target.size:
        raise ThresholdError(f"got {scores.size} probabilities but {target.size} labels")
    candidates = candidate_thresholds(scores)
    f1 = macro_f1_at(candidates, scores, target)
    # Compare F1 values with a tolerance so float noise cannot decide a tie.
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    tied = candidates[best]
    order = np.lexsort((tied, np.abs(tied - 0.5)))
    return float(tied[order[0]])
