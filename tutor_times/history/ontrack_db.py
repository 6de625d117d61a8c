"""OnTrack's own tutor-times tables, read as rows to import (``--format ontrack-db``).

OnTrack 10 records marking itself, in two tables (doubtfire-api's ``db/schema.rb``):
``marking_sessions`` (id, user_id, unit_id, ip_address, start_time, end_time,
during_tutorial, …) and ``session_activities`` (id, marking_session_id, action, project_id,
task_id, task_definition_id, created_at, …). Both exported as CSV with their header row (a
``SELECT *`` saved as CSV), the activities become ours: each takes its session's user, unit
and address, and is placed by R2 like any import. OnTrack's own sessions and durations are
not taken: they are recomputed by our rules.

The sessions are held in memory by id (a few numbers each); the activities stream. Each
activity's source key is OnTrack's own id, so a second export of the same tables, or one
that grew since, adds only what is new.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from datetime import datetime

from ..core.accounting import UTC
from .rows import MALFORMED, Rejected, Row
from .sources import Source
from .sources import _records as records  # a csv reader's records, one it refuses Rejected

SESSIONS = "marking_sessions"
ACTIVITIES = "session_activities"
#: the source key of every export: activities are keyed by OnTrack's own ids
SOURCE_KEY = "ontrack-db"
#: how an export writes NULL (empty, MySQL's \N, or the word)
NULLS = frozenset({"", "\\N", "NULL", "null"})


def table_paths(path: str) -> tuple[str, str]:
    """The two exported tables: PATH is a folder holding ``marking_sessions.csv`` and
    ``session_activities.csv`` (either may be ``.csv.gz``), or the activities' file with
    the sessions' file beside it."""
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    found = {}
    for table in (SESSIONS, ACTIVITIES):
        for name in (f"{table}.csv", f"{table}.csv.gz"):
            if os.path.isfile(os.path.join(folder, name)):
                found[table] = os.path.join(folder, name)
                break
    if not os.path.isdir(path):
        found[ACTIVITIES] = path
    missing = [f"{t}.csv" for t in (SESSIONS, ACTIVITIES) if t not in found]
    if missing:
        raise ValueError(f"--format ontrack-db needs {' and '.join(missing)} in {folder}")
    return found[SESSIONS], found[ACTIVITIES]


def _columns(reader: Iterator[list[str]], table: str, wanted: tuple[str, ...]) -> list[int]:
    header = [c.strip().lower() for c in next(reader, [])]
    if "marker_id" in header and "user_id" not in header:  # an earlier version's name
        header[header.index("marker_id")] = "user_id"
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ValueError(f"the {table} export lacks the column(s) {', '.join(missing)}")
    return [header.index(c) for c in wanted]


def _id(text: str) -> int | None:
    return None if text in NULLS else int(text)


def _time(text: str) -> datetime:
    """A datetime as MySQL or PostgreSQL exports it; without an offset it is UTC (where
    Rails keeps its times)."""
    at = datetime.fromisoformat(text.strip())
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


#: a session's (user, unit, address), or why its row holds none (a malformed row)
Session = tuple[int, int, str] | Rejected


def read_sessions(text: Iterable[str]) -> dict[int, Session]:
    """Each session's (user, unit, address) by its id; a session whose user or unit is not
    a number (or is missing) is kept as a Rejected row, given for each of its activities.
    A row whose own id is not a number names no session: its activities are not found."""
    reader = csv.reader(text)
    at_id, at_user, at_unit, at_ip = _columns(
        reader, SESSIONS, ("id", "user_id", "unit_id", "ip_address")
    )
    addresses: dict[str, str] = {}  # one string per address, however many sessions share it
    found: dict[int, Session] = {}
    for record in records(reader):
        if isinstance(record, Rejected) or not record:
            continue  # a line csv refuses names no session: its activities are not found
        try:
            session_id = int(record[at_id])
        except (IndexError, ValueError):
            continue
        try:
            ip = record[at_ip]
            found[session_id] = (
                int(record[at_user]),
                int(record[at_unit]),
                addresses.setdefault(ip, ip),
            )
        except (IndexError, ValueError) as exc:
            line = reader.line_num
            found[session_id] = Rejected(MALFORMED, f"its session (line {line}): {exc}")
    return found


def activity_rows(sessions: dict[int, Session], text: Iterable[str]) -> Iterator[Row]:
    """One row per exported activity, with its session's user, unit and address."""
    reader = csv.reader(text)
    wanted = (
        *("id", "marking_session_id", "action", "project_id", "task_id"),
        *("task_definition_id", "created_at"),
    )
    at_id, at_session, at_action, at_project, at_task, at_def, at_time = _columns(
        reader, ACTIVITIES, wanted
    )
    for record in records(reader):
        if isinstance(record, Rejected):
            yield record
            continue
        if not record:
            continue
        line = reader.line_num
        try:
            session = sessions.get(int(record[at_session]))
            if session is None:
                yield Rejected(MALFORMED, f"line {line}: its session is not in {SESSIONS}")
                continue
            if isinstance(session, Rejected):
                yield Rejected(session.reason, f"line {line}: {session.detail}")
                continue
            yield (
                *session,
                record[at_action],
                _id(record[at_project]),
                _id(record[at_task]),
                _id(record[at_def]),
                _time(record[at_time]),
                f"activity-{int(record[at_id])}",
            )
        except (IndexError, ValueError) as exc:
            yield Rejected(MALFORMED, f"line {line}: {exc}")


def rows(path: str) -> Iterator[Row]:
    """The activities of an export (see :func:`table_paths`), streamed."""
    sessions_path, activities_path = table_paths(path)
    with Source(sessions_path) as source:
        sessions = read_sessions(source.lines())
    with Source(activities_path) as source:
        yield from activity_rows(sessions, source.lines())
