"""The trained classifier as an MLflow `python_function` model: raw text in, label and probabilities out.

The exported model directory (weights, config.json and the tokenizer) travels as the artifact
`model_dir`, and the `cybulde` package as code, so `mlflow models serve -m runs:/<id>/model` needs
nothing but the run. Input: a DataFrame with a `text` column, or a list of strings. Output: a
DataFrame with `label` (the predicted label name) and one `prob_<label name>` column per label.
A binary sigmoid head applies the threshold chosen on the validation split (`model_config`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from cybulde.errors import CybuldeError

MODEL_NAME = "model"
MODEL_DIR_ARTIFACT = "model_dir"
TEXT_COLUMN = "text"
INPUT_EXAMPLE = ["you are a wonderful person", "nobody wants you here, get lost"]


class PyfuncInputError(CybuldeError, ValueError):
    """The input to the served model is not a `text` column or a list of strings."""


class TextClassifierModel(mlflow.pyfunc.PythonModel):
    """Loads the exported model directory once; scores texts in batches."""

    # Input is validated against the signature logged with the model, not against type hints on
    # `predict` (MLflow would otherwise warn about their absence on every import).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from cybulde.evaluation.inference import TextScorer

        config = context.model_config or {}
        threshold = config.get("threshold")
        batch_size = int(config.get("batch_size") or 64)
        self.scorer = TextScorer.from_dir(
            context.artifacts[MODEL_DIR_ARTIFACT],
            threshold=None if threshold is None else float(threshold), batch_size=batch_size)

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        return self.scorer.score(texts_from_input(model_input))


def texts_from_input(model_input: Any) -> list[str]:
    """The texts of a DataFrame's `text` column (or its only column), a Series or a list."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            values = model_input[TEXT_COLUMN]
        elif len(model_input.columns) == 1:
            values = model_input.iloc[:, 0]
        else:
            raise PyfuncInputError(f"input has no '{TEXT_COLUMN}' column; columns: "
                                   f"{[str(c) for c in model_input.columns]}")
        values = values.tolist()
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, dict) and TEXT_COLUMN in model_input:
        column = model_input[TEXT_COLUMN]
        values = [column] if isinstance(column, str) else list(column)
    else:
        try:
            values = list(model_input)
        except TypeError as error:
            raise PyfuncInputError("input must be a DataFrame with a 'text' column or a list of "
                                   f"strings, got {type(model_input).__name__}") from error
    bad = [index for index, value in enumerate(values) if not isinstance(value, str)]
    if bad:
        raise PyfuncInputError(f"every input must be a string; rows {bad[:5]} are not")
    return values


def model_signature(label_names: list[str]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    from cybulde.evaluation.inference import LABEL_COLUMN, probability_column

    inputs = Schema([ColSpec(DataType.string)])
    outputs = Schema([ColSpec(DataType.string, LABEL_COLUMN)]
                     + [ColSpec(DataType.double, probability_column(name)) for name in label_names])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    """Pinned to the versions installed here; MLflow need not import the model to infer them."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for package in ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pandas",
                    "numpy"):
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


def package_copy(scratch: Path) -> str:
    """The `cybulde` package's sources, without byte-code caches, for the model's code/ folder."""
    import shutil

    import cybulde

    source = Path(cybulde.__file__).resolve().parent
    target = scratch / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(target)


def log_pyfunc_model(run: Any, model_dir: str | Path, tracking_uri: str | None = None,
                     threshold: float | None = None, batch_size: int = 64) -> Any:
    """Log `model_dir` as the pyfunc model `model` of `run` (a PipelineRun or a run id).

    The model is attached to the existing run by id; no run is started or ended, so the run's
    status stays whatever the pipeline's stage bookkeeping makes it.
    Returns MLflow's `ModelInfo` (its `model_uri` loads the model).
    """
    import pandas as pd
    from mlflow.models import Model

    from cybulde.models.checkpoint import read_model_config

    run_id = run if isinstance(run, str) else run.run_id
    tracking_uri = tracking_uri or (None if isinstance(run, str) else run.tracking_uri)
    model_dir = Path(model_dir).resolve()
    label_names = [str(name) for name in read_model_config(model_dir)["label_names"]]
    model_config = {"batch_size": int(batch_size)}
    if threshold is not None:
        model_config["threshold"] = float(threshold)
    previous_uri = mlflow.get_tracking_uri() if tracking_uri else None
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        # Created here, in the run's experiment: left to itself MLflow would put the model in the
        # active (default) experiment, where `runs:/<run id>/model` does not look for it.
        client = mlflow.MlflowClient()
        experiment_id = client.get_run(run_id).info.experiment_id
        logged = client.create_logged_model(experiment_id=experiment_id, name=MODEL_NAME,
                                            source_run_id=run_id)
        with tempfile.TemporaryDirectory() as scratch:
            return Model.log(
                artifact_path=None,
                name=MODEL_NAME,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=logged.model_id,
                python_model=TextClassifierModel(),
                artifacts={MODEL_DIR_ARTIFACT: str(model_dir)},
                code_paths=[package_copy(Path(scratch))],
                signature=model_signature(label_names),
                input_example=pd.DataFrame({TEXT_COLUMN: INPUT_EXAMPLE}),
                pip_requirements=pip_requirements(),
                model_config=model_config,
            )
    finally:
        if previous_uri is not None:
            mlflow.set_tracking_uri(previous_uri)
