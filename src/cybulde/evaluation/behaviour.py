"""A behavioural test suite: how a trained model answers short templated cases, per functionality.

The cases (`behaviour_cases.yaml`, written for this project) probe negation, counter-speech and
quoting, identity mentions, profanity that is not abuse, threats, obfuscated spellings and
reclaimed terms. Each has a gold answer "abusive or not"; `positive_labels` there says, per training
dataset, which of a model's labels mean "abusive". A case is passed when the model's predicted label
is one of those exactly when the case is abusive.

Each case also names the question it asks (`question:`, per functionality or per case; default
`abusive`): the cases about hate against a group ask `hate`, the others `abusive`. A multi-label
model (one yes/no answer per question) is scored on that question: a case is passed when the
model answers it yes exactly when the case is abusive. Its report also counts, per functionality,
how often each of its questions was answered yes. A single-label model ignores the questions.

Texts reach the model as in `cybulde predict`: cleaned like the published data, tokenized with the
model's own tokenizer (`score_texts`, the one place that scores raw text here).

    cybulde evaluate-behaviour --model model [--output text|json] [--save PATH]

The `test` stage logs the table into the pipeline's MLflow run (`behaviour/table.json`, and a
`behaviour/<functionality>/accuracy` metric each). Report it; never tune a model on it.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.errors import CybuldeError
from cybulde.evaluation.output import emit
from cybulde.serving.columns import question_prediction_column
from cybulde.serving.scorer import TextScorer, is_multilabel_config

if TYPE_CHECKING:
    from cybulde.tracking.run import PipelineRun

log = logging.getLogger("cybulde.evaluation")

CASES_FILE = Path(__file__).with_name("behaviour_cases.yaml")
TABLE_ARTIFACT = "behaviour/table.json"
OUTPUT_FORMATS = ("text", "json")
TABLE_COLUMNS = ("functionality", "cases", "accuracy", "abusive_correct", "abusive_cases",
                 "not_abusive_correct", "not_abusive_cases")
DEFAULT_QUESTION = "abusive"
YES_PREFIX = "yes_"  # a multi-label report's table column: how many cases the model answered yes to a question


class BehaviourError(CybuldeError, ValueError):
    """The behaviour suite cannot run as asked: a malformed cases file or no label mapping for the model."""


@dataclass(frozen=True)
class Case:
    functionality: str
    text: str
    abusive: bool
    question: str = DEFAULT_QUESTION  # what a multi-label model is asked (its gold answer is `abusive`)


@dataclass(frozen=True)
class Suite:
    cases: list[Case]
    functionalities: dict[str, str]  # name -> description, in file order
    positive_labels: dict[str, list[str]]  # training dataset -> the model labels that mean "abusive"


# -- the cases ---------------------------------------------------------------------------------------
def load_suite(path: str | Path = CASES_FILE) -> Suite:
    """Read a cases file and expand its templates (see the file's header)."""
    # `cybulde --help` imports this module: OmegaConf and the model code only when a suite runs
    from omegaconf import OmegaConf

    try:
        document = OmegaConf.to_container(OmegaConf.load(str(path)), resolve=True)
    except Exception as error:  # OmegaConf / YAML errors come in many types
        raise BehaviourError(f"cannot read behaviour cases {path}: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("functionalities"), dict):
        raise BehaviourError(f"{path}: expected a mapping with 'functionalities', 'fillers' and 'positive_labels'")
    fillers = {str(name): [str(value) for value in values] for name, values in (document.get("fillers") or {}).items()}
    cases, descriptions = [], {}
    for name, body in document["functionalities"].items():
        descriptions[str(name)] = str(body.get("description", ""))
        default_question = str(body.get("question", DEFAULT_QUESTION))
        for entry in body.get("cases") or []:
            if "text" not in entry or not isinstance(entry.get("abusive"), bool):
                raise BehaviourError(f"{path}: a case of {name!r} needs 'text' and 'abusive: true|false', got {entry}")
            question = str(entry.get("question", default_question))
            cases.extend(Case(str(name), text, entry["abusive"], question)
                         for text in expand(entry["text"], fillers, path))
    positive = {str(dataset): [str(label) for label in labels]
                for dataset, labels in (document.get("positive_labels") or {}).items()}
    return Suite(unique(cases, path), descriptions, positive)


def expand(template: str, fillers: Mapping[str, Sequence[str]], origin: str | Path = "template") -> list[str]:
    """Every text `template` gives with its placeholders filled from `fillers` (all combinations)."""
    names = list(dict.fromkeys(field for _, field, _, _ in string.Formatter().parse(template) if field))
    missing = [name for name in names if name not in fillers]
    if missing:
        raise BehaviourError(f"{origin}: template {template!r} names fillers {missing} that are not defined")
    return [template.format(**dict(zip(names, values, strict=True)))
            for values in itertools.product(*(fillers[name] for name in names))]


def unique(cases: list[Case], origin: str | Path) -> list[Case]:
    seen: dict[str, Case] = {}
    for case in cases:
        if case.text in seen:
            raise BehaviourError(f"{origin}: the text {case.text!r} appears twice")
        seen[case.text] = case
    return cases


# -- the model's answers -----------------------------------------------------------------------------
def positive_labels_for(suite: Suite, dataset: str | None, label_names: Sequence[str],
                        override: Sequence[str] = ()) -> list[str]:
    """The model labels that mean "abusive": `override` if given, else the suite's entry for `dataset`."""
    positive = list(override) or suite.positive_labels.get(str(dataset), [])
    if not positive:
        raise BehaviourError(
            f"no positive labels for a model trained on {dataset!r}: name the labels that mean 'abusive' with "
            f"--positive LABEL (the model's labels: {list(label_names)})")
    unknown = [label for label in positive if label not in label_names]
    if unknown:
        raise BehaviourError(f"positive labels {unknown} are not labels of the model: {list(label_names)}")
    if set(positive) == set(label_names):
        raise BehaviourError(f"every label of the model is positive ({positive}): nothing would mean 'not abusive'")
    return positive


def score_texts(model_dir: str | Path, texts: Sequence[str], threshold: float | None = None,
                batch_size: int = 64) -> list[str]:
    """The predicted label of each raw text, through the text path `cybulde predict` uses (the model's
    own cleaning and tokenizer)."""
    scorer = TextScorer.from_dir(model_dir, threshold=threshold, batch_size=batch_size)
    predicted = scorer.score(list(texts))
    return [str(label) for label in predicted["label"]]


def score_questions(model_dir: str | Path, texts: Sequence[str], thresholds: Mapping[str, float] | None = None,
                    batch_size: int = 64) -> dict[str, list[int]]:
    """A multi-label model's 0/1 answer to each of its questions for each raw text (the text path of
    `cybulde predict`, each question decided by its threshold in `thresholds`, else 0.5)."""
    scorer = TextScorer.from_dir(model_dir, batch_size=batch_size, thresholds=thresholds)
    scored = scorer.score(list(texts))
    return {question: [int(value) for value in scored[question_prediction_column(question)]]
            for question in scorer.label_names}


def question_report(cases: Sequence[Case], answers: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """`behaviour_report` of a multi-label model: each case scored on its own question's answer; each
    row also counts the yes answers to every question (`yes_<question>`)."""
    asked = sorted({case.question for case in cases} - set(answers))
    if asked:
        raise BehaviourError(f"the cases ask {asked}, which the model does not answer (its questions: {list(answers)})")
    predicted = ["yes" if answers[case.question][index] else "no" for index, case in enumerate(cases)]
    report = behaviour_report(cases, predicted, ["yes"])
    rows = {row["functionality"]: row for row in [*report["functionalities"], report["total"]]}
    for index, case in enumerate(cases):
        for row in (rows[case.functionality], rows["total"]):
            for question, values in answers.items():
                row[f"{YES_PREFIX}{question}"] = row.get(f"{YES_PREFIX}{question}", 0) + int(values[index])
    return {"questions": list(answers), **{key: value for key, value in report.items() if key != "positive_labels"}}


def behaviour_report(cases: Sequence[Case], predicted: Sequence[str], positive: Sequence[str]) -> dict[str, Any]:
    """Per functionality (in order of first appearance) and in total: cases, correct, accuracy, split by gold."""
    if len(cases) != len(predicted):
        raise BehaviourError(f"{len(predicted)} predictions for {len(cases)} cases")
    groups: dict[str, list[tuple[Case, bool]]] = {}
    for case, label in zip(cases, predicted, strict=True):
        groups.setdefault(case.functionality, []).append((case, (label in positive) == case.abusive))
    rows = [_row(name, results) for name, results in groups.items()]
    return {"positive_labels": list(positive), "functionalities": rows,
            "total": _row("total", [result for results in groups.values() for result in results])}


def _row(name: str, results: list[tuple[Case, bool]]) -> dict[str, Any]:
    abusive = [correct for case, correct in results if case.abusive]
    benign = [correct for case, correct in results if not case.abusive]
    correct = sum(abusive) + sum(benign)
    return {"functionality": name, "cases": len(results), "correct": correct,
            "accuracy": round(correct / len(results), 6) if results else None,
            "abusive_cases": len(abusive), "abusive_correct": sum(abusive),
            "not_abusive_cases": len(benign), "not_abusive_correct": sum(benign)}


def evaluate_behaviour(model_dir: str | Path, threshold: float | None = None, positive: Sequence[str] = (),
                       cases_file: str | Path = CASES_FILE, batch_size: int = 64,
                       thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The behaviour report of the exported model in `model_dir` (see the module docstring); `thresholds`
    are a multi-label model's per question."""
    from cybulde.models.export import read_model_config

    config = read_model_config(model_dir)
    suite = load_suite(cases_file)
    dataset = (config.get("metadata") or {}).get("dataset")
    if is_multilabel_config(config):
        if positive:
            raise BehaviourError("--positive applies to a single-label model; a multi-label model is scored on "
                                 "the question each case asks")
        answers = score_questions(model_dir, [case.text for case in suite.cases], thresholds, batch_size)
        return {"model": {"dir": str(model_dir), "dataset": dataset,
                          "version": (config.get("metadata") or {}).get("version")},
                "thresholds": dict(thresholds or {}), **question_report(suite.cases, answers)}
    positive_labels = positive_labels_for(suite, dataset, [str(name) for name in config["label_names"]], positive)
    predicted = score_texts(model_dir, [case.text for case in suite.cases], threshold, batch_size)
    report = behaviour_report(suite.cases, predicted, positive_labels)
    return {"model": {"dir": str(model_dir), "dataset": dataset, "version": (config.get("metadata") or {}).get("version")},
            "threshold": threshold, **report}


def format_table(report: Mapping[str, Any]) -> str:
    """A Markdown table: functionality, cases, accuracy, and the abusive / not abusive cases passed."""
    questions = list(report.get("questions") or [])
    lines = ["| Functionality | Cases | Accuracy | Abusive cases passed | Not abusive cases passed |"
             + "".join(f" Answered {question} |" for question in questions),
             "|---|---|---|---|---|" + "---|" * len(questions)]
    for row in [*report["functionalities"], report["total"]]:
        name = f"**{row['functionality']}**" if row["functionality"] == "total" else row["functionality"]
        lines.append(f"| {name} | {row['cases']} | {row['accuracy']:.3f} | {row['abusive_correct']}/{row['abusive_cases']} "
                     f"| {row['not_abusive_correct']}/{row['not_abusive_cases']} |"
                     + "".join(f" {row[YES_PREFIX + question]}/{row['cases']} |" for question in questions))
    return "\n".join(lines)


# -- the test stage ----------------------------------------------------------------------------------
def log_behaviour(run: PipelineRun, model_dir: str | Path, threshold: float | None,
                  cases_file: str | Path = CASES_FILE, thresholds: Mapping[str, float] | None = None) -> dict[str, Any] | None:
    """Run the suite on the model and log its table and accuracies into `run`; None (and a log line)
    when the model's training dataset has no positive labels in the suite (a single-label model) or
    the model does not answer every question the cases ask (a multi-label one)."""
    from cybulde.models.export import read_model_config

    config = read_model_config(model_dir)
    dataset = (config.get("metadata") or {}).get("dataset")
    suite = load_suite(cases_file)
    if is_multilabel_config(config):
        unanswered = sorted({case.question for case in suite.cases} - {str(name) for name in config["label_names"]})
        if unanswered:
            log.info("behaviour suite skipped: the model does not answer %s, which cases in %s ask", unanswered,
                     cases_file)
            return None
    elif str(dataset) not in suite.positive_labels:
        log.info("behaviour suite skipped: no positive labels for a model trained on %r in %s", dataset, cases_file)
        return None
    report = evaluate_behaviour(model_dir, threshold=threshold, cases_file=cases_file, thresholds=thresholds)
    rows = [*report["functionalities"], report["total"]]
    columns = [*TABLE_COLUMNS, *(f"{YES_PREFIX}{question}" for question in report.get("questions") or [])]
    # MLflow's table format (as MlflowClient.log_table writes it), replaced rather than appended on a rerun.
    run.log_dict({"columns": columns, "data": [[row[column] for column in columns] for row in rows]},
                 TABLE_ARTIFACT)
    run.log_metrics({f"behaviour/{row['functionality']}/accuracy": row["accuracy"] for row in rows})
    log.info("behaviour suite: %d of %d cases passed (%.3f)", report["total"]["correct"], report["total"]["cases"],
             report["total"]["accuracy"])
    return report


# -- command line ------------------------------------------------------------------------------------
def add_behaviour_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="exported model folder (config.json, weights, tokenizer/)")
    parser.add_argument("--positive", action="append", default=[], metavar="LABEL",
                        help="a model label that means 'abusive' (repeatable); default: the suite's labels for "
                             "the model's training dataset")
    parser.add_argument("--threshold", type=float, default=None,
                        help="decision threshold of a binary sigmoid head (default: argmax)")
    parser.add_argument("--question-threshold", action="append", default=[], metavar="QUESTION=P",
                        help="decision threshold of one question of a multi-label model (repeatable; default 0.5)")
    parser.add_argument("--cases", default=str(CASES_FILE), help="a cases file (default: the packaged suite)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", default="text", choices=OUTPUT_FORMATS,
                        help="print the table (text) or the full result (json)")
    parser.add_argument("--save", default=None, metavar="PATH", help="also write the full result as JSON to PATH")
    return parser


def run_behaviour(args: argparse.Namespace) -> int:
    """The `cybulde evaluate-behaviour` handler; a bad input raises a `BehaviourError` (or another CybuldeError)."""
    report = evaluate_behaviour(args.model, threshold=args.threshold, positive=args.positive,
                                cases_file=args.cases, batch_size=args.batch_size,
                                thresholds=parse_question_thresholds(getattr(args, "question_threshold", None) or []))
    emit(report, args.output, args.save, format_table)
    return 0


def parse_question_thresholds(pairs: Sequence[str]) -> dict[str, float]:
    """{question: threshold} of `QUESTION=P` strings."""
    thresholds = {}
    for pair in pairs:
        question, separator, value = str(pair).partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not separator or not question.strip() or not 0.0 < number < 1.0:
            raise BehaviourError(f"--question-threshold must be QUESTION=P with P in (0, 1), got {pair!r}")
        thresholds[question.strip()] = number
    return thresholds
