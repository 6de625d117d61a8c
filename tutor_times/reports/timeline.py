"""The timeline read model: minutes and assessments per bucket (day, week or month) in a time
zone, from the stored figures."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ..store.class_times import Timetable, with_split
from ..store.models import Models
from .figured import bucket_index, figured_by
from .merge import counts_by, merged_split_by
from .scope import Scope


def empty_buckets(starts: list[datetime], tz: ZoneInfo) -> list[dict[str, Any]]:
    """A timeline's buckets with nothing counted yet: each bucket's first day in ``tz`` and
    first instant."""
    return [
        {
            "start": s.astimezone(tz).date(),
            "start_time": s,
            "minutes": 0,
            "sessions": 0,
            "assessments": 0,
        }
        for s in starts
    ]


def timeline(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    starts: list[datetime],
    tz: ZoneInfo,
    *,
    min_minutes: int,
    timetable: Timetable | None = None,
    stored: bool = True,
) -> list[dict[str, Any]]:
    """Minutes (R10), sessions and assessments per bucket; every bucket listed, empty or not.
    With a ``timetable``, each bucket's minutes are also split by R12 (as its blocks are).
    From the stored figures, as :func:`summary` is.

    ``starts`` are the buckets' first instants in UTC (local midnights, so DST falls right).
    Sessions and assessments count in the bucket each session starts in. A tutor's
    overlapping sessions are merged over the whole range, as the summary merges them, and
    each merged block's minutes count in the bucket the block starts in: so the buckets
    always add up to the summary of the same range, and no minute counts twice.
    """
    buckets = empty_buckets(starts, tz)
    if not starts:
        return buckets
    if stored:
        figures = figured_by(
            conn,
            models,
            scope,
            min_minutes=min_minutes,
            starts=starts,
            per_marker=False,
            timetable=timetable,
        )
        for (value, _), (n_sessions, n_assessments, total, _during) in figures.items():
            buckets[value or 0].update(
                sessions=n_sessions, assessments=n_assessments, minutes=total
            )
        if timetable is not None:
            for n, b in enumerate(buckets):
                with_split(b, figures.get((n, None), [0, 0, 0, 0])[3])
        return buckets
    index = bucket_index(conn, starts)
    for i, n_sessions, n_assessments in counts_by(
        conn, models, scope, index(models.MarkingSession.start_time)
    ):
        buckets[i]["sessions"] = n_sessions
        buckets[i]["assessments"] = int(n_assessments)
    minutes = merged_split_by(
        conn, models, scope, min_minutes=min_minutes, bucket=index, timetable=timetable
    )
    for (i, _), (total, _during) in minutes.items():
        buckets[i]["minutes"] += total
    if timetable is not None:
        during = [0] * len(buckets)
        for (i, _), (_total, d) in minutes.items():
            during[i] += d
        for b, d in zip(buckets, during, strict=True):
            with_split(b, d)
    return buckets
