"""The SQL store: where every activity is written and placed in its session (R1-R5).

SQL is the source of truth. The common cases cost one statement (the Redis cache knows the
open session) or one locked read and a write (the original design's algorithm: continue the
key's open session, or close it and start a new one). An activity that arrives out of order
— before the start of its key's open session, or with no open session — is *placed*: it
joins, extends or bridges the key's neighbouring sessions so that the stored sessions are
always exactly the maximal runs of the key's activities with gaps under the timeout (R2).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached

from ..core import metrics
from ..core.accounting import continues, duration_minutes, lock_hash
from ..core.errors import UnknownReferenceError
from . import drivers, figures
from .activity import STORED_FIELDS, Activity
from .models import Models, UTCDateTime
from .sql import close_sessions, lock_keys, sessions_of_key, tutor_hash

#: locks the slow paths of one process share, by key (a key's hash picks one)
KEY_LOCK_STRIPES = 256
#: seconds a slow path waits for another of its key in this process before going on
LOCAL_WAIT = 10.0


@dataclass(frozen=True)
class Recorded:
    activity: Any  # the stored SessionActivity, detached
    session_id: int
    #: the session's last activity after this one
    last_activity: datetime
    #: whether the session is the key's open one (only that one is worth caching)
    open: bool = True


class SqlStore:
    """Writes activities and keeps each key's sessions equal to rule R2."""

    #: attempts when a concurrent request created the key's session first (R5)
    attempts = 5

    def __init__(
        self,
        models: Models,
        engine: Callable[[], sa.Engine],
        *,
        autocommit: Callable[[], sa.Engine],
        timeout: timedelta,
        min_minutes: int,
        maintenance: Callable[[], sa.Engine] | None = None,
    ) -> None:
        self.models = models
        #: the tracking engine: bounded waits, a pool of its own (see drivers.own_engine)
        self.engine = engine
        #: the same database in autocommit mode, for the single-statement append
        self.autocommit = autocommit
        #: the host's engine, for the sweep, purges and reports
        self.maintenance = maintenance or engine
        self.timeout = timeout
        self.min_minutes = min_minutes
        #: the append statement's SQL text, by dialect (see drivers.execute_for_id)
        self._compiled: dict[str, str] = {}
        self._activity_class = models.SessionActivity.__mapper__.class_manager
        #: slow paths of one key wait for each other here, in this process, rather than in
        #: the database while holding a pooled connection (see record)
        self._key_locks = [threading.Lock() for _ in range(KEY_LOCK_STRIPES)]
        self._build_statements()

    def _build_statements(self) -> None:
        ms = self.models.MarkingSession
        at = sa.bindparam("at", type_=UTCDateTime)
        self._append_if_open = append_statement(self.models)
        row = sessions_of_key(self.models)
        # the key's latest session: the open one, if the key has one (only the latest can be)
        self._latest_session = (
            row.order_by(ms.start_time.desc(), ms.id.desc()).limit(1).with_for_update(of=ms)
        )
        self._session_before = (
            row.where(ms.start_time <= at)
            .order_by(ms.start_time.desc(), ms.id.desc())
            .limit(1)
            .with_for_update(of=ms)
        )
        self._session_after = (
            row.where(ms.start_time > at)
            .order_by(ms.start_time, ms.id)
            .limit(1)
            .with_for_update(of=ms)
        )
        self._create_session = sa.insert(ms).returning(ms.id)

    # -- connections ---------------------------------------------------------------------

    def connect(self) -> sa.Connection:
        """A connection of the host's engine (sweeps, purges, imports); reports read
        through a pool of their own."""
        return self.maintenance().connect()

    # -- the hot path ------------------------------------------------------------------------

    def append_if_open(self, session_id: int, a: Activity) -> Any | None:
        """One INSERT in one round trip; None when the session is closed, gone, another
        key's, or starts after ``a``.

        The statement is its own transaction (autocommit): it is atomic alone, and a separate
        COMMIT would cost a second round trip on the hot path.
        """

        def write() -> Any | None:
            with self.autocommit().connect() as conn:
                return self._append(conn, session_id, a)

        return drivers.retry_disconnects(write)

    def _append(self, conn: sa.Connection, session_id: int, a: Activity) -> Any | None:
        """The stored activity as a detached ORM object; None when it was not appended."""
        activity_id = drivers.execute_for_id(
            conn, self._append_if_open, {"sid": session_id, **a.params()}, self._compiled
        )
        if activity_id is None:
            return None
        # As the ORM builds a loaded object: no attribute events, no INSERT pending. Every
        # column is what was just written: only the id came back.
        activity = self._activity_class.new_instance()
        activity.__dict__.update(a.row(activity_id, session_id))
        make_transient_to_detached(activity)
        return activity

    # -- the SQL algorithm -------------------------------------------------------------------

    def record(self, a: Activity) -> Recorded:
        """Store ``a`` in its session: continue the key's open session, close it and start a
        new one, or place ``a`` among the key's sessions when it arrives out of order."""

        def write() -> Recorded:
            for attempt in range(1, self.attempts + 1):
                with self.engine().connect() as conn:
                    try:
                        return self._record(conn, a)
                    except IntegrityError as exc:
                        conn.rollback()
                        kind = drivers.integrity_violation(exc)
                        if kind == "foreign_key":
                            raise self._unknown_reference(conn, a) from None
                        # Another request opened this key's session between our SELECT and
                        # INSERT; the partial unique index refused the second one (R5).
                        if kind != "unique" or attempt == self.attempts:
                            raise
            raise AssertionError("unreachable")

        # A burst of one key's first activities (a page firing tracked requests at once) would
        # otherwise queue on the key's database lock, each holding a pooled connection: the
        # pool would run dry and the waits pass TUTOR_TIMES_SQL_TIMEOUT. Queued here they hold
        # nothing, and each finds the session the one before it made. The database lock still
        # orders other processes; past LOCAL_WAIT the write goes on without this one.
        lock = self._key_locks[_key_hash(a) % KEY_LOCK_STRIPES]
        held = lock.acquire(timeout=LOCAL_WAIT)
        try:
            return drivers.retry_disconnects(write)
        finally:
            if held:
                lock.release()

    def _unknown_reference(self, conn: sa.Connection, a: Activity) -> UnknownReferenceError:
        """Which of the activity's user and unit the database does not know: drivers do not
        all say which foreign key refused a row, so ask the referenced tables."""
        columns = self.models.MarkingSession.__table__.c
        for field, noun in (("unit_id", "unit"), ("marker_id", "user")):
            value = getattr(a, field)
            for fk in columns[field].foreign_keys:
                target = fk.column
                found = conn.scalar(sa.select(target).where(target == value).limit(1))
                if found is None:
                    return UnknownReferenceError(f"no such {noun}: {value}", field=field)
        return UnknownReferenceError("no such user or unit")

    def _record(self, conn: sa.Connection, a: Activity) -> Recorded:
        # Every slow path of a key takes the key's lock first, so two of them never hold
        # each other's rows (a placement locks both neighbours of its activity).
        lock_keys(conn, [_key_hash(a), tutor_hash(a.unit_id, a.marker_id)])
        latest = conn.execute(self._latest_session, _key_params(a)).first()
        if latest is not None and latest.end_time is None and latest.start_time <= a.at:
            if continues(a.at, latest.last, self.timeout):
                # locked and open, and a.at is not before its start: the append succeeds
                activity = self._append(conn, latest.id, a)
                conn.commit()
                return Recorded(activity, latest.id, max(latest.last, a.at))
            self._close(conn, latest, a.at)
            return self._start(conn, a, closed=False)
        return self.place(conn, a, latest)

    def _close(self, conn: sa.Connection, row: Any, now: datetime) -> None:
        """Close the key's open session at its last activity: the key's next activity
        arrived after the timeout, before any sweep or expiry event closed it."""
        if close_sessions(
            conn, self.models, [(row.id, row.start_time, row.last)], self.min_minutes, now
        ):
            figures.sessions_changed(conn, self.models, [row.id])
            lag = (now - row.last - self.timeout).total_seconds()
            metrics.sessions_closed(metrics.NEXT_ACTIVITY, [lag])

    def _start(self, conn: sa.Connection, a: Activity, *, closed: bool) -> Recorded:
        """A new session holding only ``a``: open, or closed at once when the key already has
        a later session (only the key's latest session can be open)."""
        end = {"end_time": a.at, "duration_minutes": self.min_minutes} if closed else {}
        session_id = conn.scalar(
            self._create_session,
            {**_key_params(a), "start_time": a.at, "created_at": a.at, "updated_at": a.at, **end},
        )
        activity = self._append_to(conn, session_id, a, closed=closed)
        if closed:
            figures.sessions_changed(conn, self.models, [session_id])
        conn.commit()
        metrics.session_opened()
        return Recorded(activity, session_id, a.at, open=not closed)

    def _append_to(self, conn: sa.Connection, session_id: int, a: Activity, *, closed: bool) -> Any:
        """Append to a session this transaction holds locked, open or closed."""
        if not closed:
            activity = self._append(conn, session_id, a)
            if activity is not None:
                return activity
        table = self.models.SessionActivity.__table__
        row = a.row(0, session_id)
        del row["id"]
        activity_id = conn.scalar(sa.insert(table).values(**row).returning(table.c.id))
        activity = self._activity_class.new_instance()
        activity.__dict__.update(a.row(activity_id, session_id))
        make_transient_to_detached(activity)
        return activity

    def place(self, conn: sa.Connection, a: Activity, latest: Any) -> Recorded:
        """Put ``a`` among its key's sessions by R2, whatever the order it arrives in.

        With S the key's session starting at or before ``a`` and N the next one: ``a`` joins
        S when it lies within S or less than the timeout after S's last activity; it joins N
        when N starts less than the timeout after it; joining both merges S and N into one.
        Otherwise ``a`` starts a session of its own (closing S if S was the open one and ``a``
        is now the latest). Only the key's two neighbours of ``a`` can change, so the rule
        holds for the whole key after each placement. The caller holds the key's lock and
        passes the key's latest session (locked), which answers the usual case alone.

        The session ``a`` joins is open afterwards when it is the key's latest: ``a`` is live
        (R2: at most MAX_BACKDATE old), and a sweep closes a session only once its last
        activity is TIMEOUT + MAX_BACKDATE old (R6), so a live activity within TIMEOUT of the
        key's latest session finds it closed only when it was closed before it was idle (a
        sweep as of a time still to come). Extended while closed, it would stay out of the
        live sessions with its tutor still marking.
        """
        before: Any
        after: Any
        if latest is None or latest.start_time <= a.at:
            before, after = latest, None
        else:
            key = {**_key_params(a), "at": a.at}
            before = conn.execute(self._session_before, key).first()
            after = conn.execute(self._session_after, key).first()
        joins_before = before is not None and continues(a.at, before.last, self.timeout)
        joins_after = after is not None and after.start_time - a.at < self.timeout
        if joins_before and joins_after:
            return self._bridge(conn, a, before, after, reopen=after.id == latest.id)
        if joins_before:
            last = max(before.last, a.at)
            was_closed = before.end_time is not None
            closed = was_closed and after is not None  # no `after`: ``before`` is the latest
            if was_closed:
                self._set_span(conn, before.id, before.start_time, last, closed=closed, now=a.at)
            activity = self._append_to(conn, before.id, a, closed=closed)
            if was_closed:
                figures.sessions_changed(conn, self.models, [before.id])
            conn.commit()
            return Recorded(activity, before.id, last, open=not closed)
        if joins_after:
            was_closed = after.end_time is not None
            closed = was_closed and after.id != latest.id
            self._set_span(conn, after.id, a.at, after.last, closed=closed, now=a.at)
            activity = self._append_to(conn, after.id, a, closed=closed)
            if was_closed:
                figures.sessions_changed(conn, self.models, [after.id])
            conn.commit()
            return Recorded(activity, after.id, after.last, open=not closed)
        if after is None and before is not None and before.end_time is None:
            self._close(conn, before, a.at)
        return self._start(conn, a, closed=after is not None)

    def _bridge(
        self, conn: sa.Connection, a: Activity, before: Any, after: Any, *, reopen: bool
    ) -> Recorded:
        """``a`` closes the gap between two sessions: they become one, under the earlier id;
        open when ``reopen`` (``after`` is the key's latest session: see :meth:`place`)."""
        ms, act = self.models.MarkingSession, self.models.SessionActivity
        conn.execute(
            sa.update(act.__table__)
            .where(act.marking_session_id == after.id)
            .values(marking_session_id=before.id)
        )
        # the later session goes first: it may be the key's open one (R5's unique index)
        conn.execute(sa.delete(ms.__table__).where(ms.id == after.id))
        closed = after.end_time is not None and not reopen
        self._set_span(conn, before.id, before.start_time, after.last, closed=closed, now=a.at)
        activity = self._append_to(conn, before.id, a, closed=closed)
        # one block fewer, or one of them reopened: the figures around them change
        figures.sessions_changed(conn, self.models, [before.id])
        conn.commit()
        return Recorded(activity, before.id, after.last, open=not closed)

    def _set_span(
        self,
        conn: sa.Connection,
        session_id: int,
        start: datetime,
        last: datetime,
        *,
        closed: bool,
        now: datetime,
    ) -> None:
        """A session's start, and for a closed one its end and duration (R3, R4)."""
        ms = self.models.MarkingSession.__table__
        values: dict[str, Any] = {"start_time": start, "end_time": None, "duration_minutes": None}
        if closed:
            values.update(
                end_time=last, duration_minutes=duration_minutes(start, last, self.min_minutes)
            )
        conn.execute(sa.update(ms).where(ms.c.id == session_id).values(**values, updated_at=now))


