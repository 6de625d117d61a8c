"""Report queries: pure functions of a connection, the tables and a :class:`Scope`.

Counting and summing happen in SQL (GROUP BY over the indexed unit/start filter); only R10's
interval merge walks each tutor's sessions in the range. An open session counts up to its
last activity so far.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from .accounting import UTC, duration_minutes, merged_minutes
from .closer import last_activity_of
from .models import Models

#: the action that counts as one assessment
ASSESSING = "assessing"


@dataclass(frozen=True)
class Scope:
    """Sessions that started in [start, end), of one unit and/or one marker when given."""

    start: datetime
    end: datetime
    unit_id: int | None = None
    marker_id: int | None = None

    def where(self, models: Models) -> list[Any]:
        ms = models.MarkingSession
        clauses = [ms.start_time >= self.start, ms.start_time < self.end]
        if self.unit_id is not None:
            clauses.append(ms.unit_id == self.unit_id)
        if self.marker_id is not None:
            clauses.append(ms.marker_id == self.marker_id)
        return clauses


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _last_activity(models: Models) -> Any:
    """A session's end so far: its end_time once closed, else its last activity (R3)."""
    ms = models.MarkingSession
    return sa.func.coalesce(ms.end_time, last_activity_of(models), type_=ms.start_time.type)


def _minutes(row: Any, min_minutes: int) -> int:
    """Recorded minutes of a closed session; running minutes of an open one."""
    if row.duration_minutes is not None:
        return int(row.duration_minutes)
    return duration_minutes(row.start_time, row.last_activity, min_minutes)


def active_sessions(
    conn: sa.Connection,
    models: Models,
    *,
    unit_id: int,
    marker_id: int | None,
    min_minutes: int,
) -> list[dict[str, Any]]:
    """The unit's open sessions (of one marker, when given), oldest first.

    ``duration_minutes`` runs to the last activity so far: what the session would
    record if it ended now (R3, R4).
    """
    ms = models.MarkingSession
    last = last_activity_of(models).label("last_activity")
    query = sa.select(ms.id, ms.marker_id, ms.ip_address, ms.start_time, last).where(
        ms.unit_id == unit_id, ms.end_time.is_(None)
    )
    if marker_id is not None:
        query = query.where(ms.marker_id == marker_id)
    rows = conn.execute(query.order_by(ms.start_time, ms.id)).all()
    return [
        {
            "id": r.id,
            "marker_id": r.marker_id,
            "ip_address": r.ip_address,
            "start_time": iso(r.start_time),
            "last_activity": iso(r.last_activity),
            "duration_minutes": duration_minutes(r.start_time, r.last_activity, min_minutes),
            "active": True,
        }
        for r in rows
    ]


def _session_rows(conn: sa.Connection, models: Models, query: Any, min_minutes: int) -> list[Any]:
    """Sessions selected by ``query`` (a WHERE/ORDER/LIMIT over marking_sessions), with
    their activity counts by action, as response rows."""
    ms, act = models.MarkingSession, models.SessionActivity
    rows = conn.execute(
        query.with_only_columns(
            ms.id,
            ms.marker_id,
            ms.unit_id,
            ms.ip_address,
            ms.start_time,
            ms.end_time,
            ms.duration_minutes,
            _last_activity(models).label("last_activity"),
        )
    ).all()
    counts: dict[int, dict[str, int]] = {r.id: {} for r in rows}
    if rows:
        for sid, action, n in conn.execute(
            sa.select(act.marking_session_id, act.action, sa.func.count())
            .where(act.marking_session_id.in_(list(counts)))
            .group_by(act.marking_session_id, act.action)
            .order_by(act.marking_session_id, act.action)
        ):
            counts[sid][action] = n
    return [
        {
            "id": r.id,
            "marker_id": r.marker_id,
            "unit_id": r.unit_id,
            "ip_address": r.ip_address,
            "start_time": iso(r.start_time),
            "end_time": iso(r.end_time) if r.end_time is not None else None,
            "last_activity": iso(r.last_activity),
            "duration_minutes": _minutes(r, min_minutes),
            "active": r.end_time is None,
            "assessments": counts[r.id].get(ASSESSING, 0),
            "activities": counts[r.id],
        }
        for r in rows
    ]


