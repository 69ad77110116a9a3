"""The behavioural suite: template expansion (checked against hand counts), the report (against hand
answers for known predictions), the label mappings, the command and the test stage's logging."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

from cybulde.evaluation import behaviour
from cybulde.evaluation.behaviour import (
    BehaviourError,
    Case,
    behaviour_report,
    expand,
    load_suite,
    positive_labels_for,
)
from tests.helpers.tiny_model import make_data_dir, make_model_dir

SMALL_SUITE = """
positive_labels:
  toxic_set: [toxic]
fillers:
  who: [cats, dogs, birds]
  how: [loud, calm]
functionalities:
  first:
    description: two templates
    cases:
      - {text: "{who} are {how}", abusive: false}
      - {text: "I hate {who}", abusive: true}
  second:
    description: no placeholders, and one used twice
    cases:
      - {text: "plain text", abusive: false}
      - {text: "{who} and more {who}", abusive: true}
"""


def write(tmp_path, text, name="cases.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_templates_expand_to_every_combination_of_their_fillers():
    fillers = {"who": ["cats", "dogs", "birds"], "how": ["loud", "calm"]}
    assert expand("{who} are {how}", fillers) == ["cats are loud", "cats are calm", "dogs are loud", "dogs are calm",
                                                  "birds are loud", "birds are calm"]
    assert expand("{who} and more {who}", fillers) == ["cats and more cats", "dogs and more dogs",
                                                       "birds and more birds"]
    assert expand("no fillers", fillers) == ["no fillers"]


def test_a_small_suite_loads_with_hand_counted_cases(tmp_path):
    suite = load_suite(write(tmp_path, SMALL_SUITE))
    # first: 3 x 2 + 3 = 9 cases (3 abusive); second: 1 + 3 = 4 cases (3 abusive)
    assert Counter(case.functionality for case in suite.cases) == {"first": 9, "second": 4}
    assert Counter((case.functionality, case.abusive) for case in suite.cases) == {
        ("first", False): 6, ("first", True): 3, ("second", False): 1, ("second", True): 3}
    assert suite.functionalities == {"first": "two templates", "second": "no placeholders, and one used twice"}
    assert suite.positive_labels == {"toxic_set": ["toxic"]}


def test_the_packaged_suite_has_the_hand_counted_cases():
    suite = load_suite()
    # Counted from behaviour_cases.yaml: 8 groups, 4 insults, 4 plural insults, 4 events, 5 obfuscated insults.
    expected = {  # functionality: (abusive, not abusive)
        "negation": (8 + 4, 8 + 8 + 4),
        "counter_speech": (8, 8 + 4 + 4 + 4 + 8),
        "identity_neutral": (8, 4 * 8),
        "profanity_not_abuse": (4 + 4, 4 * 4),
        "threats": (5 + 8, 5),
        "obfuscation": (5 + 8, 1 + 4 + 1),
        "reclaimed_terms": (2, 6),
    }
    counts = Counter((case.functionality, case.abusive) for case in suite.cases)
    assert {name: (counts[(name, True)], counts[(name, False)]) for name in suite.functionalities} == expected
    assert len(suite.cases) == 177 and len({case.text for case in suite.cases}) == 177
    assert list(suite.functionalities) == list(expected)


@pytest.mark.parametrize(("text", "message"), [
    ("functionalities:\n  f:\n    cases:\n      - {text: '{nope} x', abusive: true}\n", "fillers \\['nope'\\]"),
    ("functionalities:\n  f:\n    cases:\n      - {text: 'x'}\n", "needs 'text' and 'abusive"),
    ("functionalities:\n  f:\n    cases:\n      - {text: 'x', abusive: true}\n      - {text: 'x', abusive: false}\n",
     "appears twice"),
    ("just a string\n", "expected a mapping"),
])
def test_a_malformed_cases_file_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(BehaviourError, match=message):
        load_suite(write(tmp_path, text))


def test_report_counts_passes_per_functionality_and_gold_label():
    cases = [Case("a", "t1", True), Case("a", "t2", False), Case("a", "t3", False),
             Case("b", "t4", True), Case("b", "t5", True)]
    predicted = ["hate_speech", "offensive_language", "neither", "neither", "offensive_language"]
    report = behaviour_report(cases, predicted, ["hate_speech", "offensive_language"])
    # By hand: a: t1 right, t2 wrong (not abusive, flagged), t3 right -> 2/3; b: t4 wrong, t5 right -> 1/2.
    a, b = report["functionalities"]
    assert a == {"functionality": "a", "cases": 3, "correct": 2, "accuracy": 0.666667, "abusive_cases": 1,
                 "abusive_correct": 1, "not_abusive_cases": 2, "not_abusive_correct": 1}
    assert b == {"functionality": "b", "cases": 2, "correct": 1, "accuracy": 0.5, "abusive_cases": 2,
                 "abusive_correct": 1, "not_abusive_cases": 0, "not_abusive_correct": 0}
    assert report["total"]["correct"] == 3 and report["total"]["accuracy"] == 0.6


def test_positive_labels_per_dataset_and_their_errors():
    suite = load_suite()
    davidson = ["hate_speech", "neither", "offensive_language"]
    assert positive_labels_for(suite, "davidson2017", davidson) == ["hate_speech", "offensive_language"]
    assert positive_labels_for(suite, "tweeteval_offensive", ["not-offensive", "offensive"]) == ["offensive"]
    assert positive_labels_for(suite, "mine", ["ok", "bad"], override=["bad"]) == ["bad"]
    with pytest.raises(BehaviourError, match="no positive labels for a model trained on 'mine'.*--positive"):
        positive_labels_for(suite, "mine", ["ok", "bad"])
    with pytest.raises(BehaviourError, match="not labels of the model"):
        positive_labels_for(suite, "tweeteval_hate", ["not-offensive", "offensive"])
    with pytest.raises(BehaviourError, match="every label of the model is positive"):
        positive_labels_for(suite, "x", ["a", "b"], override=["a", "b"])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    base = tmp_path_factory.mktemp("behaviour")
    data_dir = make_data_dir(base / "data")
    return make_model_dir(base / "model", data_dir)  # labels not_offensive, offensive; dataset "tiny"


def test_a_stub_scorer_gives_the_hand_computed_report(tmp_path, tiny_model, monkeypatch):
    seen = []

    def stub(model_dir, texts, threshold=None, batch_size=64):
        seen.extend(texts)
        return ["offensive" if "hate" in text or "and more" in text else "not_offensive" for text in texts]

    monkeypatch.setattr(behaviour, "score_texts", stub)
    report = behaviour.evaluate_behaviour(tiny_model, positive=["offensive"], cases_file=write(tmp_path, SMALL_SUITE))
    # By hand: first: the 3 "I hate" cases are flagged (right), the 6 others not (right) -> 9/9;
    # second: "plain text" not flagged (right), the 3 "and more" flagged (right) -> 4/4.
    assert [(row["functionality"], row["correct"], row["cases"]) for row in report["functionalities"]] == [
        ("first", 9, 9), ("second", 4, 4)]
    assert len(seen) == 13 and report["model"]["dataset"] == "tiny"


def test_texts_are_cleaned_like_predict_before_scoring(tiny_model):
    from cybulde.serving.scorer import TextScorer

    raw = ["you   stupid &amp; ugly\nloser", "a day in the park"]
    cleaned = ["you stupid & ugly loser", "a day in the park"]
    expected = TextScorer.from_dir(tiny_model).score(cleaned)["label"].tolist()
    assert behaviour.score_texts(tiny_model, raw) == expected


def test_the_command_prints_and_saves_the_report(tiny_model, tmp_path, capsys):
    from cybulde.cli import main

    saved = tmp_path / "out" / "behaviour.json"
    assert main(["evaluate-behaviour", "--model", str(tiny_model), "--positive", "offensive", "--output", "json",
                 "--save", str(saved)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(saved.read_text())
    assert [row["functionality"] for row in printed["functionalities"]] == list(load_suite().functionalities)
    assert printed["total"]["cases"] == 177 and printed["positive_labels"] == ["offensive"]
    assert sum(row["correct"] for row in printed["functionalities"]) == printed["total"]["correct"]

    assert main(["evaluate-behaviour", "--model", str(tiny_model), "--positive", "offensive"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| Functionality | Cases | Accuracy") and len(table) == 2 + 7 + 1
    assert table[-1].startswith("| **total** | 177 |")


def test_the_command_without_a_mapping_for_the_model_is_a_one_line_error(tiny_model, capsys):
    from cybulde.cli import main

    assert main(["evaluate-behaviour", "--model", str(tiny_model)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("cybulde evaluate-behaviour: error: no positive labels for a model trained on 'tiny'")


class RecordingRun:
    def __init__(self):
        self.dicts, self.metrics = {}, {}

    def log_dict(self, dictionary, name):
        self.dicts[name] = dictionary

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)


def test_the_test_stage_logs_the_table_for_a_known_dataset_and_skips_others(tiny_model, tmp_path):
    run = RecordingRun()
    assert behaviour.log_behaviour(run, tiny_model, threshold=None) is None  # "tiny": no mapping, nothing logged
    assert run.dicts == {} and run.metrics == {}

    model_dir = shutil.copytree(tiny_model, tmp_path / "model")
    config = json.loads((model_dir / "config.json").read_text())
    config["metadata"]["dataset"] = "tweeteval_offensive"
    (model_dir / "config.json").write_text(json.dumps(config))
    report = behaviour.log_behaviour(run, model_dir, threshold=None)
    table = run.dicts[behaviour.TABLE_ARTIFACT]
    assert table["columns"][:3] == ["functionality", "cases", "accuracy"]
    assert [row[0] for row in table["data"]] == [*load_suite().functionalities, "total"]
    assert [row[1] for row in table["data"]][-1] == 177
    assert run.metrics["behaviour/total/accuracy"] == report["total"]["accuracy"]
    assert run.metrics["behaviour/negation/accuracy"] == report["functionalities"][0]["accuracy"]


# ---- the question each case asks (multi-label models) ------------------------------------------------

def test_each_packaged_case_asks_the_hand_assigned_question():
    suite = load_suite()
    # Counted from behaviour_cases.yaml: the cases naming or slurring an identity group ask `hate`.
    expected = {  # functionality: (hate cases, abusive cases)
        "negation": (8 + 8 + 8, 4 + 4),
        "counter_speech": (8 + 8 + 8, 4 + 4 + 4),
        "identity_neutral": (5 * 8, 0),
        "profanity_not_abuse": (0, 4 + 4 + 4 + 4 + 4 + 4),
        "threats": (8, 10),
        "obfuscation": (8, 5 + 1 + 4 + 1),
        "reclaimed_terms": (4, 4),
    }
    counts = Counter((case.functionality, case.question) for case in suite.cases)
    assert {name: (counts[(name, "hate")], counts[(name, "abusive")]) for name in suite.functionalities} == expected
    assert {case.question for case in suite.cases} == {"abusive", "hate"}
    hateful = next(case for case in suite.cases if case.text == "Nobody wants queers like you around here.")
    assert hateful.question == "hate" and hateful.abusive


def test_a_question_is_set_per_functionality_or_per_case(tmp_path):
    suite = load_suite(write(tmp_path, """
