"""Bulk writes and reads, each on its driver's fast path (psycopg 3's binary COPY and arrays,
executemany elsewhere): rows inserted, ids returned or drawn ahead from a sequence, the stored
values among many, COPY's type names, and the binary arrays psycopg 3 sends as they are."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from .class_sql import INT8_ARRAY_OID, TIMESTAMPTZ_ARRAY_OID, PackedInts, PackedTimes
from .drivers import has_fast_path


def insert_rows(
    conn: sa.Connection, table: sa.Table, columns: list[str], rows: list[tuple[Any, ...]]
) -> None:
    """Insert many rows in the connection's transaction: COPY on psycopg 3 (one stream, no
    statement per row), executemany elsewhere. Values go through the columns' types first,
    as a bound parameter would, so a time is stored the same way by either path."""
    if not rows:
        return
    dialect = conn.dialect
    if not has_fast_path(dialect):
        conn.execute(sa.insert(table), [dict(zip(columns, row, strict=True)) for row in rows])
        return
    types = [copy_type(table.c[name].type, dialect) for name in columns]
    # an aware time goes to a timestamptz column as it is: psycopg refuses a naive one
    processors = [
        None if pg_type == "timestamptz" else table.c[name].type.bind_processor(dialect)
        for name, pg_type in zip(columns, types, strict=True)
    ]
    processed = [(i, p) for i, p in enumerate(processors) if p is not None]
    names = ", ".join(dialect.identifier_preparer.quote(name) for name in columns)
    target = dialect.identifier_preparer.format_table(table)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    _default_array_dumpers(cursor, types)
    with cursor.copy(f"COPY {target} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        # the columns' types named once: each value is then dumped without a lookup by its
        # Python type, and the server reads it without parsing text
        copy.set_types(types)
        write = copy.write_row
        if not processed:
            for row in rows:
                write(row)
            return
        for row in rows:
            values = list(row)
            for i, process in processed:
                values[i] = process(values[i])
            write(values)


def _default_array_dumpers(cursor: Any, types: list[str]) -> None:
    """psycopg's own dumpers of the array types among ``types``, on ``cursor``: a dumper a
    connection registered by oid (the class-time reports' packed arrays take ``int8[]``'s)
    would otherwise dump a COPY's lists."""
    import psycopg
    from psycopg.pq import Format

    for name in types:
        if name.endswith("[]"):
            oid = psycopg.adapters.types.get_oid(name)
            cursor.adapters.register_dumper(
                None, psycopg.adapters.get_dumper_by_oid(oid, Format.BINARY)
            )


def without_jit(conn: sa.Connection) -> None:
    """No JIT compilation for the rest of ``conn``'s transaction (PostgreSQL): a bulk
    statement's estimated cost passes jit_above_cost, and compiling it took longer than
    running it (an import's lookups, placements and the triggers they fire)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")


#: a session-local table of the values :func:`stored_values` looks up (emptied at commit)
WANTED = "tutor_times_wanted"


def stored_values(conn: sa.Connection, column: sa.Column[Any], values: list[str]) -> set[str]:
    """Which of ``values`` (text) ``column`` holds. On psycopg 3 they are COPYed into a
    temporary table and each looked up by ``column``'s index (one stream, however many: an
    array parameter is dumped value by value in Python); elsewhere one IN list. The lookups
    are a LATERAL fenced by OFFSET: joined, the planner hashed the whole of ``column``'s
    table for every batch of an import (whose statistics lag behind it), a scan that grows
    with every row imported."""
    if not values:
        return set()
    dialect = conn.dialect
    if not has_fast_path(dialect):
        return set(conn.scalars(sa.select(column).where(column.in_(values))))
    prep = dialect.identifier_preparer
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {WANTED} (v text) ON COMMIT DELETE ROWS")
    cursor.execute(f"TRUNCATE {WANTED}")
    with cursor.copy(f"COPY {WANTED} (v) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text"])
        for value in values:
            copy.write_row((value,))
    table = prep.format_table(column.table)
    cursor.execute(
        f"SELECT w.v FROM {WANTED} AS w CROSS JOIN LATERAL (SELECT FROM {table} AS t"
        f" WHERE t.{prep.quote(column.name)} = w.v OFFSET 0) AS found"
    )
    return {row[0] for row in cursor.fetchall()}


def insert_returning_ids(
    conn: sa.Connection, table: sa.Table, columns: list[str], rows: list[tuple[Any, ...]]
) -> list[int]:
    """Insert many rows and return their new ids, in the rows' order.

    On psycopg 3 the ids are drawn from the table's sequence first and the rows are COPYed
    with them: a many-row INSERT … RETURNING costs more to build and parse than to run.
    Elsewhere one INSERT … RETURNING, its ids sorted back into the rows' order.
    """
    if not rows:
        return []
    if has_fast_path(conn.dialect):
        ids = next_ids(conn, table, len(rows))
        insert_rows(
            conn, table, ["id", *columns], [(i, *row) for i, row in zip(ids, rows, strict=True)]
        )
        return [int(i) for i in ids]
    stmt = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
    found = conn.scalars(stmt, [dict(zip(columns, row, strict=True)) for row in rows])
    return [int(i) for i in found]


def next_ids(conn: sa.Connection, table: sa.Table, n: int) -> list[int]:
    """``n`` new ids from the sequence of ``table``'s id (PostgreSQL), ascending: each
    greater than any id drawn before."""
    if n == 0:
        return []
    sequence = sa.func.pg_get_serial_sequence(table.name, "id")
    query = sa.select(sa.func.nextval(sequence)).select_from(sa.func.generate_series(1, n))
    if has_fast_path(conn.dialect):  # the driver's rows as they are: ints already
        compiled = query.compile(dialect=conn.dialect)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(str(compiled), compiled.params)
        return [row[0] for row in cursor.fetchall()]
    return [int(i) for i in conn.scalars(query)]


def copy_type(column_type: sa.types.TypeEngine[Any], dialect: Dialect) -> str:
    """The PostgreSQL type psycopg dumps a column's values as, in a binary COPY."""
    name = column_type.compile(dialect=dialect).lower().split("(")[0].strip()
    return COPY_TYPES.get(name, name)


#: column types as psycopg names them; a varchar takes a text value in a binary COPY
COPY_TYPES = {
    "bigint": "int8",
    "integer": "int4",
    "smallint": "int2",
    "varchar": "text",
    "character varying": "text",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "boolean": "bool",
}


def binary_arrays(conn: sa.Connection) -> bool:
    """Whether ``conn`` takes :class:`PackedArray` parameters: psycopg 3 with its dumper
    registered (on this connection's adapters, once; other drivers take text)."""
    if conn.dialect.driver != "psycopg":
        return False
    from psycopg import ProgrammingError
    from psycopg.adapt import PyFormat

    adapters = conn.connection.driver_connection.adapters  # type: ignore[union-attr]
    try:
        adapters.get_dumper(PackedTimes, PyFormat.AUTO)
    except ProgrammingError:
        adapters.register_dumper(PackedInts, _packed_dumper(INT8_ARRAY_OID))
        adapters.register_dumper(PackedTimes, _packed_dumper(TIMESTAMPTZ_ARRAY_OID))
    return True


def _packed_dumper(array_oid: int) -> type[Any]:
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class PackedArrayDumper(Dumper):
        """Sends a :class:`PackedArray`'s bytes as they are: already the wire form."""

        format = Format.BINARY
        oid = array_oid

        def dump(self, obj: Any) -> bytes:
            data: bytes = obj.data
            return data

    return PackedArrayDumper
