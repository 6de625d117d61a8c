"""What every read model takes: the :class:`Scope` of a report (a range, a unit, a tutor), and a
session's end and minutes so far (R3, R4)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from ..core.accounting import duration_minutes
from ..store.models import Models
from ..store.sql import last_activity_of

B = TypeVar("B")
T = TypeVar("T")

#: how many statements :func:`made_once` keeps
STATEMENTS_KEPT = 256
_MADE: dict[Hashable, Any] = {}


def made_once(key: Hashable, make: Callable[[], T]) -> T:
    """``make()``, a statement that depends on nothing but ``key`` (what it is, the backend,
    the tables, the range), made once per key and reused: a range asked again (a page
    reloaded) builds none of it again. SQLAlchemy's statements are immutable, and building
    and keying one cost more Python than PostgreSQL spent on it. Up to STATEMENTS_KEPT, then
    all dropped in one step (other threads' reports read them too)."""
    found = _MADE.get(key)
    if found is None:
        if len(_MADE) >= STATEMENTS_KEPT:
            _MADE.clear()
        found = _MADE[key] = make()
    return found


@dataclass(frozen=True)
class Scope:
    """Sessions that started in [start, end), of one unit and/or one marker when given."""

    start: datetime
    end: datetime
    unit_id: int | None = None
    marker_id: int | None = None

    def where(self, models: Models) -> list[Any]:
        return self.where_on(models.MarkingSession)

    def where_on(self, sessions: Any) -> list[Any]:
        """The scope's conditions on ``sessions`` (the model, or an alias's columns)."""
        clauses = [sessions.start_time >= self.start, sessions.start_time < self.end]
        if self.unit_id is not None:
            clauses.append(sessions.unit_id == self.unit_id)
        if self.marker_id is not None:
            clauses.append(sessions.marker_id == self.marker_id)
        return clauses


def last_activity(models: Models) -> Any:
    """A session's end so far: its end_time once closed, else its last activity (R3)."""
    ms = models.MarkingSession
    return sa.func.coalesce(ms.end_time, last_activity_of(models), type_=ms.start_time.type)


def minutes_so_far(row: Any, min_minutes: int) -> int:
    """Recorded minutes of a closed session; running minutes of an open one."""
    if row.duration_minutes is not None:
        return int(row.duration_minutes)
    return duration_minutes(row.start_time, row.last_activity, min_minutes)