def append_statement(models: Models) -> Any:
    """The INSERT every activity is written by.

    It appends to the session only while it is open, only if it is the activity's key's (a
    cached id from before a database restore must not put the activity into another tutor's
    session), and only if the activity does not precede the session's start (then the
    session must be moved: see :meth:`SqlStore.place`). FOR SHARE makes a concurrent sweep or
    placement wait for this INSERT. Only the new id comes back.
    """
    ms, act = models.MarkingSession, models.SessionActivity
    table = act.__table__
    at = sa.bindparam("at", type_=UTCDateTime)  # no CAST: SQLite would make it a number
    values = [sa.cast(sa.bindparam(name), table.c[name].type) for name in STORED_FIELDS]
    target = [
        table.c.marking_session_id,
        *(table.c[name] for name in STORED_FIELDS),
        table.c.created_at,
        table.c.updated_at,
    ]
    session = (
        sa.select(ms.id, *values, at, at)
        .where(
            ms.id == sa.bindparam("sid"),
            ms.end_time.is_(None),
            ms.marker_id == sa.bindparam("marker_id"),
            ms.unit_id == sa.bindparam("unit_id"),
            ms.ip_address == sa.bindparam("ip_address"),
            ms.start_time <= at,
        )
        .with_for_update(read=True)
    )
    return sa.insert(act).from_select(target, session).returning(table.c.id)


def _key_params(a: Activity) -> dict[str, Any]:
    return {"marker_id": a.marker_id, "unit_id": a.unit_id, "ip_address": a.ip_address}


def _key_hash(a: Activity) -> int:
    return key_hash(a.key)


def key_hash(key: tuple[int, int, str]) -> int:
    """A signed 64-bit number for the key (R1), for a per-key lock: every writer that places
    activities of a key (live tracking's slow path, imports, rebuilds) takes it first."""
    marker_id, unit_id, ip_address = key
    return lock_hash(f"{marker_id}:{unit_id}:{ip_address}")
