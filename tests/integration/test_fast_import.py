"""The fast paths of an import give what the plain ones would: rows checked without building
an Activity, URLs split by hand, rows read in a thread, a batch placed over many transactions,
text written by a binary COPY."""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from demo.extensions import db, tutor_times
from tutor_times.core.errors import InvalidActivityError, UnknownActionError
from tutor_times.history import importer as history
from tutor_times.history import placer
from tutor_times.history.rows import (
    EARLIEST,
    MALFORMED,
    NOT_ALLOWED,
    ROW_FIELDS,
    Checks,
    RowChecker,
    content_digest,
)
from tutor_times.history.sources import path_and_username
from tutor_times.store.activity import Activity

from ..conftest import (
    BACKENDS,
    T0,
    Clock,
    build,
    built,
    check_tallies,
    reset_tables,
    stored,
    tally_tables,
)
from .test_history import row, stored_sessions
from .test_property import KEYS, TIMEOUT, reference
from .test_rebuild import history as generated_history
from .test_rebuild import tracking_beside

ACTIONS = ("inbox", "assessing")
CHECKS = Checks(ACTIONS, str, timedelta(seconds=60))
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(params=BACKENDS)
def fast_app(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Flask]:
    yield from build(str(request.param))


# -- checking a row: the same outcome as Activity.checked ----------------------------------

bad_ids = st.sampled_from([0, -1, 2**63, True, "7", 1.0])
#: a valid row, then at most two of its fields replaced by values that may not be valid
valid = st.tuples(
    st.sampled_from([1, 5, 2**63 - 1]),
    st.sampled_from([1, 5, 2**63 - 1]),
    st.sampled_from(["10.0.0.1", "::1", "2001:DB8::1"]),
    st.sampled_from(ACTIONS),
    st.sampled_from([None, 1, 2**63 - 1]),
    st.sampled_from([None, 1, 2**63 - 1]),
    st.sampled_from([None, 1, 2**63 - 1]),
    st.datetimes(
        max_value=datetime(2025, 12, 31),
        timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=11))]),
    ),
)
replacements = [
    st.one_of(st.none(), bad_ids),
    st.one_of(st.none(), bad_ids),
    st.sampled_from(["fe80::1%eth0", "not an address", "010.0.0.1", "10.0.0.999", 7, None]),
    st.sampled_from(["delete", None, 3, ""]),
    bad_ids,
    bad_ids,
    bad_ids,
    st.sampled_from(
        [
            NOW + timedelta(seconds=60),  # the latest a time may be
            NOW + timedelta(seconds=60, microseconds=1),
            datetime(2025, 1, 1),  # naive
            "2025-01-01T00:00:00+00:00",
            datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=-5))),
        ]
    ),
]


@st.composite
def values(draw: st.DrawFn) -> tuple[Any, ...]:
    row = list(draw(valid))
    for field in draw(st.lists(st.integers(0, 7), max_size=2, unique=True)):
        row[field] = draw(replacements[field])
    return tuple(row)


def outcome_of_activity(v: tuple[Any, ...]) -> object:
    """What the plain path makes of a row: Activity.checked, then the future-time check and
    the earliest time an import takes."""
    try:
        a = Activity.checked(
            v[3],
            marker_id=v[0],
            unit_id=v[1],
            ip_address=v[2],
            project_id=v[4],
            task_id=v[5],
            task_definition_id=v[6],
            at=v[7],
            actions=ACTIONS,
        )
    except UnknownActionError:
        return NOT_ALLOWED
    except InvalidActivityError:
        return MALFORMED
    if a.at - NOW > CHECKS.max_skew or a.at < EARLIEST:
        return MALFORMED
    return (a.marker_id, a.unit_id, a.ip_address, a.at, a.action, a.project_id, a.task_id)


def outcome_of_checker(v: tuple[Any, ...]) -> object:
    try:
        p = RowChecker(CHECKS).pending((*v, 1), "src", NOW + CHECKS.max_skew)
    except UnknownActionError:
        return NOT_ALLOWED
    except InvalidActivityError:
        return MALFORMED
    assert p[3].tzinfo is timezone.utc and p[8] == "src:1"
    return p[:7]


@settings(max_examples=400, deadline=None)
@given(values())
def test_a_row_is_checked_as_activity_checked_checks_it(v: tuple[Any, ...]) -> None:
    assert outcome_of_checker(v) == outcome_of_activity(v)


# -- reading files -------------------------------------------------------------------------

