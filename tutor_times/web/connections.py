"""The connections a request's reports read on: one pooled connection per request (on the
reports bind or a replica when one is set), a second one beside it for the dashboard, and the
timeouts that answer 503 or 413."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import g

from ..app.services import services
from ..reports import whatif
from ..reports.scope import Scope
from ..store import drivers
from .api import ApiError
from .beside import Beside

T = TypeVar("T")

#: where :func:`one_connection` keeps the request's reports connection
SHARED_CONNECTION = "tutor_times_reports_connection"
#: where :func:`one_connection` keeps the second connection it reads beside the first
BESIDE = "tutor_times_reports_beside"


def _reports_engine() -> sa.Engine:
    """The reports pool (:meth:`~tutor_times.app.state.AppState.reports_engine`) on the host's
    database, or on the reports bind if one is set."""
    ext = services()
    bind = ext.state.settings.reports_bind
    # Reports only read, so they may go to a replica (TUTOR_TIMES_REPORTS_BIND); tracking and
    # closing never come here and always write to the primary.
    source = ext.db.engine if bind is None else ext.db.engines[bind]
    return ext.state.reports_engine(source)


@contextmanager
def _reading() -> Iterator[sa.Connection]:
    """A connection of the reports pool whose read ends in a COMMIT rather than the pool's
    rollback: psycopg forgets its prepared statements on every rollback, so only a
    connection returned with no transaction open keeps them, and the next report on it runs
    its statements prepared rather than parsed afresh."""
    with _reports_engine().connect() as conn:
        yield conn
        conn.commit()


@contextmanager
def one_connection(*, beside: bool = False) -> Iterator[None]:
    """Every :func:`report` inside runs on one connection: a page of several reports checks
    a connection out of the reports' pool (a ping) and returns it (a commit) once, not per
    report. With ``beside``, the reports given to :func:`later` run on a second connection
    reading the same snapshot, while the page goes on (:mod:`.beside`)."""
    with _reading() as conn:
        second: Beside | None = None
        try:
            setattr(g, SHARED_CONNECTION, conn)
            second = Beside.of(conn, _reports_engine()) if beside else None
            if second is not None:
                setattr(g, BESIDE, second)
            yield
        finally:
            g.pop(SHARED_CONNECTION, None)
            g.pop(BESIDE, None)
            if second is not None:
                second.close()


def later(query: Callable[..., T], *args: Any, **kwargs: Any) -> Callable[[], T]:
    """:func:`report`, started on the second connection of :func:`one_connection` when it
    has one (else run now); returns what gives its result."""
    second: Beside | None = g.get(BESIDE)
    if second is None:
        result = report(query, *args, **kwargs)
        return lambda: result
    return second.run(_on(query, *args, **kwargs))


def report(query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one of the ``reports`` functions on a connection of its own (or the one of
    :func:`one_connection`), with the tables and the shortest session length it needs."""
    shared: sa.Connection | None = g.get(SHARED_CONNECTION)
    if shared is not None:
        return _on(query, *args, **kwargs)(shared)
    with _reading() as conn:
        return _on(query, *args, **kwargs)(conn)


def _on(query: Callable[..., T], *args: Any, **kwargs: Any) -> Callable[[sa.Connection], T]:
    """``query`` of ``reports`` as a function of a connection alone: given the tables and
    the shortest session length it needs (read here, in the request). A statement the
    database stopped at TUTOR_TIMES_REPORT_TIMEOUT is a 503 that says so."""
    ext = services()
    models, min_minutes = ext.models, ext.state.min_minutes
    limit = ext.state.settings.report_timeout

    def run(conn: sa.Connection) -> T:
        try:
            return query(conn, models, *args, min_minutes=min_minutes, **kwargs)
        except sa.exc.DBAPIError as exc:
            if not drivers.stopped_by_timeout(exc):
                raise
        raise ApiError(
            503,
            f"the report ran longer than TUTOR_TIMES_REPORT_TIMEOUT ({limit:g} s) and was"
            " stopped; ask for a shorter range, or try again later",
        )

    return run


def what_if(query: Callable[..., T], scope: Scope, *args: Any, seconds: int) -> T:
    """A ``whatif`` report under a timeout of ``seconds``. It reads the activities up to a
    timeout before the range (and a while after it); a range at the very start of the
    calendar leaves no room for that, and is a 400 naming ``timeout`` rather than a 500.
    Cutting more sessions than TUTOR_TIMES_WHATIF_MAX_SESSIONS is a 413 naming ``timeout``."""
    limit = services().state.settings.whatif_max_sessions
    try:
        return report(query, scope, *args, timeout=timedelta(seconds=seconds), limit=limit)
    except whatif.NoRoomInCalendar:
        raise ApiError(
            400,
            "timeout: the range is too close to the ends of the calendar for a what-if",
            "timeout",
        ) from None
    except whatif.TooManySessions:
        raise ApiError(
            413,
            f"timeout: under a timeout of {seconds} s this range's activities make more than"
            f" {limit} sessions (TUTOR_TIMES_WHATIF_MAX_SESSIONS); ask for a shorter range"
            " or a longer timeout",
            "timeout",
        ) from None
