"""One MLflow run per pipeline execution, shared by the `train`, `validate` and `test` stages.

The run id is never written into a DVC output (a random id there would change `dvc.lock` on every
run). Instead `train` tags its run with the sha256 of the weights it exported, and the later stages
find the run by that tag: a model always reports into the run that produced it, a rerun with
nothing changed runs no stage and so creates no run, and an experiment in a temporary copy of the
repo finds its run in the shared store. Only rank 0 of a distributed job opens a `PipelineRun`.

Status is truthful: a failing stage marks the run FAILED; only the final stage (`test`) marks it
FINISHED; earlier stages leave it RUNNING for the next one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.config.loader import to_flat_dict
from cybulde.config.paths import project_root, tracking_uri, workspace_root
from cybulde.config.paths import redact_uri as _redact
from cybulde.config.schema import Config
from cybulde.errors import CybuldeError
from cybulde.tracking.lineage import data_lock_hash, model_digest

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

MODEL_TAG = "cybulde.model_sha256"
STAGE_TAG = "cybulde.stage"
DEFAULT_ARTIFACTS = "mlartifacts"


class TrackingError(CybuldeError, RuntimeError):
    """The tracking server cannot be reached, or the run to log into cannot be found."""


def _client(uri: str) -> MlflowClient:
    os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "false")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: MlflowClient, config: Config, uri: str) -> str:
    name = config.mlflow.experiment
    try:
        experiment = client.get_experiment_by_name(name)
    except Exception as error:  # mlflow raises many types for an unreachable server
        raise TrackingError(f"cannot reach the MLflow tracking store at {_redact(uri)}: "
                            f"{_first_line(error)}") from error
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:"):
        # Pin artifacts beside the store, not beside whichever folder the first run started in.
        artifact_location = (workspace_root() / DEFAULT_ARTIFACTS).as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class PipelineRun:
    """A handle on the pipeline's MLflow run; all writes go through the client with an explicit id."""

    def __init__(self, client: MlflowClient, run_id: str, uri: str) -> None:
        self.client = client
        self.run_id = run_id
        self.tracking_uri = uri

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def start_training(cls, config: Config) -> PipelineRun:
        """The run for a new training: `mlflow.run_id` if given, else a fresh run."""
        uri = tracking_uri(config)
        client = _client(uri)
        experiment_id = _experiment_id(client, config, uri)
        if config.mlflow.run_id:
            run_id = _existing_run(client, config.mlflow.run_id, uri)
        else:
            run_name = os.environ.get("DVC_EXP_NAME") or None
            run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
        run = cls(client, run_id, uri)
        run._record_context(config)
        return run

    @classmethod
    def for_model(cls, config: Config, model_dir: str | Path) -> PipelineRun:
        """The run that trained the model in `model_dir` (newest first if several did)."""
        uri = tracking_uri(config)
        client = _client(uri)
        if config.mlflow.run_id:
            return cls(client, _existing_run(client, config.mlflow.run_id, uri), uri)
        experiment_id = _experiment_id(client, config, uri)
        digest = model_digest(model_dir)
        runs = client.search_runs(
            [experiment_id], filter_string=f"tags.`{MODEL_TAG}` = '{digest}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        if runs:
            return cls(client, runs[0].info.run_id, uri)
        log.warning("no MLflow run trained the model in %s (sha256 %s); starting a new run",
                    model_dir, digest[:12])
        run = cls(client, client.create_run(experiment_id).info.run_id, uri)
        run._record_context(config)
        run.set_tags({MODEL_TAG: digest})
        return run

    # -- lifecycle -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str, final: bool = False) -> Iterator[PipelineRun]:
        """Run one stage inside the run: RUNNING meanwhile, FAILED on error, FINISHED if `final`."""
        self.client.update_run(self.run_id, status="RUNNING")
        self.set_tags({STAGE_TAG: name})
        monitor = _start_system_metrics(self.run_id, self.tracking_uri, name)
        try:
            yield self
        except BaseException:
            _stop(monitor)
            self.client.set_terminated(self.run_id, status="FAILED")
            raise
        _stop(monitor)
        if final:
            self.client.set_terminated(self.run_id, status="FINISHED")

    def mark_model(self, model_dir: str | Path) -> None:
        """Tag the run with the weights' digest, so later stages find it from the model alone."""
        self.set_tags({MODEL_TAG: model_digest(model_dir)})

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(key, str(value)) for key, value in params.items()
                 if existing.get(key) != str(value)]
        if fresh:
            self.client.log_batch(self.run_id, params=fresh)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(local_path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        self.client.log_figure(self.run_id, figure, name)

    def log_dict(self, dictionary: Mapping[str, Any], name: str) -> None:
        self.client.log_dict(self.run_id, dict(dictionary), name)

    def lightning_logger(self) -> Any:
        """Lightning's MLFlowLogger writing into this run, leaving its status to `stage`."""
        from cybulde.tracking.lightning import RunBoundMLFlowLogger

        return RunBoundMLFlowLogger(run_id=self.run_id, tracking_uri=self.tracking_uri)

    # -- context -------------------------------------------------------------------------------
    def _record_context(self, config: Config) -> None:
        # The tracking settings are plumbing, not properties of the model.
        self.log_params({k: v for k, v in to_flat_dict(config).items() if not k.startswith("mlflow.")})
        root = project_root()
        tags: dict[str, Any] = {
            "data.registry": config.data.registry,
            "data.dataset": config.data.dataset,
            "data.version": config.data.version,
            # torchrun's view of the job: what actually ran, whatever the params asked for.
            "world_size": os.environ.get("WORLD_SIZE", "1"),
            "device_type": config.launch.accelerator.value,
        }
        commit = _git_commit(root)
        if commit:
            tags["mlflow.source.git.commit"] = commit
        exp_name = os.environ.get("DVC_EXP_NAME")
        if exp_name:
            tags["dvc.exp_name"] = exp_name
        lock_hash = data_lock_hash(root, config.data.fetched_dir)
        if lock_hash:
            tags["data.dvc_md5"] = lock_hash
            self._log_dataset_input(config, lock_hash)
        self.set_tags(tags)

    def _log_dataset_input(self, config: Config, lock_hash: str) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=f"{config.data.dataset}@{config.data.version}",
            digest=lock_hash,
            source_type="dvc",
            source=f'{{"registry": "{config.data.registry}", "path": "{config.data.fetched_dir}"}}',
        )
        context = InputTag(key="mlflow.data.context", value="train")
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags=[context])])


def _existing_run(client: MlflowClient, run_id: str, uri: str) -> str:
    try:
        return client.get_run(run_id).info.run_id
    except Exception as error:
        raise TrackingError(f"mlflow.run_id={run_id} is not a run in {_redact(uri)}: "
                            f"{_first_line(error)}") from error


def _git_commit(root: Path) -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return result.stdout.strip()


def _start_system_metrics(run_id: str, uri: str, stage: str) -> Any:
    """CPU, memory and (where present) GPU usage sampled into the run while a stage runs."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=5, resume_logging=True,
                                       node_id=stage, tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception as error:  # optional telemetry must never break a stage
        log.info("system metrics not logged: %s", _first_line(error))
        return None


def _stop(monitor: Any) -> None:
    if monitor is not None:
        with contextlib.suppress(Exception):
            monitor.finish()
