"""The tasks read model: per task definition and per task, how many assessments, by whom and
how long between them, from the sessions or, over long ranges on PostgreSQL, the tallies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..core.accounting import UTC
from ..core.constants import ASSESSING
from ..store import tallies
from ..store.models import Models
from .scope import Scope, made_once
from .summary import minutes_with, open_minutes, running_minutes, whole_months

TALLIED_FROM = timedelta(weeks=8)


def tasks(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    *,
    min_minutes: int,
    tallied: bool | None = None,
) -> list[dict[str, Any]]:
    """Per task definition: assessments, distinct tasks and markers, and estimated minutes —
    each session's minutes shared equally among that session's assessments.

    On PostgreSQL a closed session's assessments come from the lists it keeps
    (:mod:`~tutor_times.store.figures`): a range reads its sessions, not every one of their activities; the
    others' from their activities. A unit's range of :data:`TALLIED_FROM` or more (or any,
    with ``tallied``) is counted from the unit's tallies (:mod:`~tutor_times.store.tallies`) instead, but for
    the partial UTC days at its edges and the sessions not tallied: the same numbers."""
    if tallied is None:
        tallied = scope.end - scope.start >= TALLIED_FROM
    tallied = (
        tallied
        and conn.dialect.name == "postgresql"
        and scope.unit_id is not None
        and scope.marker_id is None
    )
    days = _whole_days(scope) if tallied else None
    if days is None:
        # made once per range and the open sessions' minutes so far (:func:`made_once`)
        running = running_minutes(conn, models, scope, min_minutes)
        figures = made_once(
            ("tasks", conn.dialect.name, models, scope, tuple(sorted(running.items()))),
            lambda: _task_figures(_assessed(conn, models, scope, min_minutes, running=running)),
        )
        found = {
            definition: (n, n_tasks, n_markers, minutes)
            for definition, n, n_tasks, n_markers, minutes in conn.execute(figures)
        }
    else:
        found = _tallied_tasks(conn, models, scope, days, min_minutes)
    return [
        {
            "task_definition_id": definition,
            "assessments": n,
            "tasks": n_tasks,
            "markers": n_markers,
            "estimated_minutes": round(float(minutes), 1),
        }
        for definition, (n, n_tasks, n_markers, minutes) in sorted(
            found.items(), key=lambda item: (item[0] is None, item[0] or 0)
        )
    ]


def _assessed(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    min_minutes: int,
    *,
    kept_within: list[Scope] | None = None,
    shares: bool = True,
    running: dict[int, int] | None = None,
) -> Any:
    """One row per assessment of the ``scope``'s sessions (task definition, task, marker,
    the share of its session's minutes), as a subquery.

    On PostgreSQL the sessions whose lists agree (:func:`~tutor_times.store.tallies.kept`) read their
    lists, those of them that start within ``kept_within`` (default: the scope); the
    others read their activities. Without ``shares`` the share is NULL (not worked out); with
    ``running`` (the open sessions' minutes so far, :func:`.summary.running_minutes`) the
    shares are of those, else they are read here."""
    ms = models.MarkingSession
    own, n = _assessed_tasks(conn, models)
    # one row per assessment, with its session's minutes and assessment count beside it
    assessed: Any = (
        sa.select(
            own.c.task_definition_id,
            own.c.task_id,
            ms.marker_id,
            (
                _share(
                    conn,
                    open_minutes(conn, models, scope, min_minutes)
                    if running is None
                    else minutes_with(models, running),
                    n,
                )
                if shares
                else sa.null()
            ).label("share"),
        )
        .select_from(ms)
        .join(own, own.c.marking_session_id == ms.id)
        .where(*scope.where(models))
    )
    if conn.dialect.name == "postgresql":
        # lists that agree with the count beside them; the others' activities answer (never
        # NULL: a session is in exactly one of the two branches)
        kept = tallies.kept(ms.__table__)
        other = assessed.where(sa.not_(kept))
        kept_within = [scope] if kept_within is None else kept_within
        if not kept_within:
            return other.subquery()
        assessed = sa.union_all(_from_lists(conn, models, kept, kept_within), other)
    return assessed.subquery()


def _from_lists(conn: sa.Connection, models: Models, kept: Any, within: list[Scope]) -> Any:
    """:func:`_assessed`'s rows of the sessions whose lists agree, that start ``within``: one
    per entry of their lists, with the session's share of its minutes."""
    ms = models.MarkingSession
    # each session's share of its minutes worked out once, not once per assessment
    # (fenced: flattened, the planner would divide on every row of the lists)
    sessions = (
        sa.select(
            ms.marker_id,
            ms.assessed_definitions,
            ms.assessed_tasks,
            _share(conn, ms.duration_minutes, sa.func.nullif(ms.assessments, 0)).label("share"),
        )
        .where(kept, sa.or_(*(sa.and_(*k.where(models)) for k in within)))
        .offset(0)
        .subquery("kept")
    )
    k = sessions.c
    listed = (
        sa.func.unnest(k.assessed_definitions, k.assessed_tasks)
        .table_valued("task_definition_id", "task_id")
        .render_derived(name="listed")
    )
    from_lists = (
        sa.select(listed.c.task_definition_id, listed.c.task_id, k.marker_id, k.share)
        .select_from(sessions)
        .join(listed, sa.true())
    )
    return from_lists


def _task_figures(assessed: Any) -> Any:
    """Per task definition of ``assessed`` (:func:`_assessed`): assessments, distinct tasks
    and markers, and the sum of the shares."""
    c = assessed.c
    return sa.select(
        c.task_definition_id,
        sa.func.count(),
        sa.func.count(sa.distinct(c.task_id)),
        sa.func.count(sa.distinct(c.marker_id)),
        sa.func.sum(c.share),
    ).group_by(c.task_definition_id)


def _whole_days(scope: Scope) -> tuple[date, date] | None:
    """The UTC days wholly within the scope's range, [first, end), or None if there is none
    (or the range reaches the ends of the calendar)."""
    start = scope.start.astimezone(UTC)
    first = start.date()
    try:
        if start != datetime.combine(first, datetime.min.time(), UTC):
            first += timedelta(days=1)
    except OverflowError:
        return None
    end = scope.end.astimezone(UTC).date()
    return (first, end) if first < end else None


def _tallied_tasks(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    days: tuple[date, date],
    min_minutes: int,
) -> dict[Any, tuple[int, int, int, Any]]:
    """:func:`tasks`' figures of a unit's range from its tallies (:mod:`~tutor_times.store.tallies`).

    Assessments and minutes: the whole UTC days' tallies, plus the tallied sessions of the
    partial days at the edges and every session not tallied, read as the report reads them
    (exact decimals: the sums agree to the last digit). Distinct tasks and markers: the keys
    with a tallied session in the range — those first seen before its end and last seen at
    or after its start, less those whose widest gap could straddle it and that have none in
    it, or, when no key of the unit was seen at or after its end, the unit's totals less
    those last seen before its start — plus the keys of the sessions not tallied that have
    no tallied one in it. Whole UTC months among the days come from the months' tallies."""
    running = running_minutes(conn, models, scope, min_minutes)
    # made once per range and the open sessions' minutes so far (:func:`made_once`)
    key = ("tallied", conn.dialect.name, models, scope, tuple(sorted(running.items())))

    def summed() -> Any:
        return _summed_tallies(conn, models, scope, days, min_minutes, running)

    totals = {
        definition: (int(n), minutes)
        for definition, n, minutes in conn.execute(made_once(key, summed))
    }
    distinct = _tallied_distinct(conn, models, scope, min_minutes)
    return {
        (None if definition == tallies.NO_DEFINITION else definition): (
            n,
            distinct.get((definition, tallies.TASK), 0),
            distinct.get((definition, tallies.MARKER), 0),
            minutes,
        )
        for definition, (n, minutes) in totals.items()
        if n
    }


def _summed_tallies(
    conn: sa.Connection,
    models: Models,
    scope: Scope,
    days: tuple[date, date],
    min_minutes: int,
    running: dict[int, int],
) -> Any:
    """:func:`_tallied_tasks`' statement of assessments and minutes per definition: the
    whole days' (and months') tallies and the edges' and untallied sessions' shares, with
    the open sessions' ``running`` minutes."""
    first, end = days
    unit = scope.unit_id
    first_at = datetime.combine(first, datetime.min.time(), UTC)
    end_at = datetime.combine(end, datetime.min.time(), UTC)
    edges = [
        Scope(low, high, unit_id=unit)
        for low, high in ((scope.start, first_at), (end_at, scope.end))
        if low < high
    ]
    c = _assessed(conn, models, scope, min_minutes, kept_within=edges, running=running).c
    tallied = _day_and_month_tallies(models, unit, first, end, first_at, end_at)
    # added up in the database: exact decimals, whatever their number of digits
    both = sa.union_all(
        *tallied,
        sa.select(
            sa.func.coalesce(c.task_definition_id, tallies.NO_DEFINITION),
            sa.literal(1, sa.BigInteger),
            c.share,
        ),
    ).subquery("both")
    b = both.c
    return sa.select(b.definition, sa.func.sum(b.assessments), sa.func.sum(b.minutes)).group_by(
        b.definition
    )


def _tallied_distinct(
    conn: sa.Connection, models: Models, scope: Scope, min_minutes: int
) -> dict[tuple[int, int], int]:
    """Distinct keys (:mod:`~tutor_times.store.tallies`) per (definition, kind) with a session in the scope."""
    made = made_once(("distinct", models, scope), lambda: _Distinct.of(models, scope))
    latest = conn.execute(made.latest).scalar()
    found: dict[tuple[int, int], int] = {}
    if latest is not None and latest < scope.end:
        # no key seen at or after the end: every key but those last seen before the start
        # (none can straddle the range, none starts after it), from the unit's totals
        for definition, kind, n in conn.execute(made.totals):
            found[definition, kind] = n
        for definition, kind, n in conn.execute(made.before):
            found[definition, kind] -= n
    elif latest is not None:
        for definition, kind, n in conn.execute(made.spanning):
            found[definition, kind] = n
    for key, n in _untallied_keys(conn, models, scope, made.none_within).items():
        found[key] = found.get(key, 0) + n
    return found


@dataclass(frozen=True)
class _Distinct:
    """:func:`_tallied_distinct`'s statements of a scope (made once: :func:`made_once`): the
    unit's latest key, its totals, its keys last seen before the range, its keys seen within
    it (less those straddling it), and whether a key has no tallied occurrence in it."""

    latest: Any
    totals: Any
    before: Any
    spanning: Any
    none_within: Callable[[Any], Any]

    @classmethod
    def of(cls, models: Models, scope: Scope) -> _Distinct:
        keys, occurrences = models.AssessedKeys.c, models.Assessed.c
        start, end = scope.start, scope.end

        def none_within(key: Any) -> Any:
            """SQL: ``key`` (columns unit_id, definition, kind, value) has no tallied
            occurrence in the range."""
            return ~sa.exists().where(
                occurrences.unit_id == key.unit_id,
                occurrences.definition == key.definition,
                occurrences.kind == key.kind,
                occurrences.value == key.value,
                occurrences.start_time >= start,
                occurrences.start_time < end,
            )

        spanning = sa.and_(keys.first_start < end, keys.last_start >= start)
        straddling = sa.and_(
            keys.first_start < start,
            keys.last_start >= end,
            keys.widest_gap > end - start,
            none_within(keys),
        )
        totals = models.AssessedTotals.c
        return cls(
            sa.select(sa.func.max(keys.last_start)).where(keys.unit_id == scope.unit_id),
            sa.select(totals.definition, totals.kind, totals["keys"]).where(
                totals.unit_id == scope.unit_id
            ),
            sa.select(keys.definition, keys.kind, sa.func.count())
            .where(keys.unit_id == scope.unit_id, keys.last_start < start)
            .group_by(keys.definition, keys.kind),
            sa.select(
                keys.definition,
                keys.kind,
                sa.func.count().filter(spanning) - sa.func.count().filter(straddling),
            )
            .where(keys.unit_id == scope.unit_id)
            .group_by(keys.definition, keys.kind),
            none_within,
        )


def _day_and_month_tallies(
    models: Models, unit: int | None, first: date, end: date, first_at: datetime, end_at: datetime
) -> list[Any]:
    """(definition, assessments, minutes) of the whole UTC days [first, end) of a unit, as
    statements: the whole months among them from the months' tallies, the other days from
    theirs."""
    tally, per_month = models.AssessedDays.c, models.AssessedMonths.c
    months = whole_months(first_at, end_at) or (end, end)
    tallied = [
        sa.select(tally.definition, tally.assessments, tally.minutes).where(
            tally.unit_id == unit, tally.day >= low, tally.day < high
        )
        for low, high in ((first, months[0]), (months[1], end))
        if low < high
    ]
    if months[0] < months[1]:
        tallied.append(
            sa.select(per_month.definition, per_month.assessments, per_month.minutes).where(
                per_month.unit_id == unit,
                per_month.month >= months[0],
                per_month.month < months[1],
            )
        )
    return tallied


def _untallied_keys(
    conn: sa.Connection, models: Models, scope: Scope, none_within: Callable[[Any], Any]
) -> dict[tuple[int, int], int]:
    """The keys of the scope's sessions not tallied that no tallied session in the range
    has, per (definition, kind)."""
    statement = made_once(
        ("untallied", conn.dialect.name, models, scope),
        lambda: _untallied_statement(conn, models, scope, none_within),
    )
    return {(definition, kind): n for definition, kind, n in conn.execute(statement)}


def _untallied_statement(
    conn: sa.Connection, models: Models, scope: Scope, none_within: Callable[[Any], Any]
) -> Any:
    """:func:`_untallied_keys`' statement (``conn`` is read for its backend alone)."""
    c = _assessed(conn, models, scope, 0, kept_within=[], shares=False).c
    definition = sa.func.coalesce(c.task_definition_id, tallies.NO_DEFINITION)
    unit = sa.literal(scope.unit_id, sa.BigInteger)
    others = sa.union(
        sa.select(
            unit.label("unit_id"),
            definition.label("definition"),
            sa.literal(tallies.TASK, sa.SmallInteger).label("kind"),
            c.task_id.label("value"),
        ).where(c.task_id.is_not(None)),
        sa.select(
            unit,
            definition,
            sa.literal(tallies.MARKER, sa.SmallInteger),
            c.marker_id,
        ),
    ).subquery("others")
    o = others.c
    return (
        sa.select(o.definition, o.kind, sa.func.count())
        .where(none_within(o))
        .group_by(o.definition, o.kind)
    )


def _share(conn: sa.Connection, minutes: Any, n: Any) -> Any:
    """SQL: each of a session's ``n`` assessments' share of its ``minutes``; on PostgreSQL
    in exact decimals, divided as the tallies divide (``tallies.SHARE``): every way of
    adding them up must give the same sum to the last digit."""
    if conn.dialect.name == "postgresql":
        return sa.cast(minutes, sa.Numeric) / sa.cast(n, sa.Numeric)
    return minutes * 1.0 / n


def _assessed_tasks(conn: sa.Connection, models: Models) -> tuple[Any, Any]:
    """The assessments (session, task definition, task) to join to the range's sessions,
    and how to count each one's session's assessments.

    On PostgreSQL a LATERAL subquery per session, read from the covering
    (marking_session_id, created_at) index session by session however long the range (over
    two years a plain join made the planner scan every activity of every unit), which
    counts its session's assessments itself rather than in a window over all of them (a
    sort of every assessment of the range by session)."""
    act = models.SessionActivity
    columns = [act.marking_session_id, act.task_definition_id, act.task_id]
    ms = models.MarkingSession
    if conn.dialect.name == "postgresql":
        own = (
            sa.select(*columns, sa.func.count().over().label("n"))
            .where(act.marking_session_id == ms.id, act.action == ASSESSING)
            .offset(sa.literal_column("0"))  # kept a subquery: the planner would flatten it
            .lateral("assessed_tasks")
        )
        return own, own.c.n
    plain = sa.select(*columns).where(act.action == ASSESSING).subquery("assessed_tasks")
    return plain, sa.func.count().over(partition_by=ms.id)
