"""The mapping file of a multi-label dataset: shared binary questions, and how each source's labels
answer them (`configs/questions/harm.yaml`).

```yaml
questions: [abusive, hate]
implies: {hate: abusive}            # optional: hate=1 needs abusive=1
sources:
  davidson2017:                     # the source's name; kind defaults to it
    labels:
      hate_speech: {abusive: 1, hate: 1}
      ...
  my_forum: {kind: csv, path: forum.csv, text_column: body, label_column: verdict, labels: {...}}
```

An answer is 1 (yes), 0 (no) or null (missing: the source cannot say). `load_question_map` reads
the file with a YAML loader that refuses duplicate keys and checks everything that can be checked
without the raw data (known keys, known questions, every question answered, values in {0, 1,
null}, no label that answers nothing, `implies` respected); `QuestionMap.check_labels` checks a
source's map against the labels the opened source actually has (none missing, none extra). Each
problem is a `QuestionMapError` naming the file, and the source, label and question concerned.

A source's raw data is at `path` (a folder, or for csv/parquet also a single file; a relative path
is relative to the datasets folder), by default `<datasets folder>/<source name>`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cybulde.preparation.labels import LabelMappingError
from cybulde.preparation.sources import SOURCES
from cybulde.registry.store import is_valid_name

MISSING_ANSWER = -1  # a missing cell in a row's `labels` (the training code's `MISSING`)
ANSWER_VALUES = (0, 1, None)
_TOP_KEYS = ("questions", "implies", "sources")
_SOURCE_KEYS = ("kind", "path", "text_column", "label_column", "labels")
_TABLE_KINDS = ("csv", "parquet")


class QuestionMapError(LabelMappingError):
    """A mapping file of questions is malformed, incomplete or contradictory."""


@dataclass(frozen=True)
class SourceAnswers:
    """One source of a multi-label dataset: where its raw data is, and each label's answers."""

    name: str
    kind: str
    path: str | None  # as written in the file; None: <datasets folder>/<name>
    text_column: str | None
    label_column: str | None
    labels: dict[str, dict[str, int | None]]  # label -> question -> 1 | 0 | None

    def raw_dir(self, datasets_dir: Path) -> Path:
        """The source's raw folder (or file): `path` (relative ones inside `datasets_dir`), else
        `datasets_dir/<name>`."""
        return datasets_dir / (self.path if self.path is not None else self.name)


@dataclass(frozen=True)
class QuestionMap:
    """A checked mapping file (see the module docstring)."""

    file: str  # the path as given
    sha256: str  # of the file's bytes
    questions: list[str]
    implies: dict[str, str]
    sources: dict[str, SourceAnswers]  # in the file's order

    @property
    def source_names(self) -> list[str]:
        return list(self.sources)

    def check_labels(self, source: str, label_names: list[str]) -> None:
        """Refuse a map of `source` that leaves one of its labels out or names a label it lacks."""
        mapped = self.sources[source].labels
        unknown = [label for label in mapped if label not in label_names]
        if unknown:
            raise QuestionMapError(f"{self.file}: source {source!r} has no labels {unknown}; its labels are "
                                   f"{label_names}")
        unmapped = [label for label in label_names if label not in mapped]
        if unmapped:
            raise QuestionMapError(f"{self.file}: source {source!r} has labels {unmapped} that the map leaves out; "
                                   f"every label of the source ({label_names}) needs its answers")

    def answer_matrix(self, source: str, label_names: list[str]) -> np.ndarray:
        """int8 [labels, questions]: row i holds the answers of `label_names[i]` (-1 missing)."""
        self.check_labels(source, label_names)
        mapped = self.sources[source].labels
        return np.asarray([[MISSING_ANSWER if mapped[label][question] is None else mapped[label][question]
                            for question in self.questions] for label in label_names], dtype=np.int8)

    def record(self) -> dict[str, Any]:
        """What the manifest keeps of the map (`Manifest.label_map`)."""
        return {"file": self.file, "sha256": self.sha256, "questions": list(self.questions),
                "implies": dict(self.implies),
                "sources": {name: {"kind": source.kind, "labels": {label: dict(answers)
                                                                   for label, answers in source.labels.items()}}
                            for name, source in self.sources.items()}}


