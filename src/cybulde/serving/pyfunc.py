"""The trained classifier as an MLflow `python_function` model: raw text in, label and probabilities out.

This is the read side: what MLflow runs to serve the model, and how a downloaded logged model is
read as data. Logging it is `cybulde.publishing`'s job. It is logged as *models from code*: the
model is the Python file `model_code.py` (which MLflow runs to build it), not a pickled object, so
loading it unpickles nothing. The exported model directory (weights, config.json, tokenizer/)
travels as the artifact `model_dir` and the `cybulde` package as code, so `mlflow models serve -m
runs:/<id>/model` (or `models:/NAME@candidate`) needs nothing but the run. The model's settings are
its `model_config`:

- `threshold`: the decision threshold of a binary sigmoid head (chosen on the validation split);
- `thresholds`: a multi-label model's decision threshold per question (chosen on the validation split);
- `batch_size`, `precision`: how the scorer runs (see `cybulde.serving.scorer`);
- `max_rows`, `max_chars`: the request limits; a request over one, or with a value that is not a
  non-blank string, is refused with an `MlflowException(INVALID_PARAMETER_VALUE)`, which MLflow's
  scoring server answers with HTTP 400 and the message (without the request: see
  `cybulde.serving.scoring_guard`);
- `sha256`: the digest of each verified file of the exported model (`cybulde.serving.integrity`),
  checked when the model loads: a file changed after logging is refused with one line.

Input: a `text` column (the signature names it, so MLflow refuses a request without one and ignores
other columns); over REST `{"inputs": [...]}`, `{"dataframe_split": ...}` or `{"dataframe_records":
...}`. Output: `label` (the predicted label name) and one `prob_<label name>` column per label; for a
multi-label model, `<question>_probability` and `<question>_prediction` (0/1) per question instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.models.model import MODEL_CONFIG
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import CONFIG_KEY_ARTIFACT_RELATIVE_PATH, CONFIG_KEY_ARTIFACTS

from cybulde.serving.errors import InputError, ModelSourceError
from cybulde.serving.integrity import DIGESTS_CONFIG_KEY, verify_model_files
from cybulde.serving.readers import DEFAULT_MAX_CHARS, Limits, texts_from_request
from cybulde.serving.scorer import DEFAULT_BATCH_SIZE, TextScorer

MODEL_NAME = "model"
MODEL_DIR_ARTIFACT = "model_dir"
MODEL_CODE = Path(__file__).with_name("model_code.py")
REQUEST_MAX_ROWS = 1000  # texts per request to the served model (`serving.max_rows`)


class TextClassifierModel(mlflow.pyfunc.PythonModel):
    """Loads the exported model directory once; scores each request's texts in batches."""

    # Input is validated against the signature logged with the model, not against type hints on
    # `predict` (MLflow would otherwise warn about their absence on every import).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        # Only a serving process needs the guard, which imports MLflow's scoring server (its web stack).
        from cybulde.serving.scoring_guard import guard_scoring_server

        config = context.model_config or {}
        model_dir = context.artifacts[MODEL_DIR_ARTIFACT]
        verify_model_files(model_dir, dict(config.get(DIGESTS_CONFIG_KEY) or {}), "the served model",
                           "its model_config")
        guard_scoring_server()
        threshold = config.get("threshold")
        thresholds = {str(question): float(value) for question, value in (config.get("thresholds") or {}).items()}
        self.limits = Limits(int(config.get("max_rows", REQUEST_MAX_ROWS)),
                             int(config.get("max_chars", DEFAULT_MAX_CHARS)),
                             rows_hint="serving.max_rows", chars_hint="serving.max_chars")
        self.scorer = TextScorer.from_dir(
            model_dir, threshold=None if threshold is None else float(threshold),
            batch_size=int(config.get("batch_size", DEFAULT_BATCH_SIZE)),
            precision=config.get("precision") or None, thresholds=thresholds)

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        try:
            texts = texts_from_request(model_input, self.limits)
        except InputError as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
        return self.scorer.score(texts)


def serving_config(threshold: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   max_rows: int = REQUEST_MAX_ROWS, max_chars: int = DEFAULT_MAX_CHARS,
                   precision: str = "", thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The `model_config` the served model is logged with (see module docstring); precision '' runs the
    model at its own train.precision, resolved where it is served."""
    config: dict[str, Any] = {"batch_size": int(batch_size), "max_rows": int(max_rows),
                              "max_chars": int(max_chars), "precision": str(precision)}
    if threshold is not None:
        config["threshold"] = float(threshold)
    if thresholds:
        config["thresholds"] = {str(question): float(value) for question, value in thresholds.items()}
    return config


def logged_model_id(local_dir: Path) -> str | None:
    """The id of the logged model a downloaded MLmodel names (None for a model logged without one)."""
    return Model.load(str(local_dir)).model_id


def logged_model_parts(local_dir: Path, origin: str) -> tuple[Path, dict[str, Any]]:
    """(the exported model folder, the model_config) of a downloaded logged model, read as data."""
    try:
        flavor = Model.load(str(local_dir)).flavors.get(mlflow.pyfunc.FLAVOR_NAME) or {}
    except Exception as error:  # a folder without a readable MLmodel file
        raise ModelSourceError(f"{origin} is not an MLflow model: {error}") from error
    relative = ((flavor.get(CONFIG_KEY_ARTIFACTS) or {}).get(MODEL_DIR_ARTIFACT) or {}).get(
        CONFIG_KEY_ARTIFACT_RELATIVE_PATH)
    if not relative:
        raise ModelSourceError(f"{origin} is not a cybulde text classifier: its pyfunc flavor has no "
                               f"{MODEL_DIR_ARTIFACT!r} artifact")
    model_dir = (local_dir / relative).resolve()
    if not model_dir.is_relative_to(local_dir.resolve()):
        raise ModelSourceError(f"{origin}: its {MODEL_DIR_ARTIFACT!r} artifact points outside the model")
    return model_dir, dict(flavor.get(MODEL_CONFIG) or {})
