"""SQL shared by the steps that write, close and read sessions: closing sessions (R3, R4),
the tutors' advisory locks, updating many rows at once, COPY's column types, and reading a
session's activities or a key's sessions."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..core.accounting import duration_minutes, lock_hash
from .bulk import copy_type
from .models import IdList, Models

#: (session id, start_time, time of its last activity)
IdleSession = tuple[int, datetime, datetime]


def close_sessions(
    conn: sa.Connection,
    models: Models,
    idle: Iterable[IdleSession],
    min_minutes: int,
    now: datetime,
) -> int:
    """Close each session at its last activity; returns how many were still open."""
    return len(close_session_ids(conn, models, idle, min_minutes, now))


def close_session_ids(
    conn: sa.Connection,
    models: Models,
    idle: Iterable[IdleSession],
    min_minutes: int,
    now: datetime,
) -> list[int]:
    """Close each session at its last activity; returns the ids of those still open.

    One UPDATE for the whole batch (on PostgreSQL the rows joined as arrays, whatever their
    number), counted by RETURNING: a DBAPI's executemany row count is not reliable (psycopg's
    undercounts), and the count is what proves closing happened exactly once.
    """
    idle = list(idle)
    if not idle:
        return []
    table = models.MarkingSession.__table__
    if conn.dialect.name == "postgresql":
        rows = [
            (sid, last, duration_minutes(start, last, min_minutes)) for sid, start, last in idle
        ]
        return update_rows(
            conn,
            table,
            ["end_time", "duration_minutes"],
            rows,
            same={"updated_at": now},
            unset="end_time",
        )
    time_type = table.c.end_time.type
    ends = {sid: sa.literal(last, time_type) for sid, _, last in idle}
    durations = {
        sid: sa.literal(duration_minutes(start, last, min_minutes)) for sid, start, last in idle
    }
    stmt = (
        sa.update(table)
        .where(table.c.id.in_(list(ends)), table.c.end_time.is_(None))
        .values(
            end_time=sa.case(ends, value=table.c.id),
            duration_minutes=sa.case(durations, value=table.c.id),
            updated_at=sa.literal(now, time_type),
        )
        .returning(table.c.id)
    )
    return [row.id for row in conn.execute(stmt)]


def tutor_hash(unit_id: int, marker_id: int) -> int:
    """The lock of one tutor's sessions in one unit, whose R10 blocks :mod:`.figures` keeps.
    A writer that will keep a tutor's figures takes it with its keys' locks (one
    :func:`lock_keys`), before it locks any session row: keeping the figures writes rows of
    the tutor's other keys."""
    return lock_hash(f"tutor:{unit_id}:{marker_id}")


def lock_keys(conn: sa.Connection, keys: list[int]) -> None:
    """Hold a lock on each of ``keys`` (a session key's, a tutor's) until the transaction
    ends, so placements of one key, and merges of one tutor's blocks, happen one at a time.
    One statement, the locks taken in ascending order: every writer that holds several
    locks at once takes them in this order, so none waits for another in a cycle.
    (PostgreSQL evaluates a volatile function of the select list after the sort.) SQLite
    runs one writer at a time already."""
    if conn.dialect.name != "postgresql" or not keys:
        return
    ordered = bound_array(sorted(set(keys)), sa.BigInteger)
    held = sa.func.unnest(ordered).table_valued("k").render_derived(name="held")
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(held.c.k)).order_by(held.c.k)).all()


def bound_array(values: list[Any], item: Any) -> Any:
    """``values`` as one PostgreSQL array parameter of ``item``s (a statement's size and its
    plan then do not grow with how many there are)."""
    return sa.bindparam(None, values, type_=postgresql.ARRAY(item))