functionalities:
  f:
    question: hate
    cases:
      - {text: "a", abusive: true}
      - {text: "b", abusive: false, question: abusive}
  g:
    cases:
      - {text: "c", abusive: true}
"""))
    assert [(case.text, case.question) for case in suite.cases] == [("a", "hate"), ("b", "abusive"), ("c", "abusive")]


def test_a_multilabel_report_scores_each_case_on_its_question():
    cases = [Case("a", "t1", True, "hate"), Case("a", "t2", False, "hate"), Case("a", "t3", True, "abusive"),
             Case("b", "t4", False, "abusive"), Case("b", "t5", True, "hate")]
    answers = {"abusive": [1, 1, 0, 1, 1], "hate": [1, 1, 1, 0, 0]}
    report = behaviour.question_report(cases, answers)
    # By hand: a: t1 hate=1 right, t2 hate=1 wrong, t3 abusive=0 wrong -> 1/3;
    #          b: t4 abusive=1 wrong, t5 hate=0 wrong -> 0/2. Yes answers: a abusive 2 hate 3, b abusive 2 hate 0.
    a, b = report["functionalities"]
    assert a == {"functionality": "a", "cases": 3, "correct": 1, "accuracy": 0.333333, "abusive_cases": 2,
                 "abusive_correct": 1, "not_abusive_cases": 1, "not_abusive_correct": 0,
                 "yes_abusive": 2, "yes_hate": 3}
    assert (b["correct"], b["yes_abusive"], b["yes_hate"]) == (0, 2, 0)
    assert (report["total"]["correct"], report["total"]["yes_abusive"], report["total"]["yes_hate"]) == (1, 4, 3)
    assert report["questions"] == ["abusive", "hate"] and "positive_labels" not in report
    with pytest.raises(BehaviourError, match=r"ask \['hate'\], which the model does not answer"):
        behaviour.question_report(cases, {"abusive": answers["abusive"]})


@pytest.fixture(scope="module")
def multilabel_model(tmp_path_factory):
    from tests.helpers.tiny_data import make_multilabel_data_dir

    base = tmp_path_factory.mktemp("behaviour_multilabel")
    return make_model_dir(base / "model", make_multilabel_data_dir(base / "data"), head="multilabel")


def test_a_multilabel_model_is_probed_on_both_questions(multilabel_model, capsys):
    from cybulde.cli import main
    from cybulde.serving.scorer import TextScorer

    assert main(["evaluate-behaviour", "--model", str(multilabel_model), "--question-threshold", "hate=0.8385",
                 "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    suite = load_suite()
    scored = TextScorer.from_dir(multilabel_model, thresholds={"hate": 0.8385}).score([c.text for c in suite.cases])
    expected_correct = sum(int(scored[f"{case.question}_prediction"][index]) == int(case.abusive)
                           for index, case in enumerate(suite.cases))
    assert report["total"]["correct"] == expected_correct and report["total"]["cases"] == 177
    assert report["total"]["yes_hate"] == int(scored["hate_prediction"].sum())
    assert report["total"]["yes_abusive"] == int(scored["abusive_prediction"].sum())
    assert report["thresholds"] == {"hate": 0.8385}

    assert main(["evaluate-behaviour", "--model", str(multilabel_model)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].endswith("| Answered abusive | Answered hate |") and len(table) == 2 + 7 + 1


def test_the_test_stage_logs_both_questions_answers_of_a_multilabel_model(multilabel_model):
    run = RecordingRun()
    report = behaviour.log_behaviour(run, multilabel_model, threshold=None, thresholds={"abusive": 0.2})
    table = run.dicts[behaviour.TABLE_ARTIFACT]
    assert table["columns"][-2:] == ["yes_abusive", "yes_hate"]
    assert table["data"][-1][-2:] == [report["total"]["yes_abusive"], report["total"]["yes_hate"]]
    assert run.metrics["behaviour/total/accuracy"] == report["total"]["accuracy"]
