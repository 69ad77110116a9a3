"""Errors of the data packages (`cybulde.registry`, `cybulde.preparation`, `cybulde.loading`); each
message names what is wrong and what would be right."""

from __future__ import annotations

from cybulde.errors import CybuldeError, UsageError


class DataError(CybuldeError):
    """Base class of every error raised by the data packages."""


class PublishOptionError(DataError, UsageError, ValueError):
    """An option of `publish` is out of range or unknown (a usage error of `cybulde publish`)."""


class RawDataError(DataError):
    """A raw source is missing, malformed or inconsistent (e.g. texts and labels of different lengths)."""


class RegistryError(DataError):
    """Base class of errors about the data registry or a fetched copy."""


class RegistryUnreachableError(RegistryError):
    """The registry location cannot be read (missing folder, bucket, network or credentials)."""


class InvalidNameError(RegistryError, ValueError):
    """A dataset or version name has characters a registry path cannot hold."""


class UnknownDatasetError(RegistryError):
    """The requested dataset has no complete version in the registry."""


class UnknownVersionError(RegistryError):
    """The dataset exists but the requested version does not (or is incomplete)."""


class VersionExistsError(RegistryError):
    """Versions are immutable: publishing onto an existing version is refused."""


class ManifestError(RegistryError):
    """manifest.json is missing, unreadable or lacks required keys."""


class ChecksumMismatchError(RegistryError):
    """A file's sha256 differs from the one recorded in the manifest."""


class MissingFileError(RegistryError):
    """A file listed in the manifest is absent."""


class UnexpectedFileError(RegistryError):
    """A file is present that the manifest does not list."""


class EmptySplitError(DataError):
    """A split of a dataset version has no rows."""
