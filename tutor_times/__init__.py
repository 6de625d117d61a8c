"""tutor_times: how long tutors spend marking, tracked live in a Flask LMS.

The rules every number follows are stated in docs/rules.md; code cites them as R1 … R12.
"""

from .core.constants import DEFAULT_ACTIONS, TRACKED_ROLES, ConfigVars
from .core.errors import (
    ConfigurationError,
    InvalidActivityError,
    TutorTimesError,
    UnknownActionError,
)
from .extension import TutorTimes

__all__ = [
    "DEFAULT_ACTIONS",
    "TRACKED_ROLES",
    "ConfigVars",
    "ConfigurationError",
    "InvalidActivityError",
    "TutorTimes",
    "TutorTimesError",
    "UnknownActionError",
]
