"""What differs between database drivers, named in this module and, for bulk writes and
reads, in :mod:`.bulk`.

Supported: psycopg 3 (``postgresql+psycopg://``), psycopg2 (``postgresql+psycopg2://`` and,
under SQLAlchemy 2, plain ``postgresql://``) and SQLite's ``pysqlite``. Everything else in the
package speaks SQLAlchemy and asks here (or in :mod:`.bulk`) when a driver matters.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

T = TypeVar("T")

#: the drivers whose connections take libpq's ``options`` and ``connect_timeout``
LIBPQ_DRIVERS = frozenset({"psycopg", "psycopg2"})
#: keys of SQLALCHEMY_ENGINE_OPTIONS that size the host's pool; the tracking pool has its own
POOL_KEYS = frozenset(
    {"pool_size", "max_overflow", "pool_timeout", "poolclass", "pool_recycle", "pool_pre_ping"}
)


def has_fast_path(dialect: Dialect) -> bool:
    """Whether the hot path's INSERT may go straight to the driver's connection.

    Only psycopg 3: its ``Connection.execute`` runs a prepared statement in one call.
    psycopg2 shares psycopg's paramstyle but has no such method, so the test is the
    driver's name, never the paramstyle.
    """
    return dialect.driver == "psycopg"


def is_in_memory(url: sa.URL) -> bool:
    """An in-memory SQLite database exists once per connection: nothing else can share it."""
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in str(url.query.get("mode", ""))


def _timeout_args(driver: str, timeout: float) -> dict[str, Any]:
    """Connection arguments that bound every statement and lock wait by ``timeout``."""
    ms = max(1, round(timeout * 1000))
    if driver in LIBPQ_DRIVERS:
        return {
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
            # libpq takes whole seconds and treats anything below 2 as 2
            "connect_timeout": max(2, math.ceil(timeout)),
        }
    if driver == "pysqlite":
        return {"timeout": timeout}  # how long to wait for a locked database
    return {}


def own_engine(
    host: sa.Engine,
    *,
    timeout: float | None,
    pool_size: int,
    options: dict[str, Any],
    autocommit: bool = False,
    pre_ping: bool = False,
    settings: dict[str, str] | None = None,
    snapshot: bool = False,
    statement_timeout: float | None = None,
) -> sa.Engine:
    """An engine of the extension's own on the host's database (tracking's, or the
    reports'), or the host's engine itself when its database cannot be shared (in-memory
    SQLite).

    Tracking writes after the host's view, while the request still holds a connection of the
    host's pool: taking a second one from the same pool deadlocks under load (every request
    holds one and waits for another). A pool of its own cannot, and its waits — checkout,
    statements, locks — are bounded by ``timeout``. ``options`` are the host's
    SQLALCHEMY_ENGINE_OPTIONS; its pool sizing is not copied.

    Reports read through such a pool too (``timeout`` None: a report may take as long as
    the host's own queries; ``pre_ping``: each checkout tests its connection, so a
    database restart fails no report; ``settings``: PostgreSQL settings of each connection,
    given as its connection options unless the host's options give them, see
    :data:`REPORTS_SETTINGS`; ``snapshot``: on PostgreSQL each transaction reads one
    snapshot, REPEATABLE READ, so the statements of one report, or of one page of reports,
    agree; ``statement_timeout``: seconds each statement may run, lock waits included,
    whatever the host's options say — PostgreSQL's ``statement_timeout``, a deadline checked
    while it runs on SQLite): see
    :meth:`~tutor_times.app.state.AppState.reports_engine`.
    """
    url = host.url
    if is_in_memory(url):
        return host.execution_options(isolation_level="AUTOCOMMIT") if autocommit else host
    kwargs = {k: v for k, v in options.items() if k not in POOL_KEYS}
    connect_args = _connect_args(
        host, dict(kwargs.pop("connect_args", {}) or {}), timeout, settings, statement_timeout
    )
    if autocommit:
        # set once on each new connection, rather than on every checkout and back again
        kwargs["isolation_level"] = "AUTOCOMMIT"
    elif snapshot and host.dialect.name == "postgresql":
        kwargs["isolation_level"] = "REPEATABLE READ"
    pool: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_pre_ping": pre_ping,
    }
    if timeout is not None:
        pool["pool_timeout"] = timeout
    engine = sa.create_engine(url, connect_args=connect_args, **pool, **kwargs)
    if host.dialect.driver == "pysqlite":
        sa.event.listen(engine, "connect", _enforce_foreign_keys)
        if statement_timeout is not None:
            _stop_sqlite_statements_after(engine, statement_timeout)
    return engine


def _connect_args(
    host: sa.Engine,
    connect_args: dict[str, Any],
    timeout: float | None,
    settings: dict[str, str] | None,
    statement_timeout: float | None,
) -> dict[str, Any]:
    """The host's ``connect_args`` with :func:`own_engine`'s timeout, settings and
    statement timeout added (a setting the host gives itself stays the host's)."""
    ours = {} if timeout is None else _timeout_args(host.dialect.driver, timeout)
    if settings and host.dialect.driver in LIBPQ_DRIVERS:
        # a setting the host gives in its own connection options is the host's to make
        hosts = str(connect_args.get("options") or "")
        given = " ".join(
            f"-c {name}={value}"
            for name, value in settings.items()
            if not re.search(rf"(?:-c\s*|--){re.escape(name)}=", hosts)
        )
        ours["options"] = f"{ours.get('options', '')} {given}".strip()
    if statement_timeout is not None and host.dialect.driver in LIBPQ_DRIVERS:
        # after the host's options, so that it is the one in force
        ms = max(1, round(statement_timeout * 1000))
        ours["options"] = f"{ours.get('options', '')} -c statement_timeout={ms}".strip()
    if "options" in ours and connect_args.get("options"):
        ours["options"] = f"{connect_args['options']} {ours['options']}"
    connect_args.update(ours)
    if host.dialect.driver == "pysqlite":
        # one engine's connections are used from the threads of many requests
        connect_args.setdefault("check_same_thread", False)
    return connect_args


#: SQLite virtual-machine instructions between two looks at a statement's deadline
SQLITE_CHECK_EVERY = 10_000


def _stop_sqlite_statements_after(engine: sa.Engine, seconds: float) -> None:
    """SQLite has no statement timeout: each statement of ``engine`` gets a deadline that a
    progress handler checks while it runs (its rows read included), interrupting it past
    ``seconds`` — the error :func:`stopped_by_timeout` recognises."""

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _deadline(conn: sa.Connection, *_: Any) -> None:
        deadline = time.monotonic() + seconds
        raw: Any = conn.connection.dbapi_connection
        raw.set_progress_handler(lambda: time.monotonic() > deadline, SQLITE_CHECK_EVERY)

    @sa.event.listens_for(engine, "checkin")
    def _no_deadline(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.set_progress_handler(None, 0)


#: the reports' connections on PostgreSQL. No JIT: a report over years costs past
#: ``jit_above_cost``, and compiling its expressions took longer than running them. Memory
#: to hash: a report groups a range's sessions by tutor (or bucket) while gathering the ids
#: of its cut sessions in arrays, which the planner sizes at 8 kB a group; under the default
#: 4 MB it sorted two years of a unit's sessions on disk instead (35 ms, hashed 17 ms).
#: Plans made for each run: a report's statements are prepared (parsed once per
#: connection), and after five runs PostgreSQL may keep a generic plan, made for no range
#: in particular; one range is a day, the next two years, and over two years the generic
#: plan grouped a unit's sessions at about half the speed (a summary at 10x: 23 ms, 14 ms
#: planned for its range, for under a millisecond of planning). The one statement whose plan
#: does not depend on its range, the stored class-time split's, is given a generic plan
#: for itself alone (:func:`rows_on_generic_plan`).
#: A host that sets any of them in its ``connect_args`` ``options`` keeps its own value.
REPORTS_SETTINGS = {"jit": "off", "work_mem": "32MB", "plan_cache_mode": "force_custom_plan"}


def _enforce_foreign_keys(dbapi_connection: Any, record: Any) -> None:
    """SQLite checks foreign keys only when asked, per connection: without it an activity
    for a unit that does not exist would be stored on SQLite and refused on PostgreSQL."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


Violation = Literal["unique", "foreign_key", "check", "other"]


#: what PostgreSQL answers when a statement ran past ``statement_timeout`` (query_canceled)
#: or waited past ``lock_timeout`` (lock_not_available)
STOPPED_STATES = frozenset({"57014", "55P03"})


def stopped_by_timeout(exc: sa.exc.DBAPIError) -> bool:
    """Whether the database stopped the statement because it ran (or waited) too long."""
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        return str(orig) == "interrupted"  # by the progress handler of a deadline
    return (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) in STOPPED_STATES


def integrity_violation(exc: sa.exc.IntegrityError) -> Violation:
    """Which kind of constraint refused a statement.

    A unique violation on the open-session index is a race another request won (retry); a
    foreign key violation names a user or unit that does not exist (a client's mistake).
    """
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code is not None:
        kinds: dict[str, Violation] = {"23505": "unique", "23503": "foreign_key", "23514": "check"}
        return kinds.get(code, "other")
    text = str(orig).upper()
    if "UNIQUE" in text:
        return "unique"
    if "FOREIGN KEY" in text:
        return "foreign_key"
    if "CHECK" in text:
        return "check"
    return "other"


def is_unique_violation(exc: BaseException, index: str, column: str) -> bool:
    """Whether ``exc`` is the unique index ``index`` on ``column`` refusing a row: through
    SQLAlchemy, or straight from psycopg's COPY (:func:`insert_rows`), which SQLAlchemy never
    sees. PostgreSQL names the index; SQLite names the column."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code is not None:
        diag = getattr(orig, "diag", None)
        return code == "23505" and getattr(diag, "constraint_name", None) == index
    text = str(orig)
    return "UNIQUE constraint failed" in text and text.endswith(f".{column}")


def execute_for_id(
    conn: sa.Connection, statement: Any, params: dict[str, Any], compiled: dict[str, str]
) -> int | None:
    """Run an INSERT … RETURNING id; the new id, or None when it inserted nothing.

    On psycopg 3, unless someone listens to the engine's statement events (tracing, tests),
    the statement — compiled once per dialect into ``compiled`` — goes straight to the
    driver: SQLAlchemy's per-call execution machinery would be a sixth of the hot path
    (benchmarks/README.md, B1). Errors still come out as SQLAlchemy's, and a lost connection
    invalidates the whole pool, as SQLAlchemy's own execution does: a database restart
    dropped every pooled connection, not only this one, and a retry must not take another
    of them (see :func:`retry_disconnects`).
    """
    if not _straight_to_driver(conn):
        value = conn.execute(statement, params).scalar()
        return None if value is None else int(value)
    sql = _compiled_once(conn.dialect, statement, compiled)
    row = _on_driver(conn, sql, params, lambda raw: raw.execute(sql, params).fetchone())
    return None if row is None else int(row[0])


#: sent in the same round trip as a statement that is to have a generic plan: the setting
#: in force kept (for this transaction), then a generic plan for what follows
GENERIC_PLAN = (
    "SELECT set_config('tutor_times.plan_cache_mode', current_setting('plan_cache_mode'), true),"
    " set_config('plan_cache_mode', 'force_generic_plan', true)"
)
#: and after it: the setting kept given back
KEPT_PLAN = (
    "SELECT set_config('plan_cache_mode', current_setting('tutor_times.plan_cache_mode'), true)"
)


def rows_on_generic_plan(
    conn: sa.Connection, statement: Any, params: dict[str, Any], compiled: dict[str, str]
) -> list[Any]:
    """The rows of ``statement``, a read whose plan does not depend on its parameters' values,
    on a generic plan: PostgreSQL plans it once per connection rather than on each run, as
    the reports' connections ask for every other statement (:data:`REPORTS_SETTINGS`).

    On psycopg 3 (without statement listeners, as :func:`execute_for_id`) the statement is
    prepared and sent in one round trip (pipeline mode) between two that set
    ``plan_cache_mode`` for it alone, in the current transaction, and give back the
    connection's own. Elsewhere it runs as any statement does."""
    if not _straight_to_driver(conn) or not conn.in_transaction():
        return list(conn.execute(statement, params))
    sql = _compiled_once(conn.dialect, statement, compiled)

    def pipelined(raw: Any) -> list[Any]:
        with raw.pipeline():
            raw.execute(GENERIC_PLAN, prepare=True)
            cursor = raw.execute(sql, params, prepare=True)
            raw.execute(KEPT_PLAN, prepare=True)
        return cursor.fetchall()  # type: ignore[no-any-return]

    return _on_driver(conn, sql, params, pipelined)


def _straight_to_driver(conn: sa.Connection) -> bool:
    """Whether a statement of ``conn`` may go straight to the driver: psycopg 3, and no one
    listens to the engine's statement events or errors."""
    dialect = conn.dialect
    events = conn.dispatch
    return has_fast_path(dialect) and not (
        events.before_cursor_execute or events.after_cursor_execute or dialect.dispatch.handle_error
    )


def _compiled_once(dialect: Dialect, statement: Any, compiled: dict[str, str]) -> str:
    sql = compiled.get(dialect.name)
    if sql is None:
        sql = compiled[dialect.name] = str(statement.compile(dialect=dialect))
    return sql


def _on_driver(conn: sa.Connection, sql: str, params: dict[str, Any], run: Callable[[Any], T]) -> T:
    """``run`` on ``conn``'s psycopg connection, its errors raised as SQLAlchemy's; a lost
    connection invalidates the pool (:func:`execute_for_id`)."""
    dialect = conn.dialect
    pooled = conn.connection
    try:
        return run(pooled.driver_connection)
    except dialect.loaded_dbapi.Error as exc:
        invalidated = dialect.is_disconnect(exc, pooled.dbapi_connection, None)
        if invalidated:
            # every connection of the pool made before now is replaced at its next checkout
            conn.engine.pool._invalidate(pooled, exc)
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            sql,
            params,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=invalidated,
            dialect=dialect,
        ) from exc


#: how many times a write is tried when the database dropped its connection each time
DISCONNECT_ATTEMPTS = 3


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` says the database dropped the connection (a restart, a terminated
    backend), so the statement was not done and may be sent again on a new connection."""
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


def retry_disconnects(write: Callable[[], T], attempts: int = DISCONNECT_ATTEMPTS) -> T:
    """``write()``, run again (up to ``attempts`` in all) while it fails on a connection the
    database had dropped.

    A dropped connection invalidates its whole pool (SQLAlchemy's execution does, and
    :func:`execute_for_id`), so the next attempt runs on a new connection: a restart costs
    the one statement that found it, not the activity. A server that dies as a statement
    runs ends it uncommitted, so running it again does not do it twice. Each attempt is
    bounded by the pool's own timeouts; anything else is raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except sa.exc.DBAPIError as exc:
            if not is_disconnect(exc) or attempt == attempts:
                raise
    raise AssertionError("unreachable")
