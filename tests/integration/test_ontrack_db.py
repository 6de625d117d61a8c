"""``--format ontrack-db``: OnTrack 10's own tutor-times tables, exported as CSV, imported.

The tables are built as doubtfire-lms/doubtfire-api ``db/schema.rb`` declares them
(``marking_sessions``: user_id, unit_id, ip_address, start_time, end_time, during_tutorial,
created_at, updated_at; ``session_activities``: marking_session_id, action, project_id,
task_id, task_definition_id, created_at, updated_at) in a SQLite database of their own, and
filled as ``app/services/session_tracker.rb`` fills them: an activity joins the key's latest
session whose end is less than 15 minutes ago, or starts one, and the session's end is then
moved to it (``app/models/marking_session.rb``, ``update_session_details``).
"""

from __future__ import annotations

import csv
import random
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tutor_times.history.rows import DUPLICATE, MALFORMED, NOT_ALLOWED

from ..conftest import BACKENDS, Clock, build
from .test_history import stored_sessions
from .test_property import TIMEOUT, reference

SCHEMA = """
CREATE TABLE marking_sessions (
    id integer PRIMARY KEY AUTOINCREMENT, user_id bigint NOT NULL, unit_id bigint NOT NULL,
    ip_address varchar(255), start_time datetime(6), end_time datetime(6),
    during_tutorial boolean, created_at datetime(6) NOT NULL, updated_at datetime(6) NOT NULL);
CREATE INDEX index_marking_sessions_on_user_unit_ip_and_time
    ON marking_sessions (user_id, unit_id, ip_address, updated_at);
CREATE TABLE session_activities (
    id integer PRIMARY KEY AUTOINCREMENT, marking_session_id bigint NOT NULL,
    action varchar(255), project_id bigint, task_id bigint, task_definition_id bigint,
    created_at datetime(6) NOT NULL, updated_at datetime(6) NOT NULL);
"""
THRESHOLD = timedelta(minutes=15)
#: (user, unit, ip) of the demo's staff in unit 1
KEYS = [(2, 1, "10.20.0.3"), (3, 1, "10.20.0.11"), (3, 1, "2001:db8:4::17"), (4, 1, "10.20.0.12")]
START = datetime(2024, 4, 3, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(params=BACKENDS)
def import_app(request: pytest.FixtureRequest, clock: Clock) -> Iterator[Flask]:
    yield from build(str(request.param))


def stamp(at: datetime) -> str:
    """A datetime as MySQL exports Rails' UTC times."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def record(db: sqlite3.Connection, key: tuple[int, int, str], action: str, at: datetime) -> None:
    """OnTrack's SessionTracker.record_assessment_activity at ``at`` (no tutorials)."""
    user, unit, ip = key
    row = db.execute(
        "SELECT id, start_time FROM marking_sessions WHERE user_id = ? AND unit_id = ?"
        " AND ip_address = ? AND (end_time IS NULL OR end_time > ?)"
        " ORDER BY start_time DESC LIMIT 1",
        (user, unit, ip, stamp(at - THRESHOLD)),
    ).fetchone()
    if row is None:
        cur = db.execute(
            "INSERT INTO marking_sessions (user_id, unit_id, ip_address, start_time,"
            " during_tutorial, created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
            (user, unit, ip, stamp(at), stamp(at), stamp(at)),
        )
        session = cur.lastrowid
    else:
        session = row[0]
    db.execute(
        "INSERT INTO session_activities (marking_session_id, action, project_id, task_id,"
        " task_definition_id, created_at, updated_at) VALUES (?, ?, 1, 1, 1, ?, ?)",
        (session, action, stamp(at), stamp(at)),
    )
    db.execute(
        "UPDATE marking_sessions SET end_time = ?, updated_at = ? WHERE id = ?",
        (stamp(at), stamp(at), session),
    )


def ontrack(
    tmp_path: Path, rows: int = 400
) -> tuple[Path, list[tuple[Any, ...]], sqlite3.Connection]:
    """OnTrack's tables filled by its tracker, exported as CSV (``SELECT *`` with a header)."""
    db = sqlite3.connect(tmp_path / "ontrack.sqlite3")
    db.executescript(SCHEMA)
    rnd = random.Random(29)
    at = {key: START + timedelta(seconds=rnd.randrange(600)) for key in KEYS}
    stream: list[tuple[Any, ...]] = []
    events = []
    for _ in range(rows):
        key = rnd.choice(KEYS)
        at[key] += timedelta(seconds=rnd.choice([5, 60, 240, 899, 900, 901, 3600]))
        action = rnd.choice(["assessing", "get-submission-details", "inbox", "add-comment"])
        events.append((at[key], key, action))
    events.sort()
    for when, key, action in events:
        record(db, key, action, when)
    # an action OnTrack records that this deployment's TUTOR_TIMES_ACTIONS does not list
    late = events[-1][0] + timedelta(hours=5)
    record(db, KEYS[0], "get-comment-attachment", late)
    stream = [("act", key, when) for when, key, _ in events]
    db.commit()
    export = tmp_path / "export"
    export.mkdir()
    for table in ("marking_sessions", "session_activities"):
        cursor = db.execute(f"SELECT * FROM {table} ORDER BY id")  # noqa: S608
        with open(export / f"{table}.csv", "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow([c[0] for c in cursor.description])
            writer.writerows(["" if v is None else v for v in r] for r in cursor)
    return export, stream, db


def run(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["tutor-times", "import", *args])
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def test_ontrack_tables_round_trip_into_the_sessions_r2_gives(
    import_app: Flask, tmp_path: Path
) -> None:
    export, stream, _ = ontrack(tmp_path)
    out = run(import_app, str(export), "--format", "ontrack-db", "--batch-size", "64")
    assert (
        f"read {len(stream) + 1} rows, imported {len(stream)}, skipped 1 (1 {NOT_ALLOWED})" in out
    )
    assert stored_sessions(import_app) == reference(stream, TIMEOUT)
    # the activities' file named alone, its sessions beside it: the same export, nothing new
    again = run(import_app, str(export / "session_activities.csv"), "--format", "ontrack-db")
    assert f"imported 0, skipped {len(stream) + 1}" in again
    assert f"{len(stream)} {DUPLICATE}" in again
    assert stored_sessions(import_app) == reference(stream, TIMEOUT)


def test_ontrack_durations_are_recomputed_by_our_rules(import_app: Flask, tmp_path: Path) -> None:
    """OnTrack's session of one action lasts 0 minutes (its end is its start); ours lasts
    MIN (R4). Its sessions are the same runs of 15 minutes, so only their minutes differ."""
    export, stream, db = ontrack(tmp_path)
    theirs = db.execute(
        "SELECT COUNT(*) FROM marking_sessions WHERE end_time = start_time"
    ).fetchone()[0]
    assert theirs > 0
    run(import_app, str(export), "--format", "ontrack-db")
    ours = stored_sessions(import_app)
    singles = [s for s in ours if s[4] == 1]
    assert len(singles) == theirs - 1  # the action not allowed was not imported
    assert all(s[3] == 1 for s in singles)


def test_an_export_without_its_sessions_is_refused(import_app: Flask, tmp_path: Path) -> None:
    lone = tmp_path / "session_activities.csv"
    lone.write_text(
        "id,marking_session_id,action,project_id,task_id,task_definition_id,created_at\n"
    )
    result = import_app.test_cli_runner().invoke(
        args=["tutor-times", "import", str(lone), "--format", "ontrack-db"]
    )
    assert result.exit_code != 0 and "needs marking_sessions.csv" in result.output


def test_ids_that_are_not_numbers_are_counted_per_row_as_malformed(
    import_app: Flask, tmp_path: Path
) -> None:
    """An export edited by hand, or from a database whose columns hold text: a session whose
    user or unit is empty or not a number, or whose own id is not one, activities whose ids
    are not numbers, and a field of each table over csv's limit. Each activity they touch
    is a malformed row, counted; the others are imported (doubtfire-api ``db/schema.rb``:
    every id is a bigint)."""
    wide = "1" * 200_000
    export = tmp_path / "export"
    export.mkdir()
    (export / "marking_sessions.csv").write_text(
        "id,user_id,unit_id,ip_address,start_time,end_time,during_tutorial,created_at,updated_at\n"
        "1,3,1,10.20.0.11,,,0,,\n"
        "2,,1,10.20.0.12,,,0,,\n"
        "3,4,x,10.20.0.12,,,0,,\n"
        "abc,4,1,10.20.0.12,,,0,,\n"
        f"5,4,1,{wide},,,0,,\n"
    )
    at = "2024-04-03 09:00:00.000000"
    (export / "session_activities.csv").write_text(
        "id,marking_session_id,action,project_id,task_id,task_definition_id,created_at\n"
        f"1,1,assessing,1,1,1,{at}\n"
        f"2,1,assessing,1,abc,1,{at}\n"
        f"3,2,assessing,1,1,1,{at}\n"
        f"4,3,assessing,1,1,1,{at}\n"
        f"5,abc,assessing,1,1,1,{at}\n"
        f"x6,1,assessing,1,1,1,{at}\n"
        f"7,1,inbox,1,1,,{at}\n"
        f"8,5,assessing,1,1,1,{at}\n"
        f"9,1,assessing,1,{wide},1,{at}\n"
    )
    out = run(import_app, str(export), "--format", "ontrack-db")
    assert f"read 9 rows, imported 2, skipped 7 (7 {MALFORMED})" in out
    assert [s[4] for s in stored_sessions(import_app)] == [2]
