"""A multi-label model's answers read back in each source's own labels.

A multi-source version maps every source label onto answers to shared questions (the label map in
its manifest: `{label: {question: 1 | 0 | None}}`, None where the source cannot say). To compare the
multi-source model with a model trained on one source alone, on that source's own test split and
in its own terms, its yes/no answers are turned back into the source's labels:

1. the map's implications are applied to the answers (`implies: {hate: abusive}`: a yes to `hate`
   is a yes to `abusive`), so a row the model calls hateful but not abusive reads as hateful;
2. the row gets the source label whose answers disagree with the row's on the fewest questions,
   counting only the questions that label answers (ties: the label listed first in the map).

The same function decodes a row's true answers (missing cells are -1 and never disagree): for a map
in which each label answers differently, this gives back the row's original label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cybulde.models.heads import MISSING


def apply_implications(answers: np.ndarray, questions: Sequence[str], implies: Mapping[str, str]) -> np.ndarray:
    """`answers` ([N, Q] of 1 / 0 / -1) with every yes to a question also a yes to what it implies."""
    result = answers.copy()
    index = {question: position for position, question in enumerate(questions)}
    for question, implied in implies.items():
        result[result[:, index[question]] == 1, index[implied]] = 1
    return result


def own_labels(answers: np.ndarray, questions: Sequence[str], label_answers: Mapping[str, Mapping[str, int | None]],
               implies: Mapping[str, str] | None = None) -> np.ndarray:
    """Index (into `list(label_answers)`) of the source label closest to each row's answers."""
    answers = apply_implications(np.asarray(answers, dtype=np.int64), questions, implies or {})
    distances = []
    for answer_of in label_answers.values():
        expected = np.array([MISSING if answer_of.get(q) is None else int(answer_of[q]) for q in questions])
        compared = (expected != MISSING)[None, :] & (answers != MISSING)
        distances.append(((answers != expected[None, :]) & compared).sum(axis=1))
    return np.stack(distances, axis=1).argmin(axis=1)  # argmin takes the first of equal distances
