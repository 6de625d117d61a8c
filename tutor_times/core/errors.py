"""Exceptions raised to the host application."""

from __future__ import annotations


class TutorTimesError(Exception):
    """Base class of every error raised by tutor_times."""


class ConfigurationError(TutorTimesError, RuntimeError):
    """The extension or the host's hooks are set up wrongly."""


class InvalidActivityError(TutorTimesError, ValueError):
    """An activity was rejected before anything was written.

    ``field`` names the offending argument, so an endpoint can report it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnknownActionError(InvalidActivityError):
    """The action is not one of ``TUTOR_TIMES_ACTIONS`` (R8)."""


class UnknownReferenceError(InvalidActivityError):
    """The activity names a user or unit that the database does not know (a foreign key)."""
