"""R12's split kept per (month, tutor) (tutor_times/store/class_store.py): whatever is stored,
every report's split is R12 computed from scratch over the raw sessions — across random
histories, random timetables (overlapping classes, classes of every tutor, wall-clock
classes across a change of daylight-saving time) and classes edited, and sessions added,
between reports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, time, timedelta
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
from tutor_times.reports.summary import summary
from tutor_times.reports.timeline import timeline
from tutor_times.store.class_times import Timetable

from ..conftest import BACKENDS, T0, Clock, build, built
from ..events import play, record
from .test_figures import (
    LONG_ACT,
    MIN_MINUTES,
    bucket_starts,
    local_midnight,
    other,
    raw_sessions,
    reset,
)

EXAMPLES = int(os.environ.get("TUTOR_TIMES_PROPERTY_EXAMPLES", "25"))
#: the classes' zone: Melbourne leaves daylight-saving time on 5 April 2026, a month after T0
ZONE = ZoneInfo("Australia/Melbourne")
UTC = ZoneInfo("UTC")

#: a class: (tutor 3, 4 or every tutor, day after T0's, local hour, quarter hours, length in
#: quarter hours): at Melbourne wall-clock times, so some lie across the change of time
CLASS = st.tuples(
    st.sampled_from([None, 3, 4, 3]),
    st.integers(-3, 75),
    st.integers(0, 23),
    st.integers(0, 3),
    st.integers(1, 16),
)
CLASSES = st.lists(CLASS, max_size=25)
#: an edit: the class at an index moved by some quarter hours (or removed: None), or one added
EDIT = st.one_of(
    st.tuples(st.just("move"), st.integers(0, 30), st.integers(-40, 40)),
    st.tuples(st.just("remove"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("add"), st.just(0), st.just(0)),
)
#: histories over weeks (up to five days between events), so that months change
EVENTS = st.lists(
    st.one_of(
        LONG_ACT.map(lambda e: (e[0], e[1], e[2] % (5 * 24 * 60), e[3], e[4])),
        st.tuples(
            st.just("act"),
            st.sampled_from([0, 1, 2]),
            st.sampled_from([0, 5, 14, 16, 30, 200]),
            st.just(0),
            st.just("assessing"),
        ),
        other,
    ),
    min_size=1,
    max_size=30,
)
#: a report: (zone, first day after T0's, days)
RANGES = st.tuples(
    st.sampled_from(["UTC", "Australia/Melbourne", "Asia/Kathmandu"]),
    st.integers(-5, 60),
    st.integers(1, 80),
)


def instants(classes: list[tuple[Any, ...]]) -> list[tuple[int | None, datetime, datetime]]:
    """Each class as real instants: its wall-clock start in Melbourne, lasting its quarters
    of real time."""
    out = []
    for who, day, hour, quarter, length in classes:
        wall = datetime.combine(T0.date() + timedelta(days=day), time(hour, 15 * quarter), ZONE)
        start = wall.astimezone(UTC)
        out.append((who, start, start + timedelta(minutes=15 * length)))
    return out


def edited(classes: list[tuple[Any, ...]], edit: tuple[str, int, int], added: Any) -> list[Any]:
    kind, at, by = edit
    out = list(classes)
    if kind == "add" or not out:
        return out + [added]
    i = at % len(out)
    if kind == "remove":
        return out[:i] + out[i + 1 :]
    who, day, hour, quarter, length = out[i]
    total = (day * 24 + hour) * 4 + quarter + by
    day, rest = divmod(total, 96)
    out[i] = (who, day, rest // 4, rest % 4, length)
    return out


def from_scratch(
    sessions: list[dict[str, Any]],
    classes: list[tuple[int | None, datetime, datetime]],
    bucket: Any,
) -> dict[tuple[Any, int], tuple[int, int]]:
    """R10 and R12 written out here: each tutor's sessions merged into blocks, each block's
    minutes (R4) and their during-class part, from the union of the tutor's and the unit's
    classes (integer microseconds, rounded half up), per (bucket of the block's start,
    tutor)."""
    spans: dict[tuple[int, int], list[tuple[datetime, datetime]]] = {}
    for s in sessions:
        spans.setdefault((s["unit"], s["marker"]), []).append((s["start"], s["last"]))
    out: dict[tuple[Any, int], tuple[int, int]] = {}
    for (_, marker), tutor_spans in spans.items():
        mine = sorted(
            (to_micros(a), to_micros(b)) for who, a, b in classes if who in (None, marker)
        )
        union: list[list[int]] = []
        for a, b in mine:
            if union and a <= union[-1][1]:
                union[-1][1] = max(union[-1][1], b)
            elif b > a:
                union.append([a, b])
        blocks: list[list[datetime]] = []
        for start, last in sorted(tutor_spans):
            if blocks and start <= blocks[-1][1]:
                blocks[-1][1] = max(blocks[-1][1], last)
            else:
                blocks.append([start, last])
        for first, last in blocks:
            minutes = duration_minutes(first, last, MIN_MINUTES)
            a, b = to_micros(first), to_micros(last)
            if b == a:
                during = minutes if any(x <= a < y for x, y in union) else 0
            else:
                inside = sum(max(0, min(b, y) - max(a, x)) for x, y in union)
                during = (2 * minutes * inside + (b - a)) // (2 * (b - a))
            key = (bucket(first), marker)
            m, d = out.get(key, (0, 0))
            out[key] = (m + minutes, d + during)
    return out


def check(
    conn: sa.Connection,
    models: Any,
    classes: list[tuple[int | None, datetime, datetime]],
    zone: str,
    first_day: int,
    days: int,
) -> None:
    """The unit's summary (whole months from the roll-up, or not) and its timeline by day
    and by week, split by ``classes``, against :func:`from_scratch`."""
    tz = ZoneInfo(zone)
    timetable = Timetable.of_unit([(w, to_micros(a), to_micros(b)) for w, a, b in classes])
    for bucket in ("day", "week"):
        starts = bucket_starts(tz, first_day, days, bucket)
        end = local_midnight(tz, T0.date() + timedelta(days=first_day + days))
        scope = Scope(starts[0], end, unit_id=1)
        sessions = raw_sessions(conn, models, scope)
        by_tutor = from_scratch(sessions, classes, lambda _: None)
        if bucket == "day":
            for rolled in (True, False):
                found = summary(
                    conn, models, scope, min_minutes=MIN_MINUTES, timetable=timetable, rolled=rolled
                )
                conn.commit()  # what a report stored, as a report's read commits
                got = {
                    t["marker_id"]: (t["minutes"], t["during_class_minutes"])
                    for t in found["tutors"]
                }
                assert got == {marker: v for (_, marker), v in by_tutor.items()}
        lines = timeline(
            conn, models, scope, starts, tz, min_minutes=MIN_MINUTES, timetable=timetable
        )
        conn.commit()

        def index(at: datetime, starts: list[datetime] = starts) -> int:
            return max(i for i, s in enumerate(starts) if s <= at or i == 0)

        per_bucket: dict[int, list[int]] = {}
        for (i, _), (m, d) in from_scratch(sessions, classes, index).items():
            found_ = per_bucket.setdefault(i, [0, 0])
            found_[0] += m
            found_[1] += d
        got_lines = {
            i: [b["minutes"], b["during_class_minutes"]]
            for i, b in enumerate(lines)
            if b["minutes"]
        }
        assert got_lines == {i: v for i, v in per_bucket.items() if v[0]}


@pytest.fixture(scope="module", params=BACKENDS)
def store_app(request: pytest.FixtureRequest) -> Iterator[Flask]:
    yield from build(str(request.param))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    EVENTS,
    EVENTS,
    CLASSES,
    st.lists(st.tuples(EDIT, CLASS), min_size=1, max_size=3),
    st.lists(RANGES, min_size=1, max_size=2),
)
# a class of every tutor and a tutor's own overlapping it, both across the change of time
# (2 April, 3 am Melbourne, is 5 April's night), a session in each, then the class moved
@example(
    [
        ("act", 0, 0, 0, "assessing"),
        ("act", 1, 5, 0, "assessing"),
        ("act", 0, 20, 0, "assessing"),
        ("act", 2, 5 * 24 * 60, 0, "assessing"),
        ("sweep", 0, 30, 0, ""),
    ],
    [("act", 0, 4 * 24 * 60, 0, "assessing"), ("sweep", 0, 60, 0, "")],
    [(None, 0, 9, 0, 8), (3, 0, 10, 0, 8), (4, 34, 1, 0, 16)],
    [(("move", 0, 2), (None, 5, 9, 0, 4)), (("add", 0, 0), (3, 4, 9, 0, 16))],
    [("UTC", -2, 60), ("Australia/Melbourne", 0, 7)],
)
# a session in a tutor's class, reported on (its month then known to agree); the class moved
# half an hour later, off the session, and reported on; two days later another session, in
# a class of every tutor in the same month
@example(
    [("act", 0, 0, 0, "assessing"), ("act", 0, 10, 0, "assessing"), ("sweep", 0, 60, 0, "")],
    [
        ("act", 0, 2 * 24 * 60, 0, "assessing"),
        ("act", 0, 10, 0, "assessing"),
        ("sweep", 0, 60, 0, ""),
    ],
    [(3, 0, 20, 0, 4), (None, 2, 21, 0, 8)],
    [(("move", 0, 2), (4, 50, 9, 0, 4))],
    [("UTC", -1, 10)],
)
@pytest.mark.slow
def test_every_reports_split_is_r12_from_scratch_whatever_is_stored(
    store_app: Flask,
    clock: Clock,
    events: list[tuple[Any, ...]],
    later: list[tuple[Any, ...]],
    classes: list[tuple[Any, ...]],
    edits: list[tuple[tuple[str, int, int], tuple[Any, ...]]],
    ranges: list[tuple[str, int, int]],
) -> None:
    """Reports over each range split by a timetable; then classes edited (moved, removed,
    added) and reported again; then more history (sessions closed, imported, rebuilt,
    purged) and reported again: each time every tutor's and every bucket's split is R12
    over the raw sessions, on PostgreSQL with what the earlier reports stored."""
    reset(store_app)
    play(store_app, clock, events)
    with store_app.app_context(), db.engine.connect() as conn:
        models = tutor_times.models
        for zone, first_day, days in ranges:
            check(conn, models, instants(classes), zone, first_day, days)
        for edit, added in edits:
            classes = edited(classes, edit, added)
            for zone, first_day, days in ranges:
                check(conn, models, instants(classes), zone, first_day, days)
    # more history, after what the last reports stored, the clock going on from where it is
    play(store_app, clock, later, since=clock(), first=100, source="more")
    with store_app.app_context(), db.engine.connect() as conn:
        for zone, first_day, days in ranges:
            check(conn, tutor_times.models, instants(classes), zone, first_day, days)


def minutes_of(result: dict[str, Any]) -> dict[int, tuple[int, int]]:
    return {t["marker_id"]: (t["minutes"], t["during_class_minutes"]) for t in result["tutors"]}


@pytest.mark.real
def test_what_is_stored_is_added_up_until_a_class_or_a_session_of_its_month_changes(
    clock: Clock,
) -> None:
    """The second report adds up what the first stored (a stored measure altered behind its
    back shows in it), until a class of the month moves (its fingerprint changes) or a
    session of the tutor's month closes (its roll-up row is rewritten): then the month is
    split again, and the report is R12 from scratch."""
    with built("postgres") as app:
        with app.app_context():
            for day in (2, 3):
                at = T0 + timedelta(days=day)  # 09:00 UTC, 20:00 in Melbourne
                for minutes in (0, 10, 20):
                    clock.set(at + timedelta(minutes=minutes))
                    record(0, clock(), "assessing")
                tutor_times.close_expired_sessions(at + timedelta(hours=1))
        classes = [(3, T0 + timedelta(days=2, minutes=10), T0 + timedelta(days=2, hours=2))]
        scope = Scope(T0, T0 + timedelta(days=10), unit_id=1)
        with app.app_context(), db.engine.connect() as conn:
            models = tutor_times.models

            def report(classes: list[Any]) -> dict[int, tuple[int, int]]:
                timetable = Timetable.of_unit(
                    [(w, to_micros(a), to_micros(b)) for w, a, b in classes]
                )
                found = minutes_of(
                    summary(conn, models, scope, min_minutes=MIN_MINUTES, timetable=timetable)
                )
                conn.commit()
                return found

            def scratch(classes: list[Any]) -> dict[int, tuple[int, int]]:
                sessions = raw_sessions(conn, models, scope)
                return {
                    k: v for (_, k), v in from_scratch(sessions, classes, lambda _: None).items()
                }

            assert report(classes) == scratch(classes) == {3: (40, 10)}
            kept = conn.execute(sa.select(models.ClassMonths)).all()
            assert [(r.month.month, r.marker_id, r.long_blocks) for r in kept] == [(3, 3, 0)]
            # the stored measure is what the next report adds up
            conn.execute(sa.update(models.ClassBlocks).values(inside=0))
            conn.commit()
            assert report(classes) == {3: (40, 0)}
            # the class moved: the month's fingerprint changed, it is split again
            moved = [(3, T0 + timedelta(days=2, minutes=5), T0 + timedelta(days=2, hours=2))]
            assert report(moved) == scratch(moved) == {3: (40, 15)}
            conn.execute(sa.update(models.ClassBlocks).values(inside=0))
            conn.commit()
            # a session of the tutor's month closed: its roll-up row rewritten, split again
            with app.app_context():
                at = T0 + timedelta(days=4)
                clock.set(at)
                record(0, at, "assessing")
                tutor_times.close_expired_sessions(at + timedelta(hours=1))
            assert report(moved) == scratch(moved) == {3: (41, 15)}


def two_tutors_in_a_class(
    app: Flask, clock: Clock
) -> tuple[datetime, list[tuple[int | None, datetime, datetime]], Timetable]:
    """Tutors 3 and 4 of unit 1 each with a closed session of two assessments, two days
    after T0, inside a unit-wide class: its start, the classes, and their timetable."""
    at = T0 + timedelta(days=2)
    with app.app_context():
        for key in (0, 2):  # tutors 3 and 4, in unit 1
            for minutes in (0, 10):
                clock.set(at + timedelta(minutes=minutes))
                record(key, clock(), "assessing")
        tutor_times.close_expired_sessions(at + timedelta(hours=1))
    classes: list[tuple[int | None, datetime, datetime]] = [
        (None, at - timedelta(hours=1), at + timedelta(hours=2))
    ]
    timetable = Timetable.of_unit([(w, to_micros(a), to_micros(b)) for w, a, b in classes])
    return at, classes, timetable


@pytest.mark.real
def test_a_month_is_known_to_agree_once_every_tutor_of_it_does_until_its_version_changes(
    clock: Clock,
) -> None:
    """A tutor's own report splits and stores that tutor's month alone: the month is not
    known to agree (its other tutor has nothing stored), so the unit's report after it
    checks every tutor of it and splits the other's; from then on the month is known to
    agree at the roll-up's version of it, until another tutor's session of the month
    closes (a new version): then its tutors are checked again, and the report is R12."""
    with built("postgres") as app:
        _, classes, timetable = two_tutors_in_a_class(app, clock)
        unit = Scope(T0, T0 + timedelta(days=10), unit_id=1)
        march = T0.date().replace(day=1)
        with app.app_context(), db.engine.connect() as conn:
            models = tutor_times.models
            nothing_stored(conn, models)

            def report(scope: Scope) -> dict[int, tuple[int, int]]:
                found = minutes_of(
                    summary(conn, models, scope, min_minutes=MIN_MINUTES, timetable=timetable)
                )
                conn.commit()
                return found

            def scratch() -> dict[int, tuple[int, int]]:
                sessions = raw_sessions(conn, models, unit)
                return {
                    k: v for (_, k), v in from_scratch(sessions, classes, lambda _: None).items()
                }

            def known() -> list[tuple[Any, ...]]:
                c = models.ClassChecked.c
                return [tuple(r) for r in conn.execute(sa.select(c.month, c.version))]

            def version() -> int:
                v = models.MonthVersions.c
                found = sa.select(v.version).where(v.unit_id == 1, v.month == march)
                return int(conn.execute(found).scalar_one())

            assert report(Scope(unit.start, unit.end, unit_id=1, marker_id=3)) == {3: (10, 10)}
            stored = conn.execute(sa.select(models.ClassMonths.c.marker_id)).scalars().all()
            assert stored == [3]
            assert known() == [(march, None)]
            assert report(unit) == scratch() == {3: (10, 10), 4: (10, 10)}
            first = version()
            assert known() == [(march, first)]
            assert report(unit) == {3: (10, 10), 4: (10, 10)}
            # a session of tutor 4's month closes: the month's version is new
            with app.app_context():
                later = T0 + timedelta(days=4)
                clock.set(later)
                record(2, later, "assessing")
                tutor_times.close_expired_sessions(later + timedelta(hours=1))
            assert version() != first
            assert known() == [(march, first)]
            assert report(unit) == scratch() == {3: (10, 10), 4: (11, 10)}
            assert known() == [(march, version())]


@pytest.mark.real
def test_a_store_from_a_snapshot_older_than_another_stores_of_the_month_gives_way(
    clock: Clock,
) -> None:
    """Two tutors' own reports of one month, each at REPEATABLE READ: the one whose snapshot
    is later stores first (tutor 4's split); the other's store (tutor 3's), which cannot
    see it, fails on the month's row that every store writes, and keeps nothing — a report
    never vouches for a month whose stored rows it did not see. Both answer R12."""
    with built("postgres") as app:
        *_, timetable = two_tutors_in_a_class(app, clock)
        with app.app_context():
            models = tutor_times.models
            with db.engine.connect() as conn:
                nothing_stored(conn, models)
            engine = db.engine.execution_options(isolation_level="REPEATABLE READ")
            with engine.connect() as earlier, engine.connect() as later:

                def report(conn: sa.Connection, marker: int) -> dict[int, tuple[int, int]]:
                    scope = Scope(T0, T0 + timedelta(days=10), unit_id=1, marker_id=marker)
                    found = minutes_of(
                        summary(conn, models, scope, min_minutes=MIN_MINUTES, timetable=timetable)
                    )
                    conn.commit()
                    return found

                earlier.execute(sa.select(models.ClassMonths.c.marker_id)).all()  # its snapshot
                assert report(later, 4) == {4: (10, 10)}
                assert report(earlier, 3) == {3: (10, 10)}
            with db.engine.connect() as conn:
                stored = conn.execute(sa.select(models.ClassMonths.c.marker_id)).scalars().all()
                c = models.ClassChecked.c
                known = conn.execute(sa.select(c.month, c.version)).all()
    assert stored == [4]
    assert [tuple(r) for r in known] == [(T0.date().replace(day=1), None)]


def nothing_stored(conn: sa.Connection, models: Any) -> None:
    """No stored split (of an earlier test's sessions) on the database."""
    for table in (models.ClassBlocks, models.ClassMonths, models.ClassChecked):
        conn.execute(table.delete())
    conn.commit()


@pytest.mark.real
def test_through_psycopg2_the_buckets_go_as_text_and_the_split_is_r12(clock: Clock) -> None:
    """Through psycopg2 a timeline's bucket starts are sent as an array of text, not in
    binary: every report's split is still R12 from scratch, when it splits and stores, and
    when it adds up what it stored."""
    events = [
        ("act", 0, 0, 0, "assessing"),
        ("act", 0, 10, 0, "assessing"),
        ("act", 2, 15, 0, "assessing"),
        ("sweep", 0, 60, 0, ""),
        ("act", 0, 2 * 24 * 60, 0, "assessing"),
        ("act", 0, 10, 0, "assessing"),
        ("sweep", 0, 60, 0, ""),
    ]
    classes = instants([(3, 0, 20, 0, 4), (None, 2, 21, 0, 8), (4, 0, 19, 2, 6)])
    with built("postgres-psycopg2") as app:
        play(app, clock, events)
        with app.app_context(), db.engine.connect() as conn:
            assert conn.dialect.driver == "psycopg2"
            nothing_stored(conn, tutor_times.models)
            for _ in range(2):
                check(conn, tutor_times.models, classes, "Australia/Melbourne", -1, 20)
            assert conn.execute(
                sa.select(sa.func.count()).select_from(tutor_times.models.ClassBlocks)
            ).scalar()
