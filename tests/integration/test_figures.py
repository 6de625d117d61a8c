"""The stored figures (store/figures.py) give the numbers the raw sessions and activities give.

Random histories reach the tables through every writer — live tracking (late activities
placed among closed sessions included), sweeps, an import, a rebuild under another timeout,
a purge — with a tutor's sessions from two addresses overlapping (R10) and some sessions
left open. Then every report over ranges of local days in zones whose offsets are not whole
hours is compared with the same figures computed here, in Python, from the raw rows; and the
stored figures with those recomputed from scratch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from demo.extensions import db, tutor_times
from tutor_times.core.accounting import duration_minutes, to_micros
from tutor_times.reports.scope import Scope
from tutor_times.reports.summary import _rolled_months, summary
from tutor_times.reports.tasks import tasks
from tutor_times.reports.timeline import timeline
from tutor_times.store import figures
from tutor_times.store.class_times import Timetable

from ..conftest import BACKENDS, T0, Clock, build, check_tallies
from ..events import play, record

MIN_MINUTES = 1
UTC = ZoneInfo("UTC")
ZONES = ["UTC", "Australia/Adelaide", "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham"]
EXAMPLES = int(os.environ.get("TUTOR_TIMES_PROPERTY_EXAMPLES", "25"))

#: (kind, key index, minutes after the previous event, how late it arrives in seconds, action)
act = st.tuples(
    st.just("act"),
    st.sampled_from([0, 0, 1, 2, 3]),
    st.one_of(st.sampled_from([0, 1, 14, 15, 16, 59, 61]), st.integers(0, 600)),
    st.sampled_from([0, 0, 0, 30, 60]),
    st.sampled_from(["assessing", "assessing", "inbox"]),
)
other = st.tuples(
    st.sampled_from(["sweep", "import", "rebuild", "purge"]),
    st.just(0),
    st.integers(0, 300),
    st.just(0),
    st.just(""),
)
EVENTS = st.lists(st.one_of(act, act, act, other), min_size=1, max_size=25)
RANGES = st.tuples(st.sampled_from(ZONES), st.integers(-1, 3), st.integers(1, 4))


#: histories over months: up to 25 days between two events
LONG_ACT = st.tuples(
    st.just("act"),
    st.sampled_from([0, 0, 1, 2, 3]),
    st.one_of(st.sampled_from([0, 1, 15, 16, 61]), st.integers(0, 25 * 24 * 60)),
    st.sampled_from([0, 0, 30]),
    st.sampled_from(["assessing", "assessing", "inbox"]),
)
LONG_EVENTS = st.lists(st.one_of(LONG_ACT, LONG_ACT, LONG_ACT, other), min_size=1, max_size=40)
#: (zone, first day after T0's, days): most of them long enough to hold a whole month
LONG_RANGES = st.tuples(st.sampled_from(ZONES), st.integers(-40, 120), st.integers(20, 400))


@pytest.fixture(scope="module", params=BACKENDS)
def figures_app(request: pytest.FixtureRequest) -> Iterator[Flask]:
    yield from build(str(request.param))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(EVENTS, st.lists(RANGES, min_size=1, max_size=3))
# two addresses of one tutor overlapping, one session closed and one open
@example(
    [
        ("act", 0, 0, 0, "assessing"),
        ("act", 1, 5, 0, "assessing"),
        ("act", 0, 10, 0, "inbox"),
        ("sweep", 0, 20, 0, ""),
        ("act", 1, 1, 0, "assessing"),
    ],
    [("Australia/Adelaide", 0, 1)],
)
# an import into closed history, a rebuild under a shorter timeout, then a purge
@example(
    [
        ("act", 0, 0, 0, "assessing"),
        ("act", 0, 14, 0, "assessing"),
        ("import", 0, 0, 0, ""),
        ("rebuild", 0, 30, 0, ""),
        ("purge", 0, 60, 0, ""),
    ],
    [("Asia/Kathmandu", -1, 3)],
)
# a tutor's and an import's tasks three days apart, around a day when only another tutor
# marks: keys whose first and last starts straddle the range and that have no session in it
@example(
    [
        ("act", 0, 0, 0, "assessing"),
        ("import", 0, 10, 0, ""),
        ("sweep", 0, 30, 0, ""),
        ("act", 2, 24 * 60, 0, "assessing"),
        ("import", 0, 0, 0, ""),
        ("sweep", 0, 30, 0, ""),
        ("act", 0, 2 * 24 * 60, 0, "assessing"),
        ("import", 0, 0, 0, ""),
        ("sweep", 0, 30, 0, ""),
    ],
    [("UTC", 1, 1), ("Asia/Kathmandu", 0, 3)],
)
@pytest.mark.slow
def test_reports_from_stored_figures_equal_the_raw_computation(
    figures_app: Flask,
    clock: Clock,
    events: list[tuple[Any, ...]],
    ranges: list[tuple[str, int, int]],
) -> None:
    with played(figures_app, clock, events) as (conn, models):
        for zone, first_day, days in ranges:
            tz = ZoneInfo(zone)
            for unit in (1, None):
                for bucket in ("day", "week"):
                    starts = bucket_starts(tz, first_day, days, bucket)
                    end = local_midnight(tz, T0.date() + timedelta(days=first_day + days))
                    for marker in (None, 3):
                        scope = Scope(starts[0], end, unit_id=unit, marker_id=marker)
                        check_reports(conn, models, scope, starts, tz)
                        if unit is not None:
                            check_split(conn, models, scope, starts, tz)
        assert stored_figures(conn, models) == figures_from_scratch(conn, models)
        check_tallies(conn, models)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(LONG_EVENTS, st.lists(LONG_RANGES, min_size=1, max_size=3), st.sampled_from([1, 3, 11]))
# a tutor's blocks over three months, one of them across a month's end, and one left open
@example(
    [
        ("act", 0, 0, 0, "assessing"),
        ("act", 1, 5, 0, "assessing"),
        ("act", 0, 20 * 24 * 60, 0, "assessing"),
        ("act", 2, 20 * 24 * 60, 0, "inbox"),
        ("sweep", 0, 30, 0, ""),
        ("act", 0, 15 * 24 * 60, 0, "assessing"),
        ("act", 0, 10, 0, "assessing"),
        ("import", 0, 20 * 24 * 60, 0, ""),
        ("act", 1, 20 * 24 * 60, 0, "assessing"),
    ],
    [("UTC", 0, 120), ("Australia/Adelaide", -3, 200), ("Asia/Kathmandu", 20, 45)],
    1,
)
@pytest.mark.slow
def test_summaries_over_months_from_the_roll_up_equal_the_raw_computation(
    figures_app: Flask,
    clock: Clock,
    events: list[tuple[Any, ...]],
    ranges: list[tuple[str, int, int]],
    min_minutes: int,
) -> None:
    """A unit's summary adding up whole months from the roll-up (store/rollups.py; PostgreSQL)
    gives the numbers of every session counted and merged again, under minimums the roll-up
    keeps (1, 3) and one it does not (11: counted from the sessions); its tasks report from
    the tallies' months and the units' totals of keys, the numbers of the range's
    sessions."""
    with played(figures_app, clock, events) as (conn, models):
        for zone, first_day, days in ranges:
            tz = ZoneInfo(zone)
            start = local_midnight(tz, T0.date() + timedelta(days=first_day))
            end = local_midnight(tz, T0.date() + timedelta(days=first_day + days))
            scope = Scope(start, end, unit_id=1)
            raw = summary(conn, models, scope, min_minutes=min_minutes, stored=False)
            for rolled in (True, False):
                assert summary(conn, models, scope, min_minutes=min_minutes, rolled=rolled) == raw
            # the tasks report from the tallies (their months, the units' totals of keys)
            # as counted from the range's sessions
            counted = [
                tasks(conn, models, scope, min_minutes=min_minutes, tallied=tallied)
                for tallied in (True, False)
            ]
            assert counted[0] == counted[1]
        check_tallies(conn, models)


def test_a_long_range_adds_up_the_months_no_cut_block_reaches(
    figures_app: Flask, clock: Clock
) -> None:
    """A session every ten days from 2 March for four months, then one left open in June:
    from 2 March 10:00 on, April and May come from the roll-up on PostgreSQL, and March's
    and June's sessions are counted one by one (the range starts inside March, and the open
    session's block may not be cut from June's)."""
    day = 24 * 60
    events = [("act", 0, 0, 0, "assessing")] + [("act", 0, 10 * day, 0, "assessing")] * 11
    events += [("sweep", 0, 30, 0, ""), ("act", 1, 20, 0, "assessing")]
    with played(figures_app, clock, events) as (conn, models):
        scope = Scope(datetime(2026, 3, 2, 10, tzinfo=UTC), clock() + timedelta(days=1), unit_id=1)
        months = _rolled_months(conn, models, scope, MIN_MINUTES)
        if conn.dialect.name != "postgresql":
            assert months is None  # no roll-up kept: every session counted
        else:
            assert months is not None
            counted, pieces = months
            assert pieces == [
                (scope.start, datetime(2026, 4, 1, tzinfo=UTC)),
                (datetime(2026, 6, 1, tzinfo=UTC), scope.end),
            ]
            assert {marker: n for marker, (n, _, _) in counted.items()} == {3: 7}
        for minimum in (1, 3, 11):
            raw = summary(conn, models, scope, min_minutes=minimum, stored=False)
            assert summary(conn, models, scope, min_minutes=minimum, rolled=True) == raw
            # the first started at 9:00; the open one counts
            assert raw["totals"]["sessions"] == 12
            assert raw["totals"]["minutes"] == 12 * minimum  # one activity each


def from_april(clock: Clock) -> Scope:
    """Unit 1's range from 1 April (UTC) to a day after the last event."""
    return Scope(datetime(2026, 4, 1, tzinfo=UTC), clock() + timedelta(days=1), unit_id=1)


