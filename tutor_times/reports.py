"""Report queries: pure functions of a connection and their arguments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .accounting import duration_minutes, merged_minutes
from .closer import last_activity_of
from .models import Models

#: the action that counts as one assessment
ASSESSING = "assessing"


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
            "start_time": _iso(r.start_time),
            "last_activity": _iso(r.last_activity),
            "duration_minutes": duration_minutes(r.start_time, r.last_activity, min_minutes),
            "active": True,
        }
        for r in rows
    ]


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def summary(
    conn: sa.Connection,
    models: Models,
    *,
    unit_id: int,
    start: datetime,
    end: datetime,
    marker_id: int | None,
    min_minutes: int,
) -> dict[str, Any]:
    """Per tutor: sessions, minutes (R10), assessments, minutes per assessment; and totals.

    Sessions are those that started in [start, end). Counting happens in SQL; only the
    interval merge of R10 walks each tutor's sessions. An open session counts up to its
    last activity so far.
    """
    ms, act = models.MarkingSession, models.SessionActivity
    scope = [ms.unit_id == unit_id, ms.start_time >= start, ms.start_time < end]
    if marker_id is not None:
        scope.append(ms.marker_id == marker_id)
    assessments = sa.func.count(act.id).filter(act.action == ASSESSING)
    counts = conn.execute(
        sa.select(ms.marker_id, sa.func.count(sa.distinct(ms.id)), assessments)
        .select_from(ms)
        .outerjoin(act, act.marking_session_id == ms.id)
        .where(*scope)
        .group_by(ms.marker_id)
        .order_by(ms.marker_id)
    ).all()
    ends = sa.func.coalesce(ms.end_time, last_activity_of(models))
    intervals: dict[int, list[tuple[datetime, datetime]]] = {}
    for marker, s_start, s_end in conn.execute(
        sa.select(ms.marker_id, ms.start_time, ends.label("end")).where(*scope)
    ):
        intervals.setdefault(marker, []).append((s_start, s_end))

    tutors = [
        _totals(
            {"marker_id": marker, "sessions": n_sessions, "assessments": n_assessments},
            merged_minutes(intervals[marker], min_minutes),
        )
        for marker, n_sessions, n_assessments in counts
    ]
    totals = _totals(
        {
            "sessions": sum(t["sessions"] for t in tutors),
            "assessments": sum(t["assessments"] for t in tutors),
        },
        # different tutors' minutes are different people's time: they add up
        sum(t["minutes"] for t in tutors),
    )
    return {"unit_id": unit_id, "tutors": tutors, "totals": totals}


def _totals(row: dict[str, Any], minutes: int) -> dict[str, Any]:
    row["minutes"] = minutes
    row["minutes_per_assessment"] = (
        round(minutes / row["assessments"], 1) if row["assessments"] else None
    )
    return row
