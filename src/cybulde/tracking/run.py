"""One MLflow run per pipeline execution, shared by the `train`, `validate` and `test` stages.

The run id is never written into a DVC output (a random id there would change `dvc.lock` on every
run). Instead `train` tags its run with the sha256 of the weights it exported, and the later stages
find the run by that tag: a model always reports into the run that produced it, a rerun with
nothing changed runs no stage and so creates no run, and an experiment in a temporary copy of the
repo finds its run in the shared store. Only rank 0 of a distributed job opens a `PipelineRun`.

Status is truthful: a failing stage marks the run FAILED, an interrupted one (SIGINT, SIGTERM)
KILLED, either with a `FAILURE_TAG` saying why; only the final stage (`test`) marks it FINISHED;
earlier stages leave it RUNNING for the next one. A stage that is killed outright (SIGKILL, OOM
killer, a lost node) cannot say so itself: while a stage runs, the run carries an owner tag (host,
boot, pid and start time of the process) and a heartbeat, and every stage that opens a run closes
the experiment's runs left RUNNING by an owner that is gone (KILLED, with the `FAILURE_TAG`). An
owner on another host counts as gone once its heartbeat is `STALE_AFTER_S` old. Between stages a
run has no owner and is left alone.

A run is found by what it is: its name is the DVC experiment's (`dvc exp run` sets DVC_EXP_NAME)
or else dataset, version, head and short commit with a number drawn from the operating system, so
no seed makes every run's name the same; the `mlflow.source.*` tags name the entry point and the
commit. The experiment is created as a model-training one (MLflow 3.17's UI still opens on its
GenAI pages unless the URL asks for `workflowType=machine_learning`: docs/experiments.md).

Tracking servers get bounded HTTP timeouts and retries and an unreachable server is a one-line
`TrackingError` before a stage starts its work (`cybulde.tracking.client`). During training, metrics go through a `MetricBuffer` (`PipelineRun.buffered`),
so an outage never stops training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.config.loader import to_flat_dict
from cybulde.config.paths import project_root, redact_uri, tracking_uri, workspace_root
from cybulde.config.schema import Config
from cybulde.errors import first_line, interrupting_signal
from cybulde.tracking.buffer import MetricBuffer
from cybulde.tracking.client import (
    DATA_TAG,
    DVC_EXPERIMENT_TAG,
    EXPERIMENT_KIND_TAG,
    FAILURE_TAG,
    HEARTBEAT_TAG,
    MODEL_TAG,
    MODEL_TRAINING_KIND,
    OWNER_TAG,
    RUN_COMMIT_TAG,
    SOURCE_NAME_TAG,
    SOURCE_TYPE_TAG,
    STAGE_TAG,
    TrackingError,
    connect,
    git_commit,
)
from cybulde.tracking.lineage import data_lock_hash, model_digest

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

DEFAULT_ARTIFACTS = "mlartifacts"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 900.0
FINAL_FLUSH_S = 60.0  # how long the end of training waits for buffered metrics to reach the server
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"  # set by `dvc exp run` for the stages it runs
SHORT_COMMIT = 7
MAX_FAILURE_CHARS = 500


def check_tracking(config: Config) -> str:
    """Before a stage starts work: the tracking store answers and has the experiment; returns its id."""
    uri = tracking_uri(config)
    return _experiment_id(connect(uri, config), config, uri)


def _experiment_id(client: MlflowClient, config: Config, uri: str) -> str:
    name = config.mlflow.experiment
    try:
        experiment = client.get_experiment_by_name(name)
    except Exception as error:  # mlflow raises many types for an unreachable server
        raise TrackingError(f"cannot reach the MLflow tracking store at {redact_uri(uri)}: "
                            f"{first_line(error)}") from error
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # a store from before the kind was set; a chosen kind stays
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:"):
        # Pin artifacts beside the store, not beside whichever folder the first run started in.
        artifact_location = (workspace_root() / DEFAULT_ARTIFACTS).as_uri()
    return client.create_experiment(name, artifact_location=artifact_location,
                                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})


class PipelineRun:
    """A handle on the pipeline's MLflow run; all writes go through the client with an explicit id."""

    def __init__(self, client: MlflowClient, run_id: str, uri: str, experiment_id: str = "") -> None:
        self.client = client
        self.run_id = run_id
        self.tracking_uri = uri
        self.experiment_id = experiment_id
        self._buffer: Any = None  # a MetricBuffer while `buffered()` is active

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def start_training(cls, config: Config, continue_run_id: str = "") -> PipelineRun:
        """The run for a training: `mlflow.run_id` if given, else `continue_run_id` (the run of the training
        being resumed) if it still exists, else a fresh run."""
        uri = tracking_uri(config)
        client = connect(uri, config)
        experiment_id = _experiment_id(client, config, uri)
        if config.mlflow.run_id:
            run_id = _existing_run(client, config.mlflow.run_id, uri)
        elif continue_run_id and _run_exists(client, continue_run_id):
            run_id = continue_run_id
        else:
            run_id = _create_run(client, experiment_id, config)
        run = cls(client, run_id, uri, experiment_id)
        run._record_context(config)
        return run

    @classmethod
    def for_model(cls, config: Config, model_dir: str | Path) -> PipelineRun:
        """The run that trained the model in `model_dir` (newest first if several did)."""
        uri = tracking_uri(config)
        client = connect(uri, config)
        experiment_id = _experiment_id(client, config, uri)
        if config.mlflow.run_id:
            return cls(client, _existing_run(client, config.mlflow.run_id, uri), uri, experiment_id)
        digest = model_digest(model_dir)
        runs = client.search_runs(
            [experiment_id], filter_string=f"tags.`{MODEL_TAG}` = '{digest}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )
        if runs:
            return cls(client, runs[0].info.run_id, uri, experiment_id)
        log.warning("no MLflow run trained the model in %s (sha256 %s); starting a new run",
                    model_dir, digest[:12])
        run = cls(client, _create_run(client, experiment_id, config), uri, experiment_id)
        run._record_context(config)
        run.set_tags({MODEL_TAG: digest})
        return run

    # -- lifecycle -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str, final: bool = False) -> Iterator[PipelineRun]:
        """Run one stage inside the run: RUNNING and owned by this process meanwhile; then FAILED on an
        error, KILLED when interrupted, FINISHED if `final`, else RUNNING with no owner for the next stage.

        Runs of the experiment left RUNNING by a stage that was killed are closed on the way in.
        """
        self.client.update_run(self.run_id, status="RUNNING")
        self.client.log_batch(self.run_id, tags=_tags({STAGE_TAG: name, OWNER_TAG: json.dumps(_this_process(name)),
                                                       HEARTBEAT_TAG: int(time.time())}))
        with contextlib.suppress(Exception):
            self.client.delete_tag(self.run_id, FAILURE_TAG)  # a resumed run is open again
        close_stale_runs(self.client, self.experiment_id, closer=name, keep=self.run_id)
        monitor = _start_system_metrics(self.run_id, self.tracking_uri, name)
        heartbeat = _Heartbeat(self.client, self.run_id)
        try:
            yield self
        except BaseException as error:
            heartbeat.stop()
            _stop(monitor)
            interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
            self._end_stage(name, "KILLED" if interrupted else "FAILED", why=failure_reason(name, error))
            raise
        heartbeat.stop()
        _stop(monitor)
        self._end_stage(name, "FINISHED" if final else None)

    def _end_stage(self, name: str, status: str | None, why: str = "") -> None:
        """Give up ownership and set `status` (None: stay RUNNING), with `why` in the `FAILURE_TAG` if given;
        a server that is down only gets a warning."""
        tags = {OWNER_TAG: "", **({FAILURE_TAG: why} if why else {})}
        try:
            self.client.log_batch(self.run_id, tags=_tags(tags))
            if status is not None:
                self.client.set_terminated(self.run_id, status=status)
        except Exception as error:  # the stage's own outcome matters more than its bookkeeping
            log.warning("could not record the end of stage %s in MLflow run %s (%s); the next stage that "
                        "finds the run will close it", name, self.run_id, first_line(error)[:200])

    @contextlib.contextmanager
    def buffered(self, flush_timeout_s: float = FINAL_FLUSH_S) -> Iterator[PipelineRun]:
        """Within the block, metrics and tags are queued and sent by a background thread (see
        `cybulde.tracking.buffer`); at its end they are flushed for up to `flush_timeout_s`."""
        self._buffer = MetricBuffer(self.client, self.run_id)
        try:
            yield self
        finally:
            buffer, self._buffer = self._buffer, None
            buffer.close(flush_timeout_s)

    def mark_model(self, model_dir: str | Path) -> None:
        """Tag the run with the weights' digest, so later stages find it from the model alone."""
        self.set_tags({MODEL_TAG: model_digest(model_dir)})

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        # every training process imports this module, only rank 0 opens a run: MLflow and Lightning load only then
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(key, str(value)) for key, value in params.items()
                 if existing.get(key) != str(value)]
        if fresh:
            self.client.log_batch(self.run_id, params=fresh)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        if self._buffer is not None:
            self._buffer.log_metrics(metrics, step or 0)
            return
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self._buffer is not None:
            self._buffer.set_tags(tags)
            return
        self.client.log_batch(self.run_id, tags=_tags(tags))

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
        """A Lightning logger queueing into this run's buffer (use inside `buffered()`)."""
        from cybulde.tracking.lightning import RunLogger

        if self._buffer is None:
            raise RuntimeError("PipelineRun.lightning_logger() needs an active buffered() block")
        return RunLogger(self._buffer)

    # -- context -------------------------------------------------------------------------------
    def _record_context(self, config: Config) -> None:
        # The tracking settings are plumbing, not properties of the model.
        self.log_params({k: v for k, v in to_flat_dict(config).items() if not k.startswith("mlflow.")})
        root = project_root()
        tags: dict[str, Any] = {
            SOURCE_NAME_TAG: entry_point(root),
            SOURCE_TYPE_TAG: "LOCAL",
            "data.registry": config.data.registry,
            "data.dataset": config.data.dataset,
            "data.version": config.data.version,
            # torchrun's view of the job: what actually ran, whatever the params asked for.
            "world_size": os.environ.get("WORLD_SIZE", "1"),
            "device_type": config.launch.accelerator.value,
        }
        commit = git_commit(root)
        if commit:
            tags[RUN_COMMIT_TAG] = commit
        exp_name = os.environ.get(DVC_EXPERIMENT_ENV)
        if exp_name:
            tags[DVC_EXPERIMENT_TAG] = exp_name
        lock_hash = data_lock_hash(root, config.data.fetched_dir)
        if lock_hash:
            tags[DATA_TAG] = lock_hash
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