def update_rows(
    conn: sa.Connection,
    table: sa.Table,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    *,
    same: dict[str, Any] | None = None,
    unset: str | None = None,
) -> list[int]:
    """Update many rows by id: each row is (id, *the new values of ``columns``). On PostgreSQL
    one statement, the rows joined as arrays (``UPDATE … FROM unnest(…)``): an executemany
    is a statement a row. Elsewhere an executemany.

    ``same`` gives columns set to one value for every row (bound once, not per row). On
    PostgreSQL only, ``unset`` names a column that must still be NULL for a row to be
    updated, and then the ids of the rows updated are returned (counted by RETURNING, which
    a DBAPI's executemany row count is not reliable enough for)."""
    if not rows:
        return []
    same = same or {}
    dialect = conn.dialect
    if dialect.name != "postgresql":
        if unset is not None:
            raise ValueError("update_rows: `unset` needs PostgreSQL")
        _update_each(conn, table, columns, rows, same)
        return []
    prep = dialect.identifier_preparer
    names = ["id", *columns]
    arrays: dict[str, Any] = {}
    casts = []
    quoted = [prep.quote(name) for name in names]
    assigned = []
    for i, (name, values) in enumerate(zip(names, zip(*rows, strict=True), strict=True)):
        column_type = table.c[name].type
        if isinstance(column_type, IdList):
            # a list a row: an array of arrays must be rectangular, so each goes as text
            arrays[f"a{i}"] = [None if v is None else _array_text(v) for v in values]
            casts.append(f"CAST(:a{i} AS text[])")
            assigned.append(f"{quoted[i]} = CAST(v.{quoted[i]} AS bigint[])")
            continue
        process = column_type.bind_processor(dialect)
        arrays[f"a{i}"] = list(values) if process is None else [process(v) for v in values]
        casts.append(f"CAST(:a{i} AS {copy_type(column_type, dialect)}[])")
        assigned.append(f"{quoted[i]} = v.{quoted[i]}")
    sets = ", ".join(assigned[1:])
    for i, (name, value) in enumerate(same.items()):
        sets += f", {prep.quote(name)} = :s{i}"
        process = table.c[name].type.bind_processor(dialect)
        arrays[f"s{i}"] = value if process is None else process(value)
    still_unset = "" if unset is None else f" AND t.{prep.quote(unset)} IS NULL"
    sql = (
        f"UPDATE {prep.format_table(table)} AS t SET {sets}"
        f" FROM unnest({', '.join(casts)}) AS v({', '.join(quoted)})"
        f" WHERE t.id = v.id{still_unset}"
    )
    if unset is None:
        conn.execute(sa.text(sql), arrays)
        return []
    return list(conn.execute(sa.text(sql + " RETURNING t.id"), arrays).scalars())


def _update_each(
    conn: sa.Connection,
    table: sa.Table,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    same: dict[str, Any],
) -> None:
    """:func:`update_rows` off PostgreSQL: an executemany, a statement a row."""
    stmt = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("b_id"))
        .values({**{name: sa.bindparam(f"b_{name}") for name in columns}, **same})
    )
    params = [
        {"b_id": row[0], **{f"b_{n}": v for n, v in zip(columns, row[1:], strict=True)}}
        for row in rows
    ]
    conn.execute(stmt, params)


def _array_text(ids: list[int | None]) -> str:
    """A list of ids as PostgreSQL writes an array: ``{1,NULL,3}``."""
    return "{" + ",".join("NULL" if i is None else str(int(i)) for i in ids) + "}"


#: sessions per statement where their activities are read by an IN list (one parameter each)
SESSIONS_PER_READ = 500


def activities_of(
    conn: sa.Connection, models: Models, ids: list[int], columns: Iterable[Any], *where: Any
) -> list[Any]:
    """``columns`` of the activities (that match ``where``) of the sessions ``ids``, in no
    particular order. On PostgreSQL each session's are looked up by the session index
    (LATERAL): with an id list, a planner whose statistics lag behind an import scans every
    activity instead. Elsewhere by IN lists of :data:`SESSIONS_PER_READ` ids."""
    act = models.SessionActivity
    columns = list(columns)
    if not ids:
        return []
    if conn.dialect.name != "postgresql":
        rows: list[Any] = []
        for i in range(0, len(ids), SESSIONS_PER_READ):
            chunk = ids[i : i + SESSIONS_PER_READ]
            rows += conn.execute(
                sa.select(*columns).where(act.marking_session_id.in_(chunk), *where)
            ).all()
        return rows
    session = (
        sa.func.unnest(bound_array(ids, sa.BigInteger))
        .table_valued("id")
        .render_derived(name="wanted")
    )
    # OFFSET keeps the planner from flattening the LATERAL back into one join
    each = (
        sa.select(*columns)
        .where(act.marking_session_id == session.c.id, *where)
        .offset(0)
        .lateral("each")
    )
    return list(conn.execute(sa.select(each).select_from(session).join(each, sa.true())).all())


def last_activity_of(models: Models) -> Any:
    """A correlated scalar: the created_at of a session's last activity.

    A session is created with its first activity; its start_time stands in should the
    activities have been removed.
    """
    ms, act = models.MarkingSession, models.SessionActivity
    latest = (
        sa.select(sa.func.max(act.created_at))
        .where(act.marking_session_id == ms.id)
        .scalar_subquery()
    )
    return sa.func.coalesce(latest, ms.start_time, type_=ms.start_time.type)


def sessions_of_key(models: Models) -> Any:
    """A SELECT of one key's sessions (the key as bind parameters ``marker_id``, ``unit_id``,
    ``ip_address``): id, start_time, end_time and ``last``, the last activity."""
    ms = models.MarkingSession
    last = last_activity_of(models).label("last")
    return sa.select(ms.id, ms.start_time, ms.end_time, last).where(
        ms.marker_id == sa.bindparam("marker_id"),
        ms.unit_id == sa.bindparam("unit_id"),
        ms.ip_address == sa.bindparam("ip_address"),
    )
