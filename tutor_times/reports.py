"""Report queries: pure functions of a connection and their arguments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .accounting import duration_minutes
from .closer import last_activity_of
from .models import Models


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
            "last_activity": _iso(r.last_activity or r.start_time),
            "duration_minutes": duration_minutes(
                r.start_time, r.last_activity or r.start_time, min_minutes
            ),
            "active": True,
        }
        for r in rows
    ]


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")