def test_a_tutor_last_seen_before_a_range_that_reaches_the_end_is_not_counted(
    figures_app: Flask, clock: Clock
) -> None:
    """Tutor 4 assesses on 2 March only, tutor 3 in April and May. Over April to the end of
    the history, the tasks report counts its tutors as the unit's totals less those last
    seen before April (PostgreSQL): one, as counting the range's sessions does."""
    day = 24 * 60
    events = [
        ("act", 2, 0, 0, "assessing"),
        ("act", 0, 40 * day, 0, "assessing"),
        ("act", 0, 30 * day, 0, "assessing"),
        ("sweep", 0, 30, 0, ""),
    ]
    with played(figures_app, clock, events) as (conn, models):
        scope = from_april(clock)
        counted = [
            tasks(conn, models, scope, min_minutes=MIN_MINUTES, tallied=tallied)
            for tallied in (True, False)
        ]
        assert counted[0] == counted[1]
        assert [(t["assessments"], t["markers"]) for t in counted[0]] == [(2, 1)]


def test_a_block_across_a_months_start_is_merged_again_not_added_up(
    figures_app: Flask, clock: Clock
) -> None:
    """A tutor's session from 31 March 23:50 to 1 April 00:02 (UTC) and another from another
    address starting at 00:01 overlap: one block. From 1 April on, the range cuts it, so
    its April session is merged again from its start; April is read session by session
    (the unit's longest block reaches into it), and only the months after come from the
    roll-up."""
    before = (datetime(2026, 3, 31, 23, 50, tzinfo=UTC) - T0) // timedelta(minutes=1)
    day = 24 * 60
    events = [
        ("act", 0, before, 0, "assessing"),
        ("act", 0, 10, 0, "assessing"),
        ("act", 1, 1, 0, "assessing"),
        ("act", 0, 1, 0, "assessing"),
        *[("act", 0, 12 * day, 0, "assessing")] * 8,
        ("sweep", 0, 30, 0, ""),
    ]
    with played(figures_app, clock, events) as (conn, models):
        scope = from_april(clock)
        months = _rolled_months(conn, models, scope, MIN_MINUTES)
        if conn.dialect.name == "postgresql":
            assert months is not None
            assert months[1][0] == (scope.start, datetime(2026, 5, 1, tzinfo=UTC))
        for minimum in (1, 3):
            raw = summary(conn, models, scope, min_minutes=minimum, stored=False)
            assert summary(conn, models, scope, min_minutes=minimum, rolled=True) == raw
            # the April part of the block, and eight sessions after it
            assert raw["totals"]["sessions"] == 9


