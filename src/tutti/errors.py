"""Errors a user can act on.

Every mistake in user input (a missing file, a bad config key, a tensor of the wrong shape) raises
:class:`TuttiError` with a one-line message that says what is wrong, where, and what to do. The CLI prints the
message and exits with code 2; a traceback only appears with ``--debug``.
"""

from __future__ import annotations


class TuttiError(Exception):
    """A user-facing error with a one-line, actionable message (CLI exit code 2)."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ConfigError(TuttiError):
    """A config file or dict that does not validate."""


class CheckpointError(TuttiError):
    """A checkpoint folder or file that cannot be read as asked."""


class ModelNotFoundError(TuttiError):
    """A model argument that is not a zoo name, a local path, or (online) a hub id."""


class NotApplicableError(TuttiError):
    """A method that does not apply to the input it was given (e.g. a vote over answers on a rating utility).

    Result tables record it as "n/a" for good; any other error is a failure that a rerun retries.
    """
