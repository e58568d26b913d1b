"""Exceptions that carry a message meant for the user, not a traceback.

The command line prints ``PulmoError`` messages as one line and exits with status 2;
anything else is a bug and keeps its traceback.
"""


class PulmoError(Exception):
    """Base class for errors caused by the user's input, data or configuration."""


class DataError(PulmoError):
    """A dataset, recording or annotation is missing, unreadable or inconsistent."""


class AudioTooShortError(DataError):
    """A recording is shorter than the shortest clip a model was trained on."""

    def __init__(self, message: str, duration_s: float) -> None:
        super().__init__(message)
        self.duration_s = duration_s


class ConfigError(PulmoError):
    """A configuration file or value is invalid."""


class CheckpointError(PulmoError):
    """A checkpoint file is missing, corrupt or of an unknown format."""