def run_name(config: Config, commit: str) -> str:
    """The DVC experiment's name, else e.g. `tweeteval_offensive-v2-softmax-1a2b3c4-417`.

    The number tells apart runs of one commit with different workspace params; it comes from the
    operating system, because MLflow's own names come from the `random` module training seeds.
    """
    exp_name = os.environ.get(DVC_EXPERIMENT_ENV)
    if exp_name:
        return exp_name
    head = getattr(config.model.head, "value", config.model.head)
    parts = [config.data.dataset, config.data.version, head, commit[:SHORT_COMMIT], str(secrets.randbelow(1000))]
    return "-".join(str(part) for part in parts if part)


def entry_point(root: Path) -> str:
    """The script this process runs, relative to the project when it lies inside (`stages/train.py`)."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else Path(sys.executable)
    with contextlib.suppress(ValueError):
        return script.relative_to(root.resolve()).as_posix()
    return script.name


def failure_reason(stage: str, error: BaseException) -> str:
    """One line for the `FAILURE_TAG`: the signal that stopped the stage, or the error it raised."""
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        signum = interrupting_signal(error)
        how = f"by {signal.Signals(signum).name}" if signum else f"with exit status {getattr(error, 'code', None)}"
        return f"stage '{stage}' stopped {how}"
    message = str(error).strip()
    described = f"{type(error).__name__}: {first_line(error)}" if message else type(error).__name__
    return f"stage '{stage}' failed: {described}"[:MAX_FAILURE_CHARS]


def _create_run(client: MlflowClient, experiment_id: str, config: Config) -> str:
    return client.create_run(experiment_id, run_name=run_name(config, git_commit(project_root()))).info.run_id


def _tags(tags: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(key, str(value)) for key, value in tags.items()]


def _run_exists(client: MlflowClient, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:
        return False


def _existing_run(client: MlflowClient, run_id: str, uri: str) -> str:
    try:
        return client.get_run(run_id).info.run_id
    except Exception as error:
        raise TrackingError(f"mlflow.run_id={run_id} is not a run in {redact_uri(uri)}: "
                            f"{first_line(error)}") from error


def _start_system_metrics(run_id: str, uri: str, stage: str) -> Any:
    """CPU, memory and (where present) GPU usage sampled into the run while a stage runs."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=5, resume_logging=True,
                                       node_id=stage, tracking_uri=uri)
        monitor.start()
        return monitor
    except Exception as error:  # optional telemetry must never break a stage
        log.info("system metrics not logged: %s", first_line(error))
        return None


