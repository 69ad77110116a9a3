"""Verified model files: what a registered version (or a logged model) records of its files, and the
check that the files loaded are those.

The `test` stage records the sha256 of the three files that decide a model's scores on the
registered version and on the logged model (tags), and in the served model's `model_config`:

- `model.safetensors` (`cybulde.model_sha256`): the weights;
- `config.json` (`cybulde.config_sha256`): the architecture, the label names, the cleaning;
- `tokenizer/tokenizer.json` (`cybulde.tokenizer_sha256`): the tokenizer.

`cybulde predict -m models:/...` (and `runs:/...`) reads the expected digests from the tracking
server's records of the version (or of the run's logged model), not from the downloaded files, and
refuses a file whose digest differs; the served model checks its files against its `model_config`.
A mismatch is one line naming the file and both digests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cybulde.files import sha256_file
from cybulde.models.export import CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE
from cybulde.serving.errors import ModelSourceError
from cybulde.tracking.client import MODEL_CONFIG_TAG, MODEL_TAG, TOKENIZER_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient

TOKENIZER_FILE = f"{TOKENIZER_DIR}/tokenizer.json"
# The verified files of an exported model folder -> the tag recording each one's sha256.
DIGEST_TAGS = {WEIGHTS_FILE: MODEL_TAG, CONFIG_FILE: MODEL_CONFIG_TAG, TOKENIZER_FILE: TOKENIZER_TAG}
DIGESTS_CONFIG_KEY = "sha256"  # of the served model's model_config: file -> sha256


class ModelIntegrityError(ModelSourceError):
    """A model file differs from the digest its registered version records, or no digest is recorded."""


def file_digests(model_dir: str | Path) -> dict[str, str]:
    """sha256 of each verified file of an exported model folder (relative path -> hex digest)."""
    return {name: sha256_file(Path(model_dir) / name) for name in DIGEST_TAGS}


def digest_tags(model_dir: str | Path) -> dict[str, str]:
    """The tags recording the verified files' digests, for a registered version or a logged model."""
    return {DIGEST_TAGS[name]: digest for name, digest in file_digests(model_dir).items()}


def digests_from_tags(tags: dict[str, str], origin: str) -> dict[str, str]:
    """The expected digest of each verified file, read from `tags`; refuses a record without one."""
    missing = [tag for tag in DIGEST_TAGS.values() if not tags.get(tag)]
    if missing:
        raise ModelIntegrityError(f"{origin} records no sha256 of its files (tags {', '.join(missing)} missing): "
                                  f"it cannot be verified; register it again with the test stage")
    return {name: tags[tag] for name, tag in DIGEST_TAGS.items()}


def verify_model_files(model_dir: str | Path, expected: dict[str, str], origin: str, recorded_by: str) -> None:
    """Refuse the folder of `origin` unless each verified file has the digest `recorded_by` records for it."""
    for name in DIGEST_TAGS:
        if not expected.get(name):
            raise ModelIntegrityError(f"{recorded_by} records no sha256 of {name}: {origin} cannot be verified; "
                                      f"register it again with the test stage")
        path = Path(model_dir) / name
        if not path.is_file():
            raise ModelIntegrityError(f"{origin}: {name} is missing from the downloaded model")
        found = sha256_file(path)
        if found != expected[name]:
            raise ModelIntegrityError(f"{name} of {origin} has sha256 {found}, but {recorded_by} records "
                                      f"{expected[name]}: the file was changed after registration; refusing it")


def recorded_digests(client: MlflowClient, uri: str, logged_model_id: str | None
                     ) -> tuple[dict[str, str], str | None, str]:
    """(file -> expected sha256, the logged model's id, what records them) of the MLflow model URI `uri`, from the tracking
    server's records: a registered version's tags (models:/NAME/VERSION, models:/NAME@ALIAS) or a
    logged model's (models:/<model id>, runs:/<run id>/<name>; `logged_model_id` is the id its
    downloaded MLmodel names, accepted only if that model was logged by the run)."""
    if uri.startswith("models:/"):
        # MLflow's artifact stores load for a registry URI only (a model folder's check needs none of it).
        from mlflow.store.artifact.utils.models import _parse_model_uri

        parsed = _parse_model_uri(uri)
        if parsed.model_id:
            recorded_by = f"logged model {parsed.model_id}"
            return digests_from_tags(client.get_logged_model(parsed.model_id).tags, recorded_by), parsed.model_id, \
                recorded_by
        if parsed.alias:
            version = client.get_model_version_by_alias(parsed.name, parsed.alias)
        elif parsed.version:
            version = client.get_model_version(parsed.name, parsed.version)
        else:
            raise ModelIntegrityError(f"cannot verify {uri}: name a version (models:/NAME/VERSION) or an alias "
                                      f"(models:/NAME@ALIAS), not a stage")
        source_id = (_parse_model_uri(version.source).model_id if str(version.source).startswith("models:/")
                     else None)
        recorded_by = f"{parsed.name} version {version.version}"
        return digests_from_tags(version.tags, recorded_by), version.model_id or source_id, recorded_by
    if uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").split("/", 1)[0]
        if not logged_model_id:
            raise ModelIntegrityError(f"cannot verify {uri}: its MLmodel names no logged model")
        logged = client.get_logged_model(logged_model_id)
        if logged.source_run_id != run_id:
            raise ModelIntegrityError(f"cannot verify {uri}: its MLmodel names model {logged_model_id}, which "
                                      f"run {run_id} did not log")
        recorded_by = f"logged model {logged_model_id} of run {run_id}"
        return digests_from_tags(logged.tags, recorded_by), logged_model_id, recorded_by
    raise ModelIntegrityError(f"cannot verify {uri}: only runs:/ and models:/ URIs carry recorded digests")
