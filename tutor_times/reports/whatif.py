"""What-if: the summary and the timeline under another inactivity timeout, from raw activities.

Stored sessions follow TUTOR_TIMES_SESSION_TIMEOUT. To show how much a figure depends on it,
these reports cut each key's activities into sessions afresh under the timeout asked for (R2),
without writing anything, and count them as the stored reports count sessions: minutes per
R4, a tutor's overlapping sessions merged first (R10), a session in the bucket it starts in.

PostgreSQL finds the sessions in SQL (gaps and islands: an activity starts a session when the
key's previous activity is TIMEOUT or more before it), so one row per session comes back;
elsewhere the activities are cut here with :func:`~tutor_times.core.accounting.runs`, read as
they stream.

A short timeout over a long range cuts up to one session per activity, each held here to be
merged and counted: past ``limit`` sessions (TUTOR_TIMES_WHATIF_MAX_SESSIONS) the report
stops with :class:`TooManySessions`, having held at most that many.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from itertools import groupby, islice
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..core.accounting import runs
from ..core.constants import ASSESSING
from ..store.models import Models
from .merge import block_minutes
from .scope import Scope
from .summary import with_rate
from .timeline import empty_buckets

#: how far past the range's end activities are read at first, for sessions that started in
#: the range and go on after it; read further while a session still reaches the edge
HORIZON = timedelta(days=1)


class Session(NamedTuple):
    marker_id: int
    unit_id: int
    ip_address: str
    start: datetime
    last: datetime
    assessments: int


#: the columns of a session's key
KEY = Session._fields[:3]


class NoRoomInCalendar(ValueError):
    """The range lies too close to an end of the calendar for the activities a what-if
    reads around it (a timeout before it, a while after it)."""


class TooManySessions(ValueError):
    """The activities read would be cut into more than ``limit`` sessions."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} sessions")
        self.limit = limit


def sessions(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    timeout: timedelta,
    *,
    limit: int | None = None,
) -> list[Session]:
    """R2 under ``timeout``: the sessions of the scope's keys that start in its range.

    Activities from ``timeout`` before the range decide whether the range's first activity
    of a key continues an earlier session (then that session started before the range).
    Raises :class:`NoRoomInCalendar` when that reach runs off the calendar, and
    :class:`TooManySessions` when the activities read make more than ``limit`` sessions."""
    horizon = HORIZON
    while True:
        try:
            since, until = scope.start - timeout, scope.end + horizon
        except OverflowError:
            raise NoRoomInCalendar from None
        found = _islands(conn, models, scope, timeout, since, until, limit)
        if all(s.last < until - timeout for s in found):
            return [s for s in found if scope.start <= s.start < scope.end]
        horizon *= 4  # a session may still go on past what was read


def _islands(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    timeout: timedelta,
    since: datetime,
    until: datetime,
    limit: int | None,
) -> list[Session]:
    ms, act = models.MarkingSession, models.SessionActivity
    where = [act.created_at >= since, act.created_at < until]
    # only a session that starts before the reach ends and ends after it begins holds an
    # activity in it: one unit's sessions are found by its (unit_id, start_time) index, and
    # their activities by session, rather than every unit's activities of the reach
    where += [ms.start_time < until, sa.or_(ms.end_time >= since, ms.end_time.is_(None))]
    if scope.unit_id is not None:
        where.append(ms.unit_id == scope.unit_id)
    if scope.marker_id is not None:
        where.append(ms.marker_id == scope.marker_id)
    assessed = sa.case((act.action == ASSESSING, 1), else_=0)
    if conn.dialect.name != "postgresql":
        key = [ms.marker_id, ms.unit_id, ms.ip_address]
        rows = sa.select(*key, act.created_at.label("at"), assessed.label("assessed"))
        with conn.execute(
            rows.join(act, act.marking_session_id == ms.id)
            .where(*where)
            .order_by(*key, act.created_at)
        ) as ordered:
            return _at_most(_cut(ordered, timeout), limit)
    return _at_most(_islands_in_sql(conn, models, scope, timeout, where, assessed, limit), limit)


def _islands_in_sql(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    timeout: timedelta,
    where: list[sa.ColumnElement[bool]],
    assessed: sa.ColumnElement[int],
    limit: int | None,
) -> Iterator[Session]:
    """:func:`_islands` on PostgreSQL: the sessions cut in SQL by window functions, as read."""
    ms = models.MarkingSession
    # keyed by the key's columns the scope leaves free: partitioned by a column the scope
    # fixes, the planner knows it constant in the first window's sort and not in the
    # next, and sorts every activity of the range again
    fixed: dict[str, Any] = {"marker_id": scope.marker_id, "unit_id": scope.unit_id}
    free = [name for name in KEY if fixed.get(name) is None]
    key = [getattr(ms, name) for name in free]
    edges = _edges(models, key, timeout, where, assessed)
    e = edges.c
    ekey = [e[name] for name in free]
    # the activities that begin or end a session (a few per session): each beginning's end
    # is itself or the next of them
    following: dict[str, Any] = {"partition_by": ekey, "order_by": e.place}
    ends = (
        sa.select(
            *ekey,
            e.at,
            e.assessed,
            e.so_far,
            e.first,
            e.last,
            sa.func.lead(e.at).over(**following).label("next_at"),
            sa.func.lead(e.so_far).over(**following).label("next_so_far"),
        )
        .where(sa.or_(e.first, e.last))
        .subquery("ends")
    )
    n = ends.c
    # the whole key: the free columns, and what the scope fixes as it is
    nkey = [n[name] if name in free else sa.literal(fixed[name]) for name in KEY]
    # the times as the driver gives them (aware, in the connection's zone): they are only
    # compared and subtracted, and a few thousand of them need no conversion to UTC
    aware = sa.DateTime(timezone=True)
    query = sa.select(
        *nkey,
        sa.type_coerce(n.at, aware),
        sa.type_coerce(sa.case((n.last, n.at), else_=n.next_at), aware),
        sa.case((n.last, n.so_far), else_=n.next_so_far) - n.so_far + n.assessed,
    ).where(n.first)
    if limit is not None:
        query = query.limit(limit + 1)
    return (Session(*row[:5], int(row[5])) for row in conn.execute(query))