def test_a_range_that_cuts_a_block_counts_only_its_sessions_in_the_range(
    figures_app: Flask, clock: Clock
) -> None:
    """Sessions of one tutor chained across midnight: the day's report merges only the day's
    sessions, as the raw computation does, not the stored block they belong to."""
    reset(figures_app)
    tz = ZoneInfo("UTC")
    midnight = local_midnight(tz, T0.date() + timedelta(days=1))
    with figures_app.app_context():
        chained = [(-50, 0), (-40, 0), (-30, 0), (-20, 0), (-25, 1), (-15, 1), (-5, 1), (5, 1)]
        chained += [(15, 1), (0, 0), (10, 0), (20, 0), (30, 0)]
        for minutes, key in sorted(chained):
            at = midnight + timedelta(minutes=minutes)
            clock.set(at)
            record(key, at, "assessing")
        tutor_times.close_expired_sessions(midnight + timedelta(hours=2))
    with figures_app.app_context(), db.engine.connect() as conn:
        models = tutor_times.models
        ms = models.MarkingSession
        spans = conn.execute(
            sa.select(ms.block_start, ms.block_last_start).where(ms.block_minutes.is_not(None))
        ).all()
        assert [(b.block_start < midnight <= b.block_last_start) for b in spans] == [True]
        for first, last in [(midnight - timedelta(days=1), midnight), (midnight, None)]:
            end = last or midnight + timedelta(days=1)
            check_reports(conn, models, Scope(first, end, unit_id=1), [first], tz)