def _stop(monitor: Any) -> None:
    if monitor is not None:
        with contextlib.suppress(Exception):
            monitor.finish()


# -- who runs a stage, and runs whose stage is gone ---------------------------------------------------
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The start time of process `pid` (clock ticks since boot), '' if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may contain spaces


def _this_process(stage: str) -> dict[str, Any]:
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid(),
            "started": _process_start(os.getpid()), "stage": stage}


def owner_is_gone(owner: Mapping[str, Any], heartbeat: float, now: float | None = None) -> str:
    """Why the owner of a RUNNING run is gone, or '' if it may still be running."""
    here = _this_process("")
    now = time.time() if now is None else now
    description = f"stage '{owner.get('stage', '?')}' (pid {owner.get('pid')} on host {owner.get('host')})"
    if owner.get("host") == here["host"] and owner.get("boot") == here["boot"] and here["boot"]:
        if _process_start(int(owner.get("pid", 0))) != str(owner.get("started")):
            return f"{description} ended without closing the run"
        return ""
    if owner.get("host") == here["host"] and here["boot"] and owner.get("boot") != here["boot"]:
        return f"{description} did not survive a restart of its host"
    if now - heartbeat > STALE_AFTER_S:
        return f"{description} has sent no heartbeat for {now - heartbeat:.0f} s"
    return ""