def _edges(
    models: Models,
    key: list[Any],
    timeout: timedelta,
    where: list[sa.ColumnElement[bool]],
    assessed: sa.ColumnElement[int],
) -> Any:
    """Every activity of the range in order (one sort, one window) as a subquery: whether it
    begins or ends a session under ``timeout`` (its gaps to the key's previous and next
    ones), its place, and the assessments up to it."""
    ms, act = models.MarkingSession, models.SessionActivity
    at = act.created_at
    within: dict[str, Any] = {"partition_by": key, "order_by": at, "rows": (None, 0)}
    cut = sa.literal(timeout, sa.Interval())
    first = sa.func.coalesce(at - sa.func.lag(at).over(**within) >= cut, True)
    last = sa.func.coalesce(sa.func.lead(at).over(**within) - at >= cut, True)
    edges = (
        sa.select(
            *key,
            at.label("at"),
            assessed.label("assessed"),
            sa.func.sum(assessed).over(**within).label("so_far"),
            sa.func.row_number().over(**within).label("place"),
            first.label("first"),
            last.label("last"),
        )
        .join(act, act.marking_session_id == ms.id)
        .where(*where)
        .subquery("edges")
    )
    return edges


def _at_most(found: Iterable[Session], limit: int | None) -> list[Session]:
    """``found`` as a list, or :class:`TooManySessions` at its (limit + 1)st session."""
    if limit is None:
        return list(found)
    held = list(islice(found, limit + 1))
    if len(held) > limit:
        raise TooManySessions(limit)
    return held


def _cut(ordered: Iterable[Any], timeout: timedelta) -> Iterator[Session]:
    for (marker, unit, ip), group in groupby(ordered, key=lambda r: tuple(r[:3])):
        for run in runs(group, lambda r: r.at, timeout):
            yield Session(marker, unit, ip, run[0].at, run[-1].at, sum(r.assessed for r in run))


def summary(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    *,
    timeout: timedelta,
    min_minutes: int,
    limit: int | None = None,
) -> dict[str, Any]:
    """:func:`tutor_times.reports.summary.summary`, under ``timeout`` (see :func:`sessions`)."""
    found = sessions(conn, models, scope, timeout, limit=limit)
    minutes = _merged_minutes(found, min_minutes, lambda s: None)
    tutors = []
    for marker, own in groupby(sorted(found, key=lambda s: s.marker_id), key=lambda s: s.marker_id):
        mine = list(own)
        row = {
            "marker_id": marker,
            "sessions": len(mine),
            "assessments": sum(s.assessments for s in mine),
        }
        tutors.append(with_rate(row, minutes.get((None, marker), 0)))
    totals = with_rate(
        {
            "sessions": sum(t["sessions"] for t in tutors),
            "assessments": sum(t["assessments"] for t in tutors),
        },
        sum(t["minutes"] for t in tutors),
    )
    return {"tutors": tutors, "totals": totals}


def timeline(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    starts: list[datetime],
    tz: ZoneInfo,
    *,
    timeout: timedelta,
    min_minutes: int,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """:func:`tutor_times.reports.timeline.timeline`, under ``timeout`` (see :func:`sessions`)."""
    buckets = empty_buckets(starts, tz)
    if not starts:
        return buckets

    def index(s: Session) -> int:
        return max(bisect_right(starts, s.start) - 1, 0)

    found = sessions(conn, models, scope, timeout, limit=limit)
    for s in found:
        buckets[index(s)]["sessions"] += 1
        buckets[index(s)]["assessments"] += s.assessments
    for (i, _), total in _merged_minutes(found, min_minutes, index).items():
        buckets[i]["minutes"] += total
    return buckets


def _merged_minutes(
    found: list[Session], min_minutes: int, bucket: Any
) -> dict[tuple[Any, int], int]:
    """R10 per (bucket, marker): each tutor's overlapping sessions in a unit merged into
    blocks, each counted as a session (R4), in the bucket its first session starts in."""
    spans: dict[tuple[int, int], list[tuple[datetime, datetime, Any]]] = {}
    for s in found:
        spans.setdefault((s.unit_id, s.marker_id), []).append((s.start, s.last, bucket(s)))
    totals: dict[tuple[Any, int], int] = {}
    for value, marker, minutes, _ in block_minutes(spans, min_minutes, None):
        totals[value, marker] = totals.get((value, marker), 0) + minutes
    return totals