def test_a_session_that_starts_as_another_ends_joins_its_block(
    figures_app: Flask, clock: Clock
) -> None:
    """R10 merges sessions that touch: one tutor's second address starts at the very
    instant the first one's session ends. Apart, 10 + 10 minutes; one block, 21."""
    reset(figures_app)
    seam = T0 + timedelta(minutes=10, seconds=30)
    with figures_app.app_context():
        for key, at in [
            (0, T0),
            (0, seam),
            (1, seam),
            (1, seam + timedelta(minutes=10, seconds=30)),
        ]:
            clock.set(at)
            record(key, at, "assessing")
        tutor_times.close_expired_sessions(T0 + timedelta(hours=2))
    with figures_app.app_context(), db.engine.connect() as conn:
        models = tutor_times.models
        ms = models.MarkingSession
        assert sorted(conn.scalars(sa.select(ms.block_minutes)), key=lambda m: m is None) == [
            21,
            None,
        ]
        scope = Scope(T0, T0 + timedelta(days=1), unit_id=1)
        for stored in (True, False):
            [row] = summary(conn, models, scope, min_minutes=MIN_MINUTES, stored=stored)["tutors"]
            assert row["minutes"] == 21
            # R4's minimum is applied when read: another MIN_MINUTES needs nothing rewritten
            [row] = summary(conn, models, scope, min_minutes=30, stored=stored)["tutors"]
            assert row["minutes"] == 30
        check_reports(conn, models, scope, [T0], ZoneInfo("UTC"))


def test_lists_an_earlier_writer_left_unset_or_short_are_not_read_and_are_mended(
    figures_app: Flask, clock: Clock
) -> None:
    """A process of the version before the assessed tasks were kept may still close a
    session (no lists) or add an assessment to a closed one (a count one ahead of its
    lists): the tasks report then reads those sessions' activities, and the next upkeep
    of the tutor counts their lists again."""
    reset(figures_app)
    with figures_app.app_context():
        for n, key in enumerate([0, 0, 1, 1, 2, 2]):
            at = T0 + timedelta(minutes=20 * n)
            clock.set(at)
            record(key, at, "assessing")
            record(key, at + timedelta(minutes=1), "assessing")
        tutor_times.close_expired_sessions(T0 + timedelta(hours=5))
    with figures_app.app_context(), db.engine.connect() as conn:
        models = tutor_times.models
        ms = models.MarkingSession
        unset, short = conn.scalars(sa.select(ms.id).order_by(ms.id).limit(2)).all()
        conn.execute(
            sa.update(ms.__table__)
            .where(ms.id == unset)
            .values(assessed_definitions=None, assessed_tasks=None)
        )
        conn.execute(
            sa.update(ms.__table__)
            .where(ms.id == short)
            .values(assessed_definitions=[None], assessed_tasks=[None])
        )
        scope = Scope(T0, T0 + timedelta(days=1), unit_id=1)
        check_reports(conn, models, scope, [T0], ZoneInfo("UTC"))
        marker = conn.execute(sa.select(ms.marker_id).where(ms.id == unset)).scalar_one()
        figures.refresh(conn, models, [figures.Touch(1, marker, T0, T0 + timedelta(hours=5))])
        mended = conn.execute(
            sa.select(ms.assessments, ms.assessed_definitions).where(ms.id.in_([unset, short]))
        ).all()
        assert [(n, len(listed)) for n, listed in mended] == [(2, 2), (2, 2)]


