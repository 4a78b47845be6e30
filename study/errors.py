"""One exception hierarchy for everything a user can get wrong or the world can refuse."""

from __future__ import annotations


class StudyError(Exception):
    """Base: the CLI prints the message as one line and exits non-zero."""


class ConfigError(StudyError):
    """A flag, a TOML key or a search-space range is invalid."""


class StorageError(StudyError):
    """The Optuna storage cannot be reached, or holds a study that does not match."""


class TrackingError(StudyError):
    """The MLflow tracking store cannot be reached or written."""


class ServerError(StudyError):
    """A browsing server cannot start: its store is missing, its port taken, or it died."""


class DeviceError(StudyError):
    """The requested device is not available."""