url_parts = st.sampled_from(
    ["/api/units/1", "/a b", "//host/p", "http://h/x", "/p", "", "?", "&", "#", "#f", "%41"]
)
query_parts = st.sampled_from(
    ["username=tutor-1", "username=", "username=a+b", "username=%41", "x=1", "username=z", "&"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(url_parts, max_size=3), st.lists(query_parts, max_size=4), st.booleans())
def test_a_logged_url_is_split_as_urlsplit_and_parse_qs_split_it(
    path: list[str], query: list[str], with_query: bool
) -> None:
    url = "".join(path) + ("?" + "&".join(query) if with_query else "")
    parts = urlsplit(url)
    assert path_and_username(url) == (
        parts.path,
        parse_qs(parts.query).get("username", [None])[0],
    )


# -- reading ahead in a thread -----------------------------------------------------------


# -- placing over many transactions, writing by COPY ---------------------------------------


def test_a_batch_over_more_keys_than_a_transaction_holds_is_placed_exactly(
    fast_app: Flask, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys are placed KEYS_PER_TRANSACTION at a time: at one a transaction, a batch of every
    key, with live sessions to merge with, still gives R2 over each key's activities."""
    monkeypatch.setattr(placer, "KEYS_PER_TRANSACTION", 1)
    stream: list[tuple[Any, ...]] = []
    rows: list[dict[str, Any]] = []
    clock.set(T0)
    with fast_app.app_context():
        for key in KEYS:
            marker, unit, ip = key
            tutor_times.record_activity("assessing", marker_id=marker, unit_id=unit, ip_address=ip)
            stream.append(("act", key, T0))
        for n in range(40):
            key = KEYS[n % len(KEYS)]
            at = T0 - timedelta(minutes=7 * n)
            rows.append(row(key, at, n))
            stream.append(("act", key, at))
        clock.set(T0 + timedelta(minutes=1))
        report = tutor_times.import_activities(rows, source_key="many", batch_size=40)
        assert report.imported == 40
        final = T0 + TIMEOUT * 3
        clock.set(final)
        tutor_times.close_expired_sessions(final)
    assert stored_sessions(fast_app) == reference(stream, TIMEOUT)


def test_text_with_tabs_newlines_and_backslashes_is_stored_as_it_was(
    fast_app: Flask, tmp_path: Path
) -> None:
    keys = ["a\tb", "line\nbreak", "back\\slash", "\\N", "quote\"'", "é"]
    path = tmp_path / "keyed.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["import_key", *ROW_FIELDS[:-1]])
        for n, key in enumerate(keys):
            at = (T0 - timedelta(days=1, minutes=n)).isoformat()
            writer.writerow([key, 3, 1, "10.0.0.1", "inbox", "", "", "", at])
    result = fast_app.test_cli_runner().invoke(args=["tutor-times", "import", str(path)])
    assert result.exit_code == 0, result.output
    got = {a.import_key for a in stored(fast_app, tutor_times.SessionActivity)}
    assert got == {f"csv:{key}" for key in keys}


@pytest.mark.real
def test_an_import_beside_live_tracking_on_the_same_keys(clock: Clock) -> None:
    """Live activities arrive on every key while batches of its history, in random order,
    are placed around the sessions they keep open: every activity is kept once, and the
    sessions are R2 over all of them."""
    rows, stream = generated_history(seed=5)
    rnd = random.Random(5)
    rnd.shuffle(rows)
    live_at = max(r["created_at"] for r in rows) + timedelta(minutes=2)
    clock.set(live_at)
    with built("postgres") as app:
        with tracking_beside(app, live_at) as live, app.app_context():
            report = tutor_times.import_activities(rows, source_key="beside", batch_size=25)
        assert report.imported == len(rows)
        with app.app_context():
            clock.set(live_at + TIMEOUT + timedelta(minutes=2))
            tutor_times.close_expired_sessions()
            db.engine.dispose()
        assert stored_sessions(app) == reference(stream + live, TIMEOUT)


def test_a_batch_of_more_keys_than_one_transaction_takes(fast_app: Flask, clock: Clock) -> None:
    """300 keys in one batch: two transactions (256 keys, then 44), each reading its keys'
    windows and latest starts in one statement, on either backend."""
    stream: list[tuple[Any, ...]] = []
    rows: list[dict[str, Any]] = []
    for n in range(600):
        key = (3, 1, f"10.1.{n % 300 // 250}.{n % 300 % 250}")
        at = T0 - timedelta(days=2) + timedelta(minutes=n // 300 * 20 + n % 7)
        rows.append(row(key, at, n))
        stream.append(("act", key, at))
    clock.set(T0)
    with fast_app.app_context():
        assert tutor_times.import_activities(rows, source_key="wide").imported == 600
    assert stored_sessions(fast_app) == reference(stream, TIMEOUT)


# -- an import keeps what live tracking keeps ----------------------------------------------


def marking(seed: int, n: int = 160) -> list[dict[str, Any]]:
    """Activities in time order within one UTC month: tutor 3 marking from two addresses at
    once (their sessions merge into blocks, R10), tutors 3 and 4 in other units and keys,
    assessments of a few tasks and definitions (some without one), other actions between,
    and gaps on either side of the timeout."""
    rnd = random.Random(seed)
    first = at = T0 - timedelta(hours=20)
    rows: list[dict[str, Any]] = []
    for k in range(n):
        at += timedelta(seconds=rnd.choice([0, 10, 60, 300, 840, 899, 900, 960, 2400]))
        marker, unit, ip = rnd.choice(KEYS)
        assessing = rnd.random() < 0.7
        rows.append(
            {
                "marker_id": marker,
                "unit_id": unit,
                "ip_address": ip,
                "action": "assessing" if assessing else "inbox",
                "task_id": rnd.choice([11, 12, 13, None]) if assessing else None,
                "task_definition_id": rnd.choice([1, 2, None]) if assessing else None,
                "created_at": at,
                "import_key": k,
            }
        )
    assert at.month == first.month == T0.month
    return rows


def kept(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every session with its figures and activities, and every row the triggers keep, with
    each session named by its key and start instead of its id."""
    models = tutor_times.models
    ms, act = models.MarkingSession.__table__, models.SessionActivity.__table__
    with app.app_context(), db.engine.connect() as conn:
        named = {
            r.id: (r.marker_id, r.unit_id, r.ip_address, r.start_time)
            for r in conn.execute(sa.select(ms))
        }
        sessions = in_order(
            (*named[r.id], *(r[c] for c in ms.c.keys() if c not in SET_BY_WRITER))
            for r in conn.execute(sa.select(ms)).mappings()
        )
        activities = in_order(
            (named[r.marking_session_id], r.action, r.task_id, r.task_definition_id, r.created_at)
            for r in conn.execute(sa.select(act))
        )
        found = {"sessions": sessions, "activities": activities}
        for table in tally_tables(models):
            rows = [dict(r) for r in conn.execute(sa.select(table)).mappings()]
            for r in rows:
                if "session_id" in r:
                    r["session_id"] = named[r["session_id"]]
            # a unit's count of keys gone to none stays (tallies' upkeep): only the others
            found[table.name] = sorted(tuple(r.values()) for r in rows if r.get("keys", 1) != 0)
        check_tallies(conn, models)
    return found


def in_order(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` in one order whatever order they came in (NULLs among them)."""
    return sorted(rows, key=repr)


#: what differs between two writers of the same sessions: ids and their own times
SET_BY_WRITER = ("id", "created_at", "updated_at")


@pytest.mark.real
def test_an_import_keeps_the_sessions_figures_and_tallies_live_tracking_keeps(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same activities tracked live as they happen, then (the tables emptied) imported in
    batches that cut sessions and blocks, on two connections at once: the same sessions with
    the same figures, the same roll-ups of the summary and the same tallies of the tasks
    report (the widest gaps too: each import adds sessions after the ones it stored)."""
    monkeypatch.setattr(history, "SPLIT_AT", 10)
    rows = marking(seed=29)
    final = rows[-1]["created_at"] + timedelta(days=1)
    with built("postgres") as app:
        with app.app_context():
            for r in rows:
                clock.set(r["created_at"])
                fields = ("marker_id", "unit_id", "ip_address", "task_id", "task_definition_id")
                tutor_times.record_activity(
                    r["action"], **{f: r[f] for f in fields}, at=r["created_at"]
                )
            clock.set(final)
            tutor_times.close_expired_sessions(final)
        live = kept(app)
        reset_tables(app)
        with app.app_context():
            report = tutor_times.import_activities(rows, source_key="same", batch_size=37)
            assert report.imported == len(rows)
            tutor_times.close_expired_sessions(final)
        imported = kept(app)
    assert len(live["sessions"]) > 40
    assert any(s[-3] is None for s in live["sessions"])  # a block's later session
    assert live["tutor_times_assessed"]
    for name, rows_kept in live.items():
        assert imported[name] == rows_kept, name


@pytest.mark.parametrize(
    "fields",
    [
        (3, 1, "10.0.0.1", datetime(2025, 1, 1, tzinfo=timezone.utc), "inbox", None, None, None),
        (2**63 - 1, 7, "2001:db8::1", NOW.replace(microsecond=5), "assessing", 1, 22, 333),
        (5, 6, "h:abc", NOW.astimezone(timezone(timedelta(hours=11))), "x", None, 9, None),
    ],
)
def test_a_rows_content_digest_is_what_earlier_versions_stored(fields: tuple[Any, ...]) -> None:
    """Rows without a key of their own were stored under the digest of their fields, each
    as str() writes it (an absent id empty, the time in UTC to the microsecond), joined by
    \\x1f: the same rows imported again must find them."""
    marker, unit, ip, at, action, *ids = fields
    parts = [str(marker), str(unit), ip, at.astimezone(timezone.utc).isoformat()]
    if at.microsecond == 0:
        parts[3] = parts[3].replace("+00:00", ".000000+00:00")
    parts += [action, *("" if i is None else str(i) for i in ids)]
    text = "\x1f".join(parts)
    assert content_digest(fields) == hashlib.sha256(text.encode()).hexdigest()[:32]
