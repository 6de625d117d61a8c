"""The sessions read model: a unit's live sessions, a page of sessions, one session with its
activities, and the units a tutor marked in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..core.accounting import duration_minutes
from ..core.constants import ASSESSING
from ..store.models import CLIENT, Models
from ..store.sql import last_activity_of
from .merge import figured_assessments
from .scope import Scope, last_activity, made_once, minutes_so_far


def active_sessions(
    conn: sa.Connection,
    models: Models,
    *,
    unit_id: int,
    marker_id: int | None,
    live_after: datetime,
    min_minutes: int,
) -> list[dict[str, Any]]:
    """The unit's live sessions (of one marker, when given), oldest first.

    Live means open with a last activity after ``live_after`` (now − TIMEOUT): an idle
    session that no sweep has closed yet is over all the same (R2), so it is not listed.
    ``duration_minutes`` runs to the last activity so far: what the session would
    record if it ended now (R3, R4).
    """
    ms = models.MarkingSession
    last_activity = last_activity_of(models)
    last = last_activity.label("last_activity")
    query = sa.select(ms.id, ms.marker_id, ms.ip_address, ms.start_time, last).where(
        ms.unit_id == unit_id, ms.end_time.is_(None), last_activity > live_after
    )
    if marker_id is not None:
        query = query.where(ms.marker_id == marker_id)
    rows = conn.execute(query.order_by(ms.start_time, ms.id)).all()
    return [
        {
            "id": r.id,
            "marker_id": r.marker_id,
            "ip_address": r.ip_address,
            "start_time": r.start_time,
            "last_activity": r.last_activity,
            "duration_minutes": duration_minutes(r.start_time, r.last_activity, min_minutes),
            "active": True,
        }
        for r in rows
    ]


def _session_rows(
    conn: sa.Connection,
    models: Models,
    query: Callable[[], Any],
    live_after: datetime,
    min_minutes: int,
    *,
    by_action: bool = True,
    key: tuple[Any, ...] | None = None,
) -> list[Any]:
    """Sessions selected by ``query()`` (a WHERE/ORDER/LIMIT over marking_sessions), with
    their activity counts by action, as response rows. ``active`` is true for an open
    session whose last activity is after ``live_after``, as in :func:`active_sessions`.

    Without ``by_action`` a row has its assessments only, in the same statement: those a
    closed session's figures keep (:mod:`~tutor_times.store.figures`), the others' counted.

    With a ``key`` (what the query depends on), the statement is made once for it
    (:func:`~.scope.made_once`)."""
    act = models.SessionActivity

    def statement() -> Any:
        return query().with_only_columns(*_row_columns(models, by_action))

    selected = statement() if key is None else made_once((*key, by_action), statement)
    rows = conn.execute(selected).all()
    if not by_action:
        return _calendar_rows(rows, live_after, min_minutes)
    counts: dict[int, dict[str, int]] = {r.id: {} for r in rows}
    reported: dict[int, int] = dict.fromkeys(counts, 0)
    if rows:
        for sid, action, source, n in conn.execute(
            sa.select(act.marking_session_id, act.action, act.source, sa.func.count())
            .where(act.marking_session_id.in_(list(counts)))
            .group_by(act.marking_session_id, act.action, act.source)
            .order_by(act.marking_session_id, act.action)
        ):
            counts[sid][action] = counts[sid].get(action, 0) + n
            if source == CLIENT:
                reported[sid] += n
    return [
        {
            **_session_row(r, live_after, min_minutes),
            "assessments": counts[r.id].get(ASSESSING, 0),
            "activities": counts[r.id],
            "client_activities": reported[r.id],
        }
        for r in rows
    ]


def _row_columns(models: Models, by_action: bool) -> list[Any]:
    """What :func:`_session_rows` reads of each session (without ``by_action``, its
    assessments too)."""
    ms = models.MarkingSession
    columns = [
        ms.id,
        ms.marker_id,
        ms.unit_id,
        ms.ip_address,
        ms.start_time,
        ms.end_time,
        ms.duration_minutes,
        last_activity(models).label("last_activity"),
    ]
    if not by_action:
        columns.append(figured_assessments(models).label("assessments"))
    return columns


def _calendar_rows(rows: Sequence[Any], live_after: datetime, min_minutes: int) -> list[Any]:
    """:func:`_session_row` of each of ``rows`` with its assessments, the rows unpacked as
    tuples (a calendar's week is hundreds of sessions: a column read by name costs more)."""
    return [
        {
            "id": sid,
            "marker_id": marker,
            "unit_id": unit,
            "ip_address": ip,
            "start_time": start,
            "end_time": end,
            "last_activity": last,
            "duration_minutes": int(minutes)
            if minutes is not None
            else duration_minutes(start, last, min_minutes),
            "active": end is None and last > live_after,
            "assessments": assessments,
        }
        for sid, marker, unit, ip, start, end, minutes, last, assessments in rows
    ]


def _session_row(r: Any, live_after: datetime, min_minutes: int) -> dict[str, Any]:
    return {
        "id": r.id,
        "marker_id": r.marker_id,
        "unit_id": r.unit_id,
        "ip_address": r.ip_address,
        "start_time": r.start_time,
        "end_time": r.end_time,
        "last_activity": r.last_activity,
        "duration_minutes": minutes_so_far(r, min_minutes),
        "active": r.end_time is None and r.last_activity > live_after,
    }


def units_of(conn: sa.Connection, models: Models, scope: Scope, *, min_minutes: int) -> list[int]:
    """The units the scope's sessions are in (a tutor's own report across units)."""
    ms = models.MarkingSession
    query = sa.select(ms.unit_id).where(*scope.where(models)).distinct().order_by(ms.unit_id)
    return list(conn.execute(query).scalars())


def sessions_page(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    *,
    page: int,
    per_page: int,
    live_after: datetime,
    min_minutes: int,
    by_action: bool = True,
) -> dict[str, Any]:
    """One page of the scope's sessions, newest first, and how many there are in all.

    Without ``by_action`` each session's assessments are its only counts (the
    calendar's): no second statement over the page's activities."""
    ms = models.MarkingSession
    skipped = (page - 1) * per_page

    def query() -> Any:
        return (
            sa.select(ms.id)
            .where(*scope.where(models))
            .order_by(ms.start_time.desc(), ms.id.desc())
            .limit(per_page)
            .offset(skipped)
        )

    key = ("page", models, scope, page, per_page)
    rows = _session_rows(conn, models, query, live_after, min_minutes, by_action=by_action, key=key)
    if len(rows) < per_page and (rows or page == 1):
        # the last page: the sessions before it and its own are all there are (a
        # calendar's week is one page)
        total = skipped + len(rows)
    else:
        counted = made_once(
            ("count", models, scope),
            lambda: sa.select(sa.func.count()).select_from(ms).where(*scope.where(models)),
        )
        total = conn.execute(counted).scalar_one()
    return {"page": page, "per_page": per_page, "total": total, "sessions": rows}


def session_detail(
    conn: sa.Connection,
    models: Models,
    session_id: int,
    *,
    live_after: datetime,
    min_minutes: int,
) -> dict[str, Any] | None:
    """One session with every activity, oldest first; None when there is no such session."""
    ms, act = models.MarkingSession, models.SessionActivity
    rows = _session_rows(
        conn, models, lambda: sa.select(ms.id).where(ms.id == session_id), live_after, min_minutes
    )
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
            act.source,
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
        "created_at": a.created_at,
        "project_id": a.project_id,
        "task_id": a.task_id,
        "task_definition_id": a.task_definition_id,
        "source": a.source,
    }
