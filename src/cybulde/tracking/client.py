"""The MLflow client's plumbing, shared by everything that talks to a tracking store.

- HTTP limits: bounded timeouts and retries for every request (`mlflow.http_timeout_s`,
  `mlflow.http_max_retries`), set through the environment MLflow reads per request;
- `check_reachable`: an unreachable HTTP server, or one that refuses this process's credential
  (MLflow's environment variables, never arguments or params), is a one-line `TrackingError` before
  any work;
- `global_tracking_uri`: the few MLflow calls that resolve through the *global* tracking URI run
  inside it, which sets it and restores the previous one;
- `git_commit`: the commit the project is at, as runs and registered versions record it;
- the tag names runs, logged models and registered versions carry.

Nothing here knows runs or the registry (`cybulde.tracking.run`, `cybulde.publishing`), so `serving`
may use it for reading logged models.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cybulde.config.paths import redact_uri
from cybulde.config.schema import Config
from cybulde.errors import CybuldeError, first_line

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.utils.rest_utils import MlflowHostCreds

# Tags of a run; `MODEL_TAG` also marks logged models and registered versions.
MODEL_TAG = "cybulde.model_sha256"  # the exported weights' sha256: the identity of a trained model
# Also on logged served models and registered versions: the sha256 of the exported config.json and
# tokenizer/tokenizer.json (see `cybulde.serving.integrity`).
MODEL_CONFIG_TAG = "cybulde.config_sha256"
TOKENIZER_TAG = "cybulde.tokenizer_sha256"
STAGE_TAG = "cybulde.stage"
OWNER_TAG = "cybulde.owner"  # JSON: the process running a stage in the run; '' between stages
HEARTBEAT_TAG = "cybulde.heartbeat"  # unix time, renewed while a stage runs
FAILURE_TAG = "cybulde.failure"  # why the run is FAILED or KILLED: the error's first line, the signal, or who closed it
DATA_TAG = "data.dvc_md5"  # the md5 DVC pinned for the fetched data in dvc.lock
DVC_EXPERIMENT_TAG = "dvc.experiment"  # the name `dvc exp run` gave the experiment (DVC_EXP_NAME)
RUN_COMMIT_TAG = "mlflow.source.git.commit"
SOURCE_NAME_TAG = "mlflow.source.name"  # the entry point, shown in the UI's Source column
SOURCE_TYPE_TAG = "mlflow.source.type"
# Tag of the experiment: what it is for MLflow 3's UI, which may still open on its GenAI pages (docs/experiments.md).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# Tags of a logged served model: what it serves besides the weights.
CODE_TAG = "cybulde.code_sha256"
CONFIG_TAG = "cybulde.serving_config"
# Tags of a registered version.
COMMIT_TAG = "git.commit"
MACRO_F1_TAG = "test.macro_f1"

HTTP_BACKOFF_FACTOR = 1  # retries after 0 s, 2 s, 4 s...
CREDENTIAL_PROBE = "/api/2.0/mlflow/experiments/search"  # on every server; behind authentication where it is on


class TrackingError(CybuldeError, RuntimeError):
    """The tracking server cannot be reached, or the run to log into cannot be found."""


def configure_http(config: Config) -> None:
    """Bounded timeouts and retries for every request MLflow makes (read from the environment per request)."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(config.mlflow.http_timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(config.mlflow.http_max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(HTTP_BACKOFF_FACTOR)
    # MLflow draws its jitter from the global `random` module, which training seeds.
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0"


def check_reachable(uri: str, timeout_s: float) -> None:
    """For an HTTP tracking server: within `timeout_s` it answers and accepts this process's credential,
    else a one-line `TrackingError` naming the server, never the secret.

    The credential and TLS settings are MLflow's own, from the environment: MLFLOW_TRACKING_USERNAME /
    MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), MLFLOW_TRACKING_SERVER_CERT_PATH,
    MLFLOW_TRACKING_INSECURE_TLS. Any other HTTP answer counts (a proxy may well refuse the probe).
    """
    if not uri.startswith(("http://", "https://")):
        return
    # every training process imports this module, only rank 0 talks to MLflow: it loads only then
    import requests
    from mlflow.utils.credentials import get_default_host_creds

    credential = get_default_host_creds(uri)
    server = f"the MLflow tracking server at {redact_uri(uri)}"
    try:
        response = requests.get(uri.rstrip("/") + CREDENTIAL_PROBE, params={"max_results": 1}, timeout=timeout_s,
                                **_request_credential(credential))
        response.close()
    except requests.exceptions.SSLError as error:
        raise TrackingError(f"{server} failed TLS verification: set MLFLOW_TRACKING_SERVER_CERT_PATH to its "
                            f"certificate ({first_line(error)[:120]})") from error
    except requests.Timeout as error:
        raise TrackingError(f"cannot reach {server}: no answer within {timeout_s:g} s "
                            "(mlflow.http_timeout_s)") from error
    except requests.RequestException as error:
        reason = "connection refused" if "refused" in str(error).lower() else first_line(error)[:200]
        raise TrackingError(f"cannot reach {server}: {reason}") from error
    if response.status_code in (401, 403):
        raise TrackingError(_refusal(server, response.status_code, credential))


def _request_credential(credential: MlflowHostCreds) -> dict[str, Any]:
    """`requests` arguments that send what MLflow's own requests will send."""
    arguments: dict[str, Any] = {"verify": credential.server_cert_path or not credential.ignore_tls_verification}
    if credential.token:
        arguments["headers"] = {"Authorization": f"Bearer {credential.token}"}
    elif credential.username and credential.password:
        arguments["auth"] = (credential.username, credential.password)
    if credential.client_cert_path:
        arguments["cert"] = credential.client_cert_path
    return arguments


def _refusal(server: str, status: int, credential: MlflowHostCreds) -> str:
    if not (credential.token or credential.username):
        return (f"{server} refused an anonymous request ({status}): set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD in the environment")
    who = "MLFLOW_TRACKING_TOKEN" if credential.token else f"user {credential.username!r}"
    if status == 401:
        return (f"{server} refused the credential of {who} ({status}): check MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD")
    return f"{server} refused {who} ({status}): it may not read the experiments"


def connect(uri: str, config: Config) -> MlflowClient:
    """A client for `uri` with the HTTP limits of `config`, once the server has answered."""
    os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "false")
    configure_http(config)
    check_reachable(uri, config.mlflow.http_timeout_s)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """Within the block MLflow's global tracking URI is `uri`; the previous one is restored after.

    Some MLflow calls ignore a client's URI: logging a model, resolving `runs:/` URIs, and the SQL
    registry store looking a logged model up.
    """
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def git_commit(root: Path) -> str:
    """The commit checked out in `root`, or '' outside a git repository."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return result.stdout.strip()