# -- driving the writers ------------------------------------------------------------------


@contextmanager
def played(
    app: Flask, clock: Clock, events: list[tuple[Any, ...]]
) -> Iterator[tuple[sa.Connection, Any]]:
    """``events`` played from scratch; a connection to read them, and the tables."""
    reset(app)
    play(app, clock, events)
    with app.app_context(), db.engine.connect() as conn:
        yield conn, tutor_times.models


def reset(app: Flask) -> None:
    with app.app_context():
        for table in (tutor_times.SessionActivity, tutor_times.MarkingSession):
            db.session.execute(table.__table__.delete())
        db.session.commit()


# -- the raw computation ------------------------------------------------------------------


def local_midnight(tz: ZoneInfo, day: date) -> datetime:
    return datetime.combine(day, time(), tz).astimezone(ZoneInfo("UTC"))


def bucket_starts(tz: ZoneInfo, first_day: int, days: int, bucket: str) -> list[datetime]:
    first = T0.date() + timedelta(days=first_day)
    step = 7 if bucket == "week" else 1
    return [local_midnight(tz, first + timedelta(days=d)) for d in range(0, days, step)]


def raw_sessions(conn: sa.Connection, models: Any, scope: Scope) -> list[dict[str, Any]]:
    """The scope's sessions with their span so far and their assessments, from the rows."""
    ms, act = models.MarkingSession, models.SessionActivity
    found = conn.execute(sa.select(ms).where(*scope.where(models))).all()
    out = []
    for s in found:
        acts = conn.execute(
            sa.select(act.action, act.created_at, act.task_id, act.task_definition_id).where(
                act.marking_session_id == s.id
            )
        ).all()
        last = s.end_time or max([a.created_at for a in acts], default=s.start_time)
        assessed = [a for a in acts if a.action == "assessing"]
        out.append(
            {
                "unit": s.unit_id,
                "marker": s.marker_id,
                "start": s.start_time,
                "last": last,
                "assessments": len(assessed),
                "minutes": s.duration_minutes or duration_minutes(s.start_time, last, MIN_MINUTES),
                "tasks": [(a.task_definition_id, a.task_id) for a in assessed],
            }
        )
    return out


def raw_minutes(sessions: list[dict[str, Any]], bucket: Any) -> dict[tuple[Any, int], int]:
    """R10 written out here, apart from the package's walk: a tutor's sessions in a unit,
    by start, each joining the block before it when it starts at or before that block's
    end; a block's minutes (R4) in the bucket of its first start."""
    spans: dict[tuple[int, int], list[tuple[datetime, datetime]]] = {}
    for s in sessions:
        spans.setdefault((s["unit"], s["marker"]), []).append((s["start"], s["last"]))
    totals: dict[tuple[Any, int], int] = {}
    for (_, marker), tutor_spans in spans.items():
        blocks: list[list[datetime]] = []
        for start, last in sorted(tutor_spans):
            if blocks and start <= blocks[-1][1]:
                blocks[-1][1] = max(blocks[-1][1], last)
            else:
                blocks.append([start, last])
        for first, last in blocks:
            key = (bucket(first), marker)
            totals[key] = totals.get(key, 0) + duration_minutes(first, last, MIN_MINUTES)
    return totals


