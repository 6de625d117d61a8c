"""tutor_times: how long tutors spend marking, tracked live in a Flask LMS.

The rules every number follows are stated in docs/rules.md; code cites them as R1 … R12.
Everything a host imports is here; the rooms below (``core``, ``store``, ``tracking``,
``closing``, ``reports``, ``history``, ``app``, ``web``) are the package's own.
"""

from .closing.worker import Worker
from .core.constants import DEFAULT_ACTIONS, DEFAULTS, TRACKED_ROLES, ConfigVars
from .core.errors import (
    ConfigurationError,
    InvalidActivityError,
    TutorTimesError,
    UnknownActionError,
    UnknownReferenceError,
)
from .core.metrics import process_exited
from .extension import TutorTimes
from .history.importer import Importer
from .history.rebuild import RebuildReport
from .history.rows import ImportReport
from .history.sources import LogTarget
from .migrations import include_migrations

__all__ = [
    "DEFAULTS",
    "DEFAULT_ACTIONS",
    "TRACKED_ROLES",
    "ConfigVars",
    "ConfigurationError",
    "ImportReport",
    "Importer",
    "InvalidActivityError",
    "LogTarget",
    "RebuildReport",
    "TutorTimes",
    "TutorTimesError",
    "UnknownActionError",
    "UnknownReferenceError",
    "Worker",
    "include_migrations",
    "process_exited",
]
