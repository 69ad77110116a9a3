"""Publish the served model: log it into the pipeline run and register it in the MLflow Model Registry.

The `test` stage logs the exported model as the pyfunc model `model` of the run that trained it
(`cybulde.serving.pyfunc` is what MLflow then serves), logged *from code*: `model_code.py` and a
copy of the `cybulde` package travel with it, the exported model folder as the artifact
`model_dir`. The logged model is tagged with what it serves: the sha256 of the weights
(`MODEL_TAG`), of config.json and of tokenizer.json (`cybulde.serving.integrity`), the shipped
code's sha256 and the serving config (which holds the three file digests too, for the served model
to check its files against, and the decision threshold(s) the test split applied: `threshold`, or a
multi-label model's `threshold/<question>`); a rerun that would log the same reuses the model logged the first time.

When `mlflow.registered_model` names one, the logged model is registered there as a new version
tagged with
- `data.dvc_md5`: the md5 DVC pinned for the fetched data in dvc.lock,
- `git.commit`: the commit the pipeline ran at,
- `test.macro_f1`: the test split's macro-F1,
- `cybulde.model_sha256`, `cybulde.config_sha256`, `cybulde.tokenizer_sha256`: the sha256 of the
  weights, config.json and tokenizer.json, which `cybulde predict -m models:/...` verifies the
  downloaded files against,
and the alias `candidate` points at it: `models:/NAME@candidate` then loads it (`cybulde predict`,
`mlflow models serve`). A model already registered keeps its version instead of getting a duplicate
(an unchanged `dvc repro` does not run the stage at all).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import AnyType

import cybulde
from cybulde.config.paths import project_root
from cybulde.config.schema import Config
from cybulde.files import tree_sha256
from cybulde.models.export import read_model_config
from cybulde.serving.columns import (
    LABEL_COLUMN,
    probability_column,
    question_prediction_column,
    question_probability_column,
    question_thresholds,
)
from cybulde.serving.integrity import DIGESTS_CONFIG_KEY, digest_tags, file_digests
from cybulde.serving.pyfunc import MODEL_CODE, MODEL_DIR_ARTIFACT, MODEL_NAME, serving_config
from cybulde.serving.readers import TEXT_COLUMN
from cybulde.serving.scorer import is_multilabel_config, model_cleaning
from cybulde.tracking.client import (
    CODE_TAG,
    COMMIT_TAG,
    CONFIG_TAG,
    DATA_TAG,
    MACRO_F1_TAG,
    RUN_COMMIT_TAG,
    git_commit,
    global_tracking_uri,
)
from cybulde.tracking.lineage import data_lock_hash
from cybulde.tracking.run import PipelineRun

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CANDIDATE_ALIAS = "candidate"
INPUT_EXAMPLE = ["you are a wonderful person", "nobody wants you here, get lost"]
REQUIREMENTS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pandas", "numpy")
MAX_PAGES = 1000  # of model versions searched for an existing one (100,000 versions)


@dataclass(frozen=True)
class LoggedServedModel:
    model_id: str
    run_id: str
    reused: bool  # an identical model (same weights, code and config) was already logged in the run

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    created: bool  # False: the same model was registered before and keeps its version

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.name}@{CANDIDATE_ALIAS}"


def publish_served_model(cfg: Config, run: PipelineRun, model_dir: str | Path, test_metrics: dict[str, Any],
                         batch_size: int) -> RegisteredVersion | None:
    """Log the servable model into `run` and register it if `mlflow.registered_model` names a model."""
    config = serving_config(threshold=test_metrics.get("threshold"), batch_size=batch_size,
                            max_rows=cfg.serving.max_rows, max_chars=cfg.serving.max_chars,
                            precision=cfg.serving.precision, thresholds=question_thresholds(test_metrics))
    logged = log_pyfunc_model(run.run_id, model_dir, run.tracking_uri, config=config)
    name = cfg.mlflow.registered_model
    if not name:
        return None
    tags = version_tags(run, cfg, model_dir, float(test_metrics["macro_f1"]))
    with global_tracking_uri(run.tracking_uri):
        return register_candidate(run.client, name, logged.model_id, run.run_id, tags)


# -- logging the pyfunc model -------------------------------------------------------------------------
def log_pyfunc_model(run_id: str, model_dir: str | Path, tracking_uri: str,
                     config: dict[str, Any] | None = None) -> LoggedServedModel:
    """Log `model_dir` as the pyfunc model `model` of the run `run_id` in the store at `tracking_uri`.

    `config` is the model_config (`serving_config(...)`; default: its defaults). When the run already
    holds a model with the same weights, code and config, that one is returned instead of logging a
    duplicate (a rerun of the `test` stage). The model is attached to the existing run by id; no run
    is started or ended, so the run's status stays what the stage bookkeeping makes it.
    """
    model_dir = Path(model_dir).resolve()
    exported = read_model_config(model_dir)
    model_cleaning(exported, f"the model in {model_dir}")  # never log a model that cannot be served
    label_names = [str(name) for name in exported["label_names"]]
    config = {**(config or serving_config()), DIGESTS_CONFIG_KEY: file_digests(model_dir)}
    client = mlflow.MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as scratch:
        code = package_copy(Path(scratch))
        identity = {**digest_tags(model_dir), CODE_TAG: tree_sha256(Path(code)),
                    CONFIG_TAG: json.dumps(config, sort_keys=True)}
        existing = logged_model_with_tags(client, run_id, identity)
        if existing:
            return LoggedServedModel(existing, run_id, reused=True)
        # Created here, in the run's experiment: left to itself MLflow would put the model in the
        # active (default) experiment, where `runs:/<run id>/model` does not look for it.
        experiment_id = client.get_run(run_id).info.experiment_id
        logged = client.create_logged_model(experiment_id=experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                            tags=identity)
        with global_tracking_uri(tracking_uri):
            Model.log(
                artifact_path=None,
                name=MODEL_NAME,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=logged.model_id,
                python_model=str(MODEL_CODE),
                artifacts={MODEL_DIR_ARTIFACT: str(model_dir)},
                code_paths=[code],
                signature=model_signature(label_names, multilabel=is_multilabel_config(exported)),
                input_example=pd.DataFrame({TEXT_COLUMN: INPUT_EXAMPLE}),
                pip_requirements=pip_requirements(),
                model_config=config,
            )
    return LoggedServedModel(logged.model_id, run_id, reused=False)


def model_signature(label_names: list[str], multilabel: bool = False) -> ModelSignature:
    """`text` in; `label` and `prob_<label>` out, or for a multi-label model (`label_names` are then its
    questions) `<question>_probability` and `<question>_prediction` per question."""
    # Named, so other columns are ignored rather than scored; of any type, so MLflow hands numbers and
    # nulls over as they are (a string type would cast them to text) and the model refuses them.
    inputs = Schema([ColSpec(AnyType(), TEXT_COLUMN)])
    if multilabel:
        outputs = Schema([spec for question in label_names for spec in (
            ColSpec(DataType.double, question_probability_column(question)),
            ColSpec(DataType.long, question_prediction_column(question)))])
    else:
        outputs = Schema([ColSpec(DataType.string, LABEL_COLUMN)]
                         + [ColSpec(DataType.double, probability_column(name)) for name in label_names])
    return ModelSignature(inputs=inputs, outputs=outputs)


def pip_requirements() -> list[str]:
    """Pinned to the versions installed here; MLflow need not import the model to infer them."""
    requirements = []
    for package in REQUIREMENTS:
        try:
            requirements.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            requirements.append(package)
    return requirements


def package_copy(scratch: Path) -> str:
    """The `cybulde` package's sources, without byte-code caches, for the model's code/ folder."""
    source = Path(cybulde.__file__).resolve().parent
    target = scratch / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(target)


def logged_model_with_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> str | None:
    """The id of a model logged by the run whose tags include all of `tags`, if there is one."""
    outputs = client.get_run(run_id).outputs
    for output in (outputs.model_outputs if outputs else None) or []:
        model = client.get_logged_model(output.model_id)
        if all(model.tags.get(key) == value for key, value in tags.items()):
            return str(model.model_id)
    return None


# -- the Model Registry ---------------------------------------------------------------------------------
def version_tags(run: PipelineRun, cfg: Config, model_dir: str | Path, macro_f1: float) -> dict[str, str]:
    """What a registered version records: data hash, git commit, test macro-F1, the model files' digests."""
    run_tags = run.client.get_run(run.run_id).data.tags
    root = project_root()
    return {
        DATA_TAG: run_tags.get(DATA_TAG) or data_lock_hash(root, cfg.data.fetched_dir),
        COMMIT_TAG: run_tags.get(RUN_COMMIT_TAG) or git_commit(root),
        MACRO_F1_TAG: f"{macro_f1:.6f}",
        **digest_tags(model_dir),
    }


def register_candidate(client: MlflowClient, name: str, model_id: str, run_id: str,
                       tags: dict[str, str]) -> RegisteredVersion:
    """The version of `name` whose source is the logged model `model_id` (registered now if none
    is), with the alias `candidate` pointing at it."""
    source = f"models:/{model_id}"
    _ensure_registered_model(client, name)
    version = _version_with_source(client, name, source)
    created = version is None
    if created:
        version = str(client.create_model_version(name, source, run_id=run_id, tags=tags, model_id=model_id).version)
        log.info("registered %s version %s (%s)", name, version, source)
    else:
        log.info("%s version %s already holds %s: not registered again", name, version, source)
    client.set_registered_model_alias(name, CANDIDATE_ALIAS, version)
    return RegisteredVersion(name, version, created)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _version_with_source(client: MlflowClient, name: str, source: str) -> str | None:
    page_token = None
    for _ in range(MAX_PAGES):
        page = client.search_model_versions(f"name = '{name}'", max_results=100, page_token=page_token)
        for version in page:
            if version.source == source:
                return str(version.version)
        page_token = page.token
        if not page_token:
            return None
    return None