def load_question_map(path: str | Path) -> QuestionMap:
    """Read and check the mapping file at `path` (see the module docstring)."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise QuestionMapError(f"cannot read the mapping file {file}: {error.strerror or error}") from error
    return parse_question_map(data, file)


def parse_question_map(data: bytes, file: str) -> QuestionMap:
    """Check the mapping file whose bytes are `data` (`file` names it in errors and in the record)."""
    document = _load_yaml(data, file)
    if not isinstance(document, dict):
        raise QuestionMapError(f"{file}: expected a mapping with keys {list(_TOP_KEYS)}, got {_kind(document)}")
    _refuse_unknown_keys(document, _TOP_KEYS, f"{file}:")
    for key in ("questions", "sources"):
        if key not in document:
            raise QuestionMapError(f"{file}: missing {key!r}")
    questions = _questions(document["questions"], file)
    implies = _implies(document.get("implies") or {}, questions, file)
    sources_node = document["sources"]
    if not isinstance(sources_node, dict) or not sources_node:
        raise QuestionMapError(f"{file}: 'sources' must be a non-empty mapping of source name -> its labels")
    sources = {str(name): _source(str(name), node, questions, implies, file) for name, node in sources_node.items()}
    return QuestionMap(file, hashlib.sha256(data).hexdigest(), questions, implies, sources)


# ---- parts of the file ------------------------------------------------------------------------

def _questions(node: Any, file: str) -> list[str]:
    if not isinstance(node, list) or not node:
        raise QuestionMapError(f"{file}: 'questions' must be a non-empty list of names, got {_kind(node)}")
    for question in node:
        if not isinstance(question, str) or not is_valid_name(question):
            raise QuestionMapError(f"{file}: question {question!r} is not a valid name (letters, digits, '.', '_' "
                                   "or '-', starting with a letter or digit)")
    repeated = sorted({question for question in node if node.count(question) > 1})
    if repeated:
        raise QuestionMapError(f"{file}: questions {repeated} are listed more than once")
    return list(node)


def _implies(node: Any, questions: list[str], file: str) -> dict[str, str]:
    if not isinstance(node, dict):
        raise QuestionMapError(f"{file}: 'implies' must map a question to the question it implies, got {_kind(node)}")
    for premise, conclusion in node.items():
        for question in (premise, conclusion):
            if question not in questions:
                raise QuestionMapError(f"{file}: implies {premise!r}: {conclusion!r} names unknown question "
                                       f"{question!r}; the questions are {questions}")
        if premise == conclusion:
            raise QuestionMapError(f"{file}: implies {premise!r}: {conclusion!r} says nothing")
    return {str(premise): str(conclusion) for premise, conclusion in node.items()}


def _source(name: str, node: Any, questions: list[str], implies: dict[str, str], file: str) -> SourceAnswers:
    where = f"{file}: source {name!r}:"
    if not is_valid_name(name):
        raise QuestionMapError(f"{where} not a valid source name (letters, digits, '.', '_' or '-', starting "
                               "with a letter or digit)")
    if not isinstance(node, dict):
        raise QuestionMapError(f"{where} expected a mapping with 'labels', got {_kind(node)}")
    _refuse_unknown_keys(node, _SOURCE_KEYS, where)
    kind = node.get("kind", name)
    if kind not in SOURCES:
        hint = "" if "kind" in node else " (no 'kind' given, so the name is taken as the kind)"
        raise QuestionMapError(f"{where} unknown kind {kind!r}{hint}; expected one of {', '.join(SOURCES)}")
    options = {key: node.get(key) for key in ("path", "text_column", "label_column")}
    for key, value in options.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise QuestionMapError(f"{where} {key!r} must be a non-empty string, got {value!r}")
    if kind in _TABLE_KINDS:
        absent = [key for key, value in options.items() if value is None]
        if absent:
            raise QuestionMapError(f"{where} kind {kind} needs {', '.join(repr(key) for key in absent)}")
    else:
        given = [key for key in ("text_column", "label_column") if options[key] is not None]
        if given:
            raise QuestionMapError(f"{where} {', '.join(repr(key) for key in given)} "
                                   f"{'is' if len(given) == 1 else 'are'} only for kind csv or parquet")
    labels_node = node.get("labels")
    if not isinstance(labels_node, dict) or not labels_node:
        raise QuestionMapError(f"{where} 'labels' must be a non-empty mapping of label -> answers")
    labels = {}
    for label, answers in labels_node.items():
        label_name = _label_name(label, where)
        labels[label_name] = _answers(answers, questions, implies, f"{where} label {label_name!r}:")
    return SourceAnswers(name, kind, options["path"], options["text_column"], options["label_column"], labels)


def _label_name(label: Any, where: str) -> str:
    # an unquoted integer label (a CSV's 0/1 verdicts) means its digits; anything else must be a string
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise QuestionMapError(f"{where} label {label!r} must be a string (quote it)")
    return str(label)


def _answers(node: Any, questions: list[str], implies: dict[str, str], where: str) -> dict[str, int | None]:
    if not isinstance(node, dict):
        raise QuestionMapError(f"{where} expected its answers {{question: 1 | 0 | null}}, got {_kind(node)}")
    unknown = [question for question in node if question not in questions]
    if unknown:
        raise QuestionMapError(f"{where} unknown question {unknown[0]!r}; the questions are {questions}")
    absent = [question for question in questions if question not in node]
    if absent:
        raise QuestionMapError(f"{where} no answer to question {absent[0]!r} (write null if the source cannot say)")
    for question, value in node.items():
        if isinstance(value, bool) or value not in ANSWER_VALUES:
            raise QuestionMapError(f"{where} question {question!r}: answer {value!r} is not 1, 0 or null")
    answers = {question: node[question] for question in questions}
    if all(value is None for value in answers.values()):
        raise QuestionMapError(f"{where} answers no question (all null): its rows would teach nothing; leave the "
                               "source out or answer at least one question")
    for premise, conclusion in implies.items():
        if answers[premise] == 1 and answers[conclusion] != 1:
            raise QuestionMapError(f"{where} answers {premise}=1, which implies {conclusion}=1, but answers "
                                   f"{conclusion}={_yaml_value(answers[conclusion])}")
    return answers


# ---- YAML ------------------------------------------------------------------------------------

def _load_yaml(data: bytes, file: str) -> Any:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool | None):
                continue  # not a key (the base constructor says so)
            if key in seen:
                raise QuestionMapError(f"{file}: key {key!r} is given twice in one mapping (line "
                                       f"{key_node.start_mark.line + 1})")
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        return yaml.load(data, Loader=StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        raise QuestionMapError(f"{file} is not valid YAML: {' '.join(str(error).split())}") from error


def _refuse_unknown_keys(node: dict[Any, Any], known: tuple[str, ...], where: str) -> None:
    unknown = [key for key in node if key not in known]
    if unknown:
        raise QuestionMapError(f"{where} unknown key {unknown[0]!r}; expected {', '.join(known)}")


def _kind(node: Any) -> str:
    return "nothing" if node is None else f"a {type(node).__name__}"


def _yaml_value(value: int | None) -> str:
    return "null" if value is None else str(value)
