import hashlib
from pathlib import Path

import numpy as np
import pytest

from cybulde.errors import CybuldeError
from cybulde.preparation.labels import LabelMappingError
from cybulde.preparation.questions import QuestionMapError, load_question_map, parse_question_map

HARM = Path(__file__).resolve().parents[2] / "configs" / "questions" / "harm.yaml"

VALID = """\
questions: [abusive, hate]
implies: {hate: abusive}
sources:
  tweeteval_offensive:
    labels:
      offensive: {abusive: 1, hate: null}
      not-offensive: {abusive: 0, hate: 0}
  forum:
    kind: csv
    path: forum/posts.csv
    text_column: body
    label_column: verdict
    labels:
      0: {abusive: 0, hate: 0}
      1: {abusive: 1, hate: null}
"""


def parse(text: str) -> object:
    return parse_question_map(text.encode(), "map.yaml")


def test_the_harm_map_is_the_contracts() -> None:
    harm = load_question_map(HARM)
    assert harm.questions == ["abusive", "hate"] and harm.implies == {"hate": "abusive"}
    assert harm.source_names == ["tweeteval_offensive", "davidson2017", "tweeteval_hate"]
    assert {name: source.kind for name, source in harm.sources.items()} == {
        "tweeteval_offensive": "tweeteval_offensive", "davidson2017": "davidson2017",
        "tweeteval_hate": "tweeteval_hate"}
    assert {name: source.labels for name, source in harm.sources.items()} == {
        "tweeteval_offensive": {"offensive": {"abusive": 1, "hate": None},
                                "not-offensive": {"abusive": 0, "hate": 0}},
        "davidson2017": {"hate_speech": {"abusive": 1, "hate": 1}, "offensive_language": {"abusive": 1, "hate": 0},
                         "neither": {"abusive": 0, "hate": 0}},
        "tweeteval_hate": {"hate": {"abusive": 1, "hate": 1}, "not-hate": {"abusive": None, "hate": 0}},
    }
    assert harm.file == str(HARM) and harm.sha256 == hashlib.sha256(HARM.read_bytes()).hexdigest()


def test_record_and_answer_matrix() -> None:
    mapping = parse(VALID)
    assert mapping.record() == {
        "file": "map.yaml", "sha256": hashlib.sha256(VALID.encode()).hexdigest(), "questions": ["abusive", "hate"],
        "implies": {"hate": "abusive"},
        "sources": {"tweeteval_offensive": {"kind": "tweeteval_offensive", "labels": {
                        "offensive": {"abusive": 1, "hate": None}, "not-offensive": {"abusive": 0, "hate": 0}}},
                    "forum": {"kind": "csv", "labels": {"0": {"abusive": 0, "hate": 0},
                                                        "1": {"abusive": 1, "hate": None}}}}}
    forum = mapping.sources["forum"]
    assert (forum.path, forum.text_column, forum.label_column) == ("forum/posts.csv", "body", "verdict")
    assert forum.raw_dir(Path("/data")) == Path("/data/forum/posts.csv")
    assert mapping.sources["tweeteval_offensive"].raw_dir(Path("/data")) == Path("/data/tweeteval_offensive")
    # rows in the source's label order, columns in question order, -1 for null
    assert mapping.answer_matrix("tweeteval_offensive", ["not-offensive", "offensive"]).tolist() == [[0, 0], [1, -1]]
    assert mapping.answer_matrix("forum", ["0", "1"]).dtype == np.int8


def test_map_is_checked_against_the_sources_labels() -> None:
    mapping = parse(VALID)
    with pytest.raises(QuestionMapError, match=r"map.yaml: source 'forum' has labels \['2'\] that the map leaves out"):
        mapping.check_labels("forum", ["0", "1", "2"])
    with pytest.raises(QuestionMapError, match=r"map.yaml: source 'tweeteval_offensive' has no labels \['offensive'\]; "
                                               r"its labels are \['not-offensive', 'rude'\]"):
        mapping.check_labels("tweeteval_offensive", ["not-offensive", "rude"])


