"""The summary read model: each tutor's sessions, minutes and assessments over a range, from
the stored figures, and from the month roll-ups when the range spans whole months."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..core.accounting import UTC, duration_minutes
from ..store import class_store, rollups
from ..store.class_times import Timetable, with_split
from ..store.models import Models
from ..store.sql import last_activity_of
from .figured import figured_by
from .merge import counts_by, merged_split_by
from .scope import Scope, made_once


def summary(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    *,
    min_minutes: int,
    timetable: Timetable | None = None,
    stored: bool = True,
    rolled: bool | None = None,
) -> dict[str, Any]:
    """Per tutor: sessions, minutes (R10), assessments, minutes per assessment; and totals.
    With a ``timetable``, each row's minutes are also split by R12 (during and outside class).

    From the stored figures unless ``stored`` is false: then every session is counted
    and merged again. On PostgreSQL a unit's range of :data:`ROLLED_FROM` or more (or any,
    with ``rolled``) adds up the whole months between its ends from :mod:`~tutor_times.store.rollups`, where
    no block the range cuts can reach, and counts its ends from the figures: the same
    numbers."""
    if stored:
        return _stored_summary(conn, models, scope, min_minutes, timetable, rolled)
    marker = models.MarkingSession.marker_id
    split = merged_split_by(conn, models, scope, min_minutes=min_minutes, timetable=timetable)
    minutes = {key: total for key, (total, _) in split.items()}
    tutors = [
        with_rate(
            {"marker_id": key, "sessions": n_sessions, "assessments": int(n_assessments)},
            minutes[None, key],
        )
        for key, n_sessions, n_assessments in counts_by(conn, models, scope, marker)
    ]
    totals = _totals(tutors)
    if timetable is not None:
        for t in tutors:
            with_split(t, split[None, t["marker_id"]][1])
        with_split(totals, sum(t["during_class_minutes"] for t in tutors))
    return {"tutors": tutors, "totals": totals}


def _stored_summary(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    min_minutes: int,
    timetable: Timetable | None,
    rolled: bool | None,
) -> dict[str, Any]:
    """:func:`summary` from the stored figures, and the month roll-ups when they serve."""
    if rolled is None:
        rolled = scope.end - scope.start >= ROLLED_FROM
    months = (
        _rolled_months(conn, models, scope, min_minutes)
        if rolled and (timetable is None or class_store.usable(conn, models, scope, timetable))
        else None
    )
    figures = figured_by(
        conn,
        models,
        scope,
        min_minutes=min_minutes,
        timetable=timetable,
        pieces=None if months is None else months[1],
    )
    for tutor, counted in (months[0] if months else {}).items():
        found = figures.setdefault((None, tutor), [0, 0, 0, 0])
        for i, figure in enumerate(counted):
            found[i] += figure
    tutors = []
    for (_, marker), (n_sessions, n_assessments, total, during) in sorted(figures.items()):
        row = {"marker_id": marker, "sessions": n_sessions, "assessments": n_assessments}
        tutors.append(with_rate(row, total))
        if timetable is not None:
            with_split(row, during)
    totals = _totals(tutors)
    if timetable is not None:
        with_split(totals, sum(t["during_class_minutes"] for t in tutors))
    return {"tutors": tutors, "totals": totals}


#: a unit's summary over a range at least this long adds up its whole months from the
#: roll-up (:mod:`~tutor_times.store.rollups`) on PostgreSQL
ROLLED_FROM = timedelta(days=62)


def _rolled_months(
    conn: sa.Connection, models: Models, scope: Scope, min_minutes: int
) -> tuple[dict[int, tuple[int, int, int]], list[tuple[datetime, datetime]]] | None:
    """The whole UTC months of a unit's range that no block the range cuts reaches, added up
    per tutor from :mod:`~tutor_times.store.rollups` — (sessions, assessments, minutes) — and the range's
    pieces either side of them, for :func:`figured_by`; None where there are none (or not
    on PostgreSQL, or for one tutor, or under a minimum the roll-up does not keep).

    A block is cut when it starts before the range, reaches its end, or ends at or after
    its first session without figures (counted live). Every session of such a block starts
    within the unit's longest block of the range's start, of its end or of that first
    session: the months between the range's start plus the longest block and the earlier
    of the others less it have none."""
    if (
        conn.dialect.name != "postgresql"
        or scope.unit_id is None
        or scope.marker_id is not None
        or not 1 <= min_minutes <= rollups.MAX_MINIMUM
    ):
        return None
    ms, months = models.MarkingSession, models.TutorMonths.c
    reach = made_once(
        ("reach", models, scope),
        lambda: sa.select(
            sa.select(sa.func.min(ms.start_time))
            .where(*scope.where(models), ms.block_start.is_(None))
            .scalar_subquery(),
            sa.select(sa.func.max(months.longest))
            .where(months.unit_id == scope.unit_id)
            .scalar_subquery(),
        ),
    )
    first_unfigured, longest = conn.execute(reach).one()
    if longest is None:
        return None
    end = scope.end if first_unfigured is None else min(scope.end, first_unfigured)
    try:
        whole = whole_months(scope.start + longest, end - longest)
    except OverflowError:  # a range at the ends of the calendar
        whole = None
    if whole is None:
        return None
    low, high = whole
    key = ("months", models, scope.unit_id, low, high, min_minutes)
    rows = conn.execute(
        made_once(key, lambda: _month_sums(models, scope.unit_id, low, high, min_minutes))
    ).all()
    if any(uncounted for *_, uncounted in rows):
        return None  # assessments to count from the activities: read as before
    counted = {marker: (int(n), int(a), int(m)) for marker, n, a, m, _ in rows}
    at = [datetime.combine(d, datetime.min.time(), UTC) for d in (low, high)]
    return counted, [(scope.start, at[0]), (at[1], scope.end)]


def _month_sums(models: Models, unit: int | None, low: date, high: date, min_minutes: int) -> Any:
    """Per tutor of ``unit``, the roll-up's months [low, high) added up: sessions,
    assessments, minutes credited under ``min_minutes``, and assessments not counted."""
    months = models.TutorMonths.c
    return (
        sa.select(
            months.marker_id,
            sa.func.sum(months.sessions),
            sa.func.sum(months.assessments),
            sa.func.sum(months.credited[min_minutes]),
            sa.func.sum(months.uncounted),
        )
        .where(months.unit_id == unit, months.month >= low, months.month < high)
        .group_by(months.marker_id)
    )


def whole_months(start: datetime, end: datetime) -> tuple[date, date] | None:
    """The UTC months wholly within [start, end), as the first days of the first and of the
    one after the last; None if there is none (or they reach the calendar's last month)."""
    first = start.astimezone(UTC).date().replace(day=1)
    try:
        if datetime.combine(first, datetime.min.time(), UTC) != start:
            first = (first + timedelta(days=32)).replace(day=1)
    except OverflowError:
        return None
    after = end.astimezone(UTC).date().replace(day=1)
    return (first, after) if first < after else None


def _totals(tutors: list[dict[str, Any]]) -> dict[str, Any]:
    return with_rate(
        {
            "sessions": sum(t["sessions"] for t in tutors),
            "assessments": sum(t["assessments"] for t in tutors),
        },
        # different tutors' minutes are different people's time: they add up
        sum(t["minutes"] for t in tutors),
    )


def with_rate(row: dict[str, Any], minutes: int) -> dict[str, Any]:
    row["minutes"] = minutes
    row["minutes_per_assessment"] = (
        round(minutes / row["assessments"], 1) if row["assessments"] else None
    )
    return row


def open_minutes(conn: sa.Connection, models: Models, scope: Scope, min_minutes: int) -> Any:
    """A session's minutes as SQL: recorded when closed, running so far when open.

    Open sessions are the live ones (within TIMEOUT of now), so they are few: their running
    minutes are computed here and inlined, keeping the rest of the sum in SQL.
    """
    return minutes_with(models, running_minutes(conn, models, scope, min_minutes))


def running_minutes(
    conn: sa.Connection, models: Models, scope: Scope, min_minutes: int
) -> dict[int, int]:
    """The scope's open sessions' minutes so far, by id (what :func:`open_minutes` inlines)."""
    ms = models.MarkingSession
    opened = made_once(
        ("open", models, scope),
        lambda: sa.select(ms.id, ms.start_time, last_activity_of(models)).where(
            *scope.where(models), ms.end_time.is_(None)
        ),
    )
    return {
        sid: duration_minutes(start, last, min_minutes) for sid, start, last in conn.execute(opened)
    }


def minutes_with(models: Models, running: dict[int, int]) -> Any:
    """:func:`open_minutes` of the ``running`` minutes of the open sessions."""
    ms = models.MarkingSession
    if not running:
        return ms.duration_minutes
    return sa.case(running, value=ms.id, else_=ms.duration_minutes)


#: a range at least this long counts its tasks from the tallies on PostgreSQL. A shorter
#: one reads fewer sessions than the keys whose gaps could straddle it, each looked up
#: (measured in benchmarks/README.md, B3)