def check_reports(
    conn: sa.Connection, models: Any, scope: Scope, starts: list[datetime], tz: ZoneInfo
) -> None:
    sessions = raw_sessions(conn, models, scope)
    got = summary(conn, models, scope, min_minutes=MIN_MINUTES)
    minutes = raw_minutes(sessions, lambda _: None)
    expected: dict[int, list[int]] = {}
    for s in sessions:
        row = expected.setdefault(s["marker"], [0, 0])
        row[0] += 1
        row[1] += s["assessments"]
    assert {
        t["marker_id"]: (t["sessions"], t["assessments"], t["minutes"]) for t in got["tutors"]
    } == {m: (n, a, minutes[None, m]) for m, (n, a) in expected.items()}

    def index(t: datetime) -> int:
        return max(i for i, s in enumerate(starts) if s <= t) if t >= starts[0] else 0

    buckets = timeline(conn, models, scope, starts, tz, min_minutes=MIN_MINUTES)
    by_bucket = raw_minutes(sessions, index)
    for i, b in enumerate(buckets):
        mine = [s for s in sessions if index(s["start"]) == i]
        assert b["sessions"] == len(mine)
        assert b["assessments"] == sum(s["assessments"] for s in mine)
        assert b["minutes"] == sum(v for (j, _), v in by_bucket.items() if j == i)

    # PostgreSQL shares minutes in exact decimals, SQLite in floats
    share = Fraction if conn.dialect.name == "postgresql" else float
    per_definition: dict[Any, list[Any]] = {}
    for s in sessions:
        for definition, task in s["tasks"]:
            found = per_definition.setdefault(definition, [0, set(), set(), 0])
            found[0] += 1
            found[1].add(task)
            found[2].add(s["marker"])
            found[3] += share(s["minutes"]) / s["assessments"]
    expected_tasks = [
        {
            "task_definition_id": d,
            "assessments": n,
            "tasks": len([t for t in ts if t is not None]),
            "markers": len(ms),
            "estimated_minutes": round(float(m), 1),
        }
        for d, (n, ts, ms, m) in sorted(
            per_definition.items(), key=lambda item: (item[0] is None, item[0] or 0)
        )
    ]
    # counted from the sessions, and (a unit's range, on PostgreSQL) from the tallies
    for tallied in (False, True):
        got_tasks = tasks(conn, models, scope, min_minutes=MIN_MINUTES, tallied=tallied)
        assert got_tasks == expected_tasks


def check_split(
    conn: sa.Connection, models: Any, scope: Scope, starts: list[datetime], tz: ZoneInfo
) -> None:
    """With a timetable (R12), the split from the stored blocks is the split of the blocks
    merged again from every session."""
    hour = timedelta(hours=1)
    classes = [(None, T0 + hour), (3, T0 + timedelta(minutes=20)), (4, T0 + 5 * hour)]
    timetable = Timetable.of_unit(
        [(who, to_micros(at), to_micros(at + hour)) for who, at in classes]
    )
    both = [
        summary(conn, models, scope, min_minutes=MIN_MINUTES, timetable=timetable, stored=kept)
        for kept in (True, False)
    ]
    assert both[0] == both[1]
    lines = [
        timeline(
            conn,
            models,
            scope,
            starts,
            tz,
            min_minutes=MIN_MINUTES,
            timetable=timetable,
            stored=kept,
        )
        for kept in (True, False)
    ]
    assert lines[0] == lines[1]


def stored_figures(conn: sa.Connection, models: Any) -> list[tuple[Any, ...]]:
    """Every session's figures: NULLs for an open one."""
    ms = models.MarkingSession
    columns = [ms.id, ms.end_time.is_(None), *(getattr(ms, name) for name in figures.FIGURES)]
    return [tuple(r) for r in conn.execute(sa.select(*columns).order_by(ms.id))]


def figures_from_scratch(conn: sa.Connection, models: Any) -> list[tuple[Any, ...]]:
    """What :func:`figures.refresh_all` computes from the raw rows, left uncommitted."""
    with conn.begin_nested() if conn.in_transaction() else conn.begin() as tx:
        ms = models.MarkingSession
        conn.execute(sa.update(ms.__table__).values(dict.fromkeys(figures.FIGURES)))
        figures.refresh_all(conn, models)
        fresh = stored_figures(conn, models)
        tx.rollback()
    return fresh