def _with(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


@pytest.mark.parametrize(("text", "message"), [
    (_with("offensive: {abusive: 1, hate: null}", "offensive: {abusive: 1}"),
     "map.yaml: source 'tweeteval_offensive': label 'offensive': no answer to question 'hate' "
     r"\(write null if the source cannot say\)"),
    (_with("offensive: {abusive: 1, hate: null}", "offensive: {abusive: 1, hate: null, spam: 0}"),
     r"map.yaml: source 'tweeteval_offensive': label 'offensive': unknown question 'spam'; "
     r"the questions are \['abusive', 'hate'\]"),
    (_with("not-offensive: {abusive: 0, hate: 0}", "not-offensive: {abusive: 0, hate: 2}"),
     "map.yaml: source 'tweeteval_offensive': label 'not-offensive': question 'hate': answer 2 is not 1, 0 or null"),
    (_with("not-offensive: {abusive: 0, hate: 0}", "not-offensive: {abusive: no, hate: 0}"),
     "label 'not-offensive': question 'abusive': answer False is not 1, 0 or null"),
    (_with("not-offensive: {abusive: 0, hate: 0}", "not-offensive: {abusive: '0', hate: 0}"),
     "label 'not-offensive': question 'abusive': answer '0' is not 1, 0 or null"),
    (_with("1: {abusive: 1, hate: null}", "1: {abusive: null, hate: null}"),
     "map.yaml: source 'forum': label '1': answers no question \\(all null\\)"),
    (_with("offensive: {abusive: 1, hate: null}", "offensive: {abusive: 0, hate: 1}"),
     "map.yaml: source 'tweeteval_offensive': label 'offensive': answers hate=1, which implies abusive=1, "
     "but answers abusive=0"),
    (_with("offensive: {abusive: 1, hate: null}", "offensive: {abusive: null, hate: 1}"),
     "label 'offensive': answers hate=1, which implies abusive=1, but answers abusive=null"),
    (_with("      not-offensive: {abusive: 0, hate: 0}\n",
           "      not-offensive: {abusive: 0, hate: 0}\n      offensive: {abusive: 1, hate: 1}\n"),
     "map.yaml: key 'offensive' is given twice in one mapping \\(line 8\\)"),
    (VALID + "  forum:\n    labels: {}\n", "map.yaml: key 'forum' is given twice in one mapping"),
    (_with("offensive: {abusive: 1, hate: null}", "offensive: {abusive: 1, abusive: 1, hate: null}"),
     "key 'abusive' is given twice"),
    (VALID + "extra: 1\n", "map.yaml: unknown key 'extra'; expected questions, implies, sources"),
    (_with("    kind: csv\n", "    kind: csv\n    colour: red\n"),
     "map.yaml: source 'forum': unknown key 'colour'; expected kind, path, text_column, label_column, labels"),
    (_with("    kind: csv\n", "    kind: excel\n"), "map.yaml: source 'forum': unknown kind 'excel'"),
    (_with("    kind: csv\n", ""), "source 'forum': unknown kind 'forum' \\(no 'kind' given, so the name is taken"),
    (_with("    text_column: body\n", ""), "map.yaml: source 'forum': kind csv needs 'text_column'"),
    (_with("  tweeteval_offensive:\n", "  tweeteval_offensive:\n    text_column: body\n"),
     "source 'tweeteval_offensive': 'text_column' is only for kind csv or parquet"),
    (_with("implies: {hate: abusive}", "implies: {hate: spam}"),
     r"map.yaml: implies 'hate': 'spam' names unknown question 'spam'"),
    (_with("questions: [abusive, hate]", "questions: [abusive, hate, hate]"),
     r"map.yaml: questions \['hate'\] are listed more than once"),
    (_with("questions: [abusive, hate]", "questions: []"), "'questions' must be a non-empty list"),
    (_with("questions: [abusive, hate]\n", ""), "map.yaml: missing 'questions'"),
    (_with("      0: {abusive: 0, hate: 0}\n      1: {abusive: 1, hate: null}\n", ""),
     "map.yaml: source 'forum': 'labels' must be a non-empty mapping"),
    ("- just a list\n", "map.yaml: expected a mapping with keys"),
    ("questions: [abusive\n", "map.yaml is not valid YAML"),
])
def test_a_bad_map_is_refused_with_what_and_where(text: str, message: str) -> None:
    with pytest.raises(QuestionMapError, match=message) as raised:
        parse(text)
    assert isinstance(raised.value, LabelMappingError) and isinstance(raised.value, CybuldeError)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(QuestionMapError, match=f"cannot read the mapping file {tmp_path / 'nope.yaml'}"):
        load_question_map(tmp_path / "nope.yaml")
