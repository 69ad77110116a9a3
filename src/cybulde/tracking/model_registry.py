"""The served model of a pipeline run, and its version in the MLflow Model Registry.

The `test` stage logs the pyfunc model (`cybulde.serving.pyfunc`) into the run and, when
`mlflow.registered_model` names one, registers it there as a new version tagged with
- `data.dvc_md5`: the md5 DVC pinned for the fetched data in dvc.lock,
- `git.commit`: the commit the pipeline ran at,
- `test.macro_f1`: the test split's macro-F1,
- `cybulde.model_sha256`: the weights' sha256,
and points the alias `candidate` at it: `models:/NAME@candidate` then loads it (`cybulde predict`,
`mlflow models serve`). A rerun of the stage for the same weights, code and serving config reuses
the model logged the first time and its version instead of registering a duplicate (an unchanged
`dvc repro` does not run the stage at all).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.config.paths import project_root
from cybulde.tracking.lineage import data_lock_hash, model_digest
from cybulde.tracking.run import MODEL_TAG, _git_commit

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from cybulde.config.schema import Config

log = logging.getLogger(__name__)

CANDIDATE_ALIAS = "candidate"
DATA_TAG = "data.dvc_md5"
COMMIT_TAG = "git.commit"
MACRO_F1_TAG = "test.macro_f1"
RUN_COMMIT_TAG = "mlflow.source.git.commit"
MAX_PAGES = 1000  # of model versions searched for an existing one (100,000 versions)


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    created: bool  # False: the same model was registered before and keeps its version

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.name}@{CANDIDATE_ALIAS}"


def publish_served_model(cfg: Config, run: Any, model_dir: str | Path, test_metrics: dict[str, Any],
                         batch_size: int) -> RegisteredVersion | None:
    """Log the servable model into `run` (a PipelineRun) and register it if the params say so."""
    from cybulde.serving.pyfunc import log_pyfunc_model, serving_config

    config = serving_config(threshold=test_metrics.get("threshold"), batch_size=batch_size,
                            max_rows=cfg.serving.max_rows, max_chars=cfg.serving.max_chars,
                            precision=cfg.serving.precision)
    logged = log_pyfunc_model(run, model_dir, config=config)
    name = cfg.mlflow.registered_model
    if not name:
        return None
    tags = version_tags(run, cfg, model_dir, float(test_metrics["macro_f1"]))
    with global_tracking_uri(run.tracking_uri):
        return register_candidate(run.client, name, logged.model_id, run.run_id, tags)


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's SQL registry store looks a logged model up through the *global* tracking URI."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def version_tags(run: Any, cfg: Config, model_dir: str | Path, macro_f1: float) -> dict[str, str]:
    """What a registered version records: data hash, git commit, test macro-F1, weights digest."""
    run_tags = run.client.get_run(run.run_id).data.tags
    root = project_root()
    return {
        DATA_TAG: run_tags.get(DATA_TAG) or data_lock_hash(root, cfg.data.fetched_dir),
        COMMIT_TAG: run_tags.get(RUN_COMMIT_TAG) or _git_commit(root),
        MACRO_F1_TAG: f"{macro_f1:.6f}",
        MODEL_TAG: model_digest(model_dir),
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
    from mlflow.exceptions import MlflowException

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