def close_stale_runs(client: MlflowClient, experiment_id: str, closer: str, keep: str) -> list[str]:
    """Mark KILLED (with a `FAILURE_TAG` saying why) the experiment's RUNNING runs whose stage is gone."""
    if not experiment_id:
        return []
    try:
        running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                     max_results=200)
    except Exception as error:
        log.warning("could not look for runs left RUNNING: %s", first_line(error)[:200])
        return []
    closed = []
    for candidate in running:
        tags = candidate.data.tags
        if candidate.info.run_id == keep or not tags.get(OWNER_TAG):
            continue
        try:
            owner = json.loads(tags[OWNER_TAG])
            heartbeat = float(tags.get(HEARTBEAT_TAG, 0))
        except (ValueError, TypeError):
            continue
        reason = owner_is_gone(owner, heartbeat)
        if not reason:
            continue
        reason += f"; closed by stage '{closer}' (pid {os.getpid()} on host {socket.gethostname()})"
        try:
            client.log_batch(candidate.info.run_id, tags=_tags({FAILURE_TAG: reason, OWNER_TAG: ""}))
            client.set_terminated(candidate.info.run_id, status="KILLED")
        except Exception as error:
            log.warning("could not close run %s: %s", candidate.info.run_id, first_line(error)[:200])
            continue
        log.warning("closed MLflow run %s as KILLED: %s", candidate.info.run_id, reason)
        closed.append(candidate.info.run_id)
    return closed


class _Heartbeat:
    """Renews the run's `HEARTBEAT_TAG` every `HEARTBEAT_S` seconds from a daemon thread."""

    def __init__(self, client: MlflowClient, run_id: str, period_s: float = HEARTBEAT_S) -> None:
        self._stopped = threading.Event()

        def beat() -> None:
            while not self._stopped.wait(period_s):
                with contextlib.suppress(Exception):  # a missed beat only ages the heartbeat
                    client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))

        self._thread = threading.Thread(target=beat, name="cybulde-mlflow-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
