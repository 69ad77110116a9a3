"""The trained classifier as an MLflow `python_function` model: raw text in, label and probabilities out.

Logged as *models from code*: the model is the Python file `model_code.py` (which MLflow runs to
build it), not a pickled object, so loading it unpickles nothing. The exported model directory
(weights, config.json, tokenizer/) travels as the artifact `model_dir` and the `cybulde` package as
code, so `mlflow models serve -m runs:/<id>/model` (or `models:/NAME@candidate`) needs nothing but
the run. The model's settings are its `model_config`:

- `threshold`: the decision threshold of a binary sigmoid head (chosen on the validation split);
- `batch_size`, `precision`: how the scorer runs (see `cybulde.serving.scorer`);
- `max_rows`, `max_chars`: the request limits; a request over one, or with a value that is not a
  non-blank string, is refused with an `MlflowException(INVALID_PARAMETER_VALUE)`, which MLflow's
  scoring server answers with HTTP 400 and the message.

Input: a `text` column (the signature names it, so MLflow refuses a request without one and ignores
other columns); over REST `{"inputs": [...]}`, `{"dataframe_split": ...}` or `{"dataframe_records":
...}`. Output: `label` (the predicted label name) and one `prob_<label name>` column per label.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from cybulde.registry.storage import sha256_file
from cybulde.serving.errors import InputError, ModelSourceError
from cybulde.serving.readers import TEXT_COLUMN, Limits, texts_from_request
from cybulde.serving.scorer import LABEL_COLUMN, probability_column

MODEL_NAME = "model"
MODEL_DIR_ARTIFACT = "model_dir"
MODEL_CODE = Path(__file__).with_name("model_code.py")
INPUT_EXAMPLE = ["you are a wonderful person", "nobody wants you here, get lost"]
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_ROWS = 1000
DEFAULT_MAX_CHARS = 10_000
# Tags of a logged model: what it serves (a rerun that would log the same three reuses it).
WEIGHTS_TAG = "cybulde.weights_sha256"
CODE_TAG = "cybulde.code_sha256"
CONFIG_TAG = "cybulde.serving_config"


class TextClassifierModel(mlflow.pyfunc.PythonModel):
    """Loads the exported model directory once; scores each request's texts in batches."""

    # Input is validated against the signature logged with the model, not against type hints on
    # `predict` (MLflow would otherwise warn about their absence on every import).
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from cybulde.serving.scorer import TextScorer

        config = context.model_config or {}
        threshold = config.get("threshold")
        self.limits = Limits(int(config.get("max_rows", DEFAULT_MAX_ROWS)),
                             int(config.get("max_chars", DEFAULT_MAX_CHARS)),
                             rows_hint="serving.max_rows", chars_hint="serving.max_chars")
        self.scorer = TextScorer.from_dir(
            context.artifacts[MODEL_DIR_ARTIFACT], threshold=None if threshold is None else float(threshold),
            batch_size=int(config.get("batch_size", DEFAULT_BATCH_SIZE)),
            precision=config.get("precision") or None)

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            texts = texts_from_request(model_input, self.limits)
        except InputError as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
        return self.scorer.score(texts)