def sessions_page(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    *,
    page: int,
    per_page: int,
    min_minutes: int,
) -> dict[str, Any]:
    """One page of the scope's sessions, newest first, and how many there are in all."""
    ms = models.MarkingSession
    where = scope.where(models)
    total = conn.execute(sa.select(sa.func.count()).select_from(ms).where(*where)).scalar_one()
    query = (
        sa.select(ms.id)
        .where(*where)
        .order_by(ms.start_time.desc(), ms.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    return {
        "page": page,
        "per_page": per_page,
        "total": total,
        "sessions": _session_rows(conn, models, query, min_minutes),
    }


def session_detail(
    conn: sa.Connection, models: Models, session_id: int, *, min_minutes: int
) -> dict[str, Any] | None:
    """One session with every activity, oldest first; None when there is no such session."""
    ms, act = models.MarkingSession, models.SessionActivity
    rows = _session_rows(conn, models, sa.select(ms.id).where(ms.id == session_id), min_minutes)
    if not rows:
        return None
    activities = conn.execute(
        sa.select(
            act.id,
            act.marking_session_id,
            act.action,
            act.created_at,
            act.project_id,
            act.task_id,
            act.task_definition_id,
        )
        .where(act.marking_session_id == session_id)
        .order_by(act.created_at, act.id)
    ).all()
    detail: dict[str, Any] = rows[0]
    detail["activity_list"] = [activity_row(a) for a in activities]
    return detail


def activity_row(a: Any) -> dict[str, Any]:
    return {
        "id": a.id,
        "marking_session_id": a.marking_session_id,
        "action": a.action,
        "created_at": iso(a.created_at),
        "project_id": a.project_id,
        "task_id": a.task_id,
        "task_definition_id": a.task_definition_id,
    }


def _intervals(conn: sa.Connection, models: Models, scope: Scope) -> Any:
    """(marker_id, start, end so far) of every session in the scope: R10's input."""
    ms = models.MarkingSession
    return conn.execute(
        sa.select(ms.marker_id, ms.start_time, _last_activity(models)).where(*scope.where(models))
    )


def summary(
    conn: sa.Connection, models: Models, scope: Scope, *, min_minutes: int
) -> dict[str, Any]:
    """Per tutor: sessions, minutes (R10), assessments, minutes per assessment; and totals."""
    ms, act = models.MarkingSession, models.SessionActivity
    assessments = sa.func.count(act.id).filter(act.action == ASSESSING)
    counts = conn.execute(
        sa.select(ms.marker_id, sa.func.count(sa.distinct(ms.id)), assessments)
        .select_from(ms)
        .outerjoin(act, act.marking_session_id == ms.id)
        .where(*scope.where(models))
        .group_by(ms.marker_id)
        .order_by(ms.marker_id)
    ).all()
    intervals: dict[int, list[tuple[datetime, datetime]]] = {}
    for marker, start, end in _intervals(conn, models, scope):
        intervals.setdefault(marker, []).append((start, end))

    tutors = [
        with_rate(
            {"marker_id": marker, "sessions": n_sessions, "assessments": n_assessments},
            merged_minutes(intervals[marker], min_minutes),
        )
        for marker, n_sessions, n_assessments in counts
    ]
    totals = with_rate(
        {
            "sessions": sum(t["sessions"] for t in tutors),
            "assessments": sum(t["assessments"] for t in tutors),
        },
        # different tutors' minutes are different people's time: they add up
        sum(t["minutes"] for t in tutors),
    )
    return {"tutors": tutors, "totals": totals}


def with_rate(row: dict[str, Any], minutes: int) -> dict[str, Any]:
    row["minutes"] = minutes
    row["minutes_per_assessment"] = (
        round(minutes / row["assessments"], 1) if row["assessments"] else None
    )
    return row


def _open_minutes(conn: sa.Connection, models: Models, scope: Scope, min_minutes: int) -> Any:
    """A session's minutes as SQL: recorded when closed, running so far when open.

    Open sessions are the live ones (within TIMEOUT of now), so they are few: their running
    minutes are computed here and inlined, keeping the rest of the sum in SQL.
    """
    ms = models.MarkingSession
    running = {
        sid: duration_minutes(start, last, min_minutes)
        for sid, start, last in conn.execute(
            sa.select(ms.id, ms.start_time, last_activity_of(models)).where(
                *scope.where(models), ms.end_time.is_(None)
            )
        )
    }
    if not running:
        return ms.duration_minutes
    return sa.case(running, value=ms.id, else_=ms.duration_minutes)


def tasks(
    conn: sa.Connection, models: Models, scope: Scope, *, min_minutes: int
) -> list[dict[str, Any]]:
    """Per task definition: assessments, distinct tasks and markers, and estimated minutes —
    each session's minutes shared equally among that session's assessments."""
    ms, act = models.MarkingSession, models.SessionActivity
    where = [*scope.where(models), act.action == ASSESSING]
    per_session = (
        sa.select(
            ms.id.label("session_id"),
            (_open_minutes(conn, models, scope, min_minutes) * 1.0 / sa.func.count(act.id)).label(
                "share"
            ),
        )
        .join(act, act.marking_session_id == ms.id)
        .where(*where)
        .group_by(ms.id, ms.duration_minutes)
        .subquery()
    )
    rows = conn.execute(
        sa.select(
            act.task_definition_id,
            sa.func.count(act.id),
            sa.func.count(sa.distinct(act.task_id)),
            sa.func.count(sa.distinct(ms.marker_id)),
            sa.func.sum(per_session.c.share),
        )
        .select_from(act)
        .join(ms, act.marking_session_id == ms.id)
        .join(per_session, per_session.c.session_id == ms.id)
        .where(*where)
        .group_by(act.task_definition_id)
        .order_by(act.task_definition_id.is_(None), act.task_definition_id)
    ).all()
    return [
        {
            "task_definition_id": definition,
            "assessments": n,
            "tasks": n_tasks,
            "markers": n_markers,
            "estimated_minutes": round(float(minutes), 1),
        }
        for definition, n, n_tasks, n_markers, minutes in rows
    ]


def timeline(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    starts: list[datetime],
    tz: ZoneInfo,
    *,
    min_minutes: int,
) -> list[dict[str, Any]]:
    """Minutes (R10 per tutor and bucket), sessions and assessments per bucket.

    ``starts`` are the buckets' first instants in UTC (local midnights, so DST falls right);
    a session belongs to the bucket its start lies in. Every bucket is listed, empty or not.
    """
    ms, act = models.MarkingSession, models.SessionActivity
    buckets: list[dict[str, Any]] = [
        {
            "start": s.astimezone(tz).date().isoformat(),
            "start_time": iso(s),
            "minutes": 0,
            "sessions": 0,
            "assessments": 0,
        }
        for s in starts
    ]
    if not starts:
        return buckets
    # the bucket index, as SQL: the last start at or before the session's start
    index: Any = sa.literal(0)
    if len(starts) > 1:
        index = sa.case(
            *[(ms.start_time < s, i) for i, s in enumerate(starts[1:])], else_=len(starts) - 1
        )
    sessions = (
        sa.select(index.label("bucket"), ms.id.label("session_id"))
        .where(*scope.where(models))
        .subquery()
    )
    for i, n_sessions, n_assessments in conn.execute(
        sa.select(
            sessions.c.bucket,
            sa.func.count(sa.distinct(sessions.c.session_id)),
            sa.func.count(act.id).filter(act.action == ASSESSING),
        )
        .select_from(sessions)
        .outerjoin(act, act.marking_session_id == sessions.c.session_id)
        .group_by(sessions.c.bucket)
    ):
        buckets[i]["sessions"] = n_sessions
        buckets[i]["assessments"] = n_assessments

    intervals: dict[tuple[int, int], list[tuple[datetime, datetime]]] = {}
    for marker, start, end in _intervals(conn, models, scope):
        i = bisect.bisect_right(starts, start) - 1
        intervals.setdefault((max(i, 0), marker), []).append((start, end))
    for (i, _), spans in intervals.items():
        buckets[i]["minutes"] += merged_minutes(spans, min_minutes)
    return buckets
