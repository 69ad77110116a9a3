"""Answers to the shared questions read back in a source's own labels (hand-written cases)."""

import numpy as np

from cybulde.evaluation.own_labels import own_labels

QUESTIONS = ["abusive", "hate"]
IMPLIES = {"hate": "abusive"}
DAVIDSON = {"hate_speech": {"abusive": 1, "hate": 1}, "offensive_language": {"abusive": 1, "hate": 0},
            "neither": {"abusive": 0, "hate": 0}}
OLID = {"offensive": {"abusive": 1, "hate": None}, "not-offensive": {"abusive": 0, "hate": 0}}
HATEVAL = {"hate": {"abusive": 1, "hate": 1}, "not-hate": {"abusive": None, "hate": 0}}


def test_predicted_answers_become_the_closest_label_with_hate_implying_abuse():
    answers = np.array([[1, 1], [1, 0], [0, 0], [0, 1]])
    # (0, 1) is hateful but not abusive: with hate => abusive it reads (1, 1), hate speech.
    assert own_labels(answers, QUESTIONS, DAVIDSON, IMPLIES).tolist() == [0, 1, 2, 0]
    assert own_labels(answers, QUESTIONS, OLID, IMPLIES).tolist() == [0, 0, 1, 0]
    assert own_labels(answers, QUESTIONS, HATEVAL, IMPLIES).tolist() == [0, 1, 1, 0]


def test_true_answers_with_missing_cells_decode_to_the_original_label():
    assert own_labels(np.array([[1, -1], [0, 0]]), QUESTIONS, OLID, IMPLIES).tolist() == [0, 1]
    assert own_labels(np.array([[1, 1], [-1, 0]]), QUESTIONS, HATEVAL, IMPLIES).tolist() == [0, 1]


def test_without_implications_a_tie_goes_to_the_label_listed_first():
    # (0, 1) is one answer away from hate_speech (1, 1) and from neither (0, 0).
    assert own_labels(np.array([[0, 1]]), QUESTIONS, DAVIDSON).tolist() == [0]