def model_signature(label_names: list[str]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import AnyType

    # Named, so other columns are ignored rather than scored; of any type, so MLflow hands numbers and
    # nulls over as they are (a string type would cast them to text) and the model refuses them.
    inputs = Schema([ColSpec(AnyType(), TEXT_COLUMN)])
    outputs = Schema([ColSpec(DataType.string, LABEL_COLUMN)]
                     + [ColSpec(DataType.double, probability_column(name)) for name in label_names])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    """Pinned to the versions installed here; MLflow need not import the model to infer them."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for package in ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pandas", "numpy"):
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


def serving_config(threshold: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   max_rows: int = DEFAULT_MAX_ROWS, max_chars: int = DEFAULT_MAX_CHARS,
                   precision: str = "") -> dict[str, Any]:
    """The `model_config` the served model is logged with (see module docstring); precision '' runs the
    model at its own train.precision, resolved where it is served."""
    config: dict[str, Any] = {"batch_size": int(batch_size), "max_rows": int(max_rows),
                              "max_chars": int(max_chars), "precision": str(precision)}
    if threshold is not None:
        config["threshold"] = float(threshold)
    return config


@dataclass(frozen=True)
class LoggedServedModel:
    model_id: str
    run_id: str
    reused: bool  # an identical model (same weights, code and config) was already logged in the run

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"


def log_pyfunc_model(run: Any, model_dir: str | Path, tracking_uri: str | None = None,
                     config: dict[str, Any] | None = None) -> LoggedServedModel:
    """Log `model_dir` as the pyfunc model `model` of `run` (a PipelineRun or a run id).

    `config` is the model_config (`serving_config(...)`; default: its defaults). The logged model
    is tagged with what it serves: the weights' sha256, the shipped code's sha256 and the config;
    when the run already holds a model with the same three, that one is returned instead of
    logging a duplicate (a rerun of the `test` stage). The model is attached to the existing run by
    id; no run is started or ended, so the run's status stays what the stage bookkeeping makes it.
    """
    import pandas as pd
    from mlflow.models import Model

    from cybulde.models.export import WEIGHTS_FILE, read_model_config
    from cybulde.serving.scorer import model_cleaning

    run_id = run if isinstance(run, str) else run.run_id
    tracking_uri = tracking_uri or (None if isinstance(run, str) else run.tracking_uri)
    model_dir = Path(model_dir).resolve()
    exported = read_model_config(model_dir)
    model_cleaning(exported, f"the model in {model_dir}")  # never log a model that cannot be served
    label_names = [str(name) for name in exported["label_names"]]
    config = config or serving_config()
    client = mlflow.MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as scratch:
        code = package_copy(Path(scratch))
        identity = {WEIGHTS_TAG: sha256_file(model_dir / WEIGHTS_FILE), CODE_TAG: tree_sha256(Path(code)),
                    CONFIG_TAG: json.dumps(config, sort_keys=True)}
        existing = logged_model_with_tags(client, run_id, identity)
        if existing:
            return LoggedServedModel(existing, run_id, reused=True)
        # Created here, in the run's experiment: left to itself MLflow would put the model in the
        # active (default) experiment, where `runs:/<run id>/model` does not look for it.
        experiment_id = client.get_run(run_id).info.experiment_id
        logged = client.create_logged_model(experiment_id=experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                            tags=identity)
        previous_uri = mlflow.get_tracking_uri() if tracking_uri else None
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        try:
            Model.log(
                artifact_path=None,
                name=MODEL_NAME,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=logged.model_id,
                python_model=str(MODEL_CODE),
                artifacts={MODEL_DIR_ARTIFACT: str(model_dir)},
                code_paths=[code],
                signature=model_signature(label_names),
                input_example=pd.DataFrame({TEXT_COLUMN: INPUT_EXAMPLE}),
                pip_requirements=pip_requirements(),
                model_config=config,
            )
        finally:
            if previous_uri is not None:
                mlflow.set_tracking_uri(previous_uri)
    return LoggedServedModel(logged.model_id, run_id, reused=False)


def logged_model_with_tags(client: Any, run_id: str, tags: dict[str, str]) -> str | None:
    """The id of a model logged by the run whose tags include all of `tags`, if there is one."""
    outputs = client.get_run(run_id).outputs
    for output in (outputs.model_outputs if outputs else None) or []:
        model = client.get_logged_model(output.model_id)
        if all(model.tags.get(key) == value for key, value in tags.items()):
            return str(model.model_id)
    return None


def tree_sha256(folder: Path) -> str:
    """sha256 over the relative paths and contents of every file under `folder`, in sorted order."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(item for item in folder.rglob("*") if item.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + sha256_file(path).encode() + b"\0")
    return digest.hexdigest()


def logged_model_parts(local_dir: Path, origin: str) -> tuple[Path, dict[str, Any]]:
    """(the exported model folder, the model_config) of a downloaded logged model, read as data."""
    from mlflow.models import Model
    from mlflow.models.model import MODEL_CONFIG
    from mlflow.pyfunc.model import CONFIG_KEY_ARTIFACT_RELATIVE_PATH, CONFIG_KEY_ARTIFACTS

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
