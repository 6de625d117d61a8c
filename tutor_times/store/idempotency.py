"""Retries that count once: the first answer to each idempotency key, kept in SQL.

A request that carries a key first *claims* it: one INSERT of (scope, user, key) with no
answer yet. The primary key lets exactly one request win, on every backend and across
processes; the winner does the work and stores its answer, or releases the key if the work
failed, so that a retry may try again. Every other request with that key waits (briefly) for
the answer and returns it, and stores nothing. A key used again with another request is
refused, since answering it with the first request's answer would hide a client bug.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from . import drivers

#: what a key was given to: POST /activities, or a host view decorated with @track
ACTIVITIES, TRACK = "activities", "track"
MAX_KEY_LENGTH = 255
#: how long a retry waits for the first request with its key to finish before a 409
WAIT_S = 5.0
POLL_S = 0.02
#: a claim without an answer after this long belongs to a process that died mid-request, or
#: to one the database failed as it answered or released it (POST /activities documents it)
ABANDONED_AFTER = timedelta(minutes=2)


class KeyReused(Exception):
    """The key was first used with a different request."""


class KeyInUse(Exception):
    """The first request with this key is still being served."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


def fingerprint(data: Any) -> str:
    """A hash of a request's meaning: the same JSON in any key order is the same request."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def own_key(key: str, target: Any) -> str:
    """The key a request claims when its client sent ``key`` before with another request
    target: one per (key, target), so each target's retries still count once. It cannot be
    a key a client sends by mistake (a client would have to send this digest itself)."""
    return "~" + fingerprint([key, target])


def valid_key(value: str) -> bool:
    return 0 < len(value) <= MAX_KEY_LENGTH and value.isascii() and value.isprintable()


@dataclass(frozen=True)
class Claim:
    scope: str
    user_id: int
    key: str

    def where(self, table: sa.Table) -> Any:
        c = table.c
        return sa.and_(c.scope == self.scope, c.user_id == self.user_id, c.key == self.key)


class IdempotencyKeys:
    """Claims, answers and expiry of one app's idempotency keys."""

    def __init__(
        self,
        table: sa.Table,
        engine: Callable[[], sa.Engine],
        *,
        clock: Callable[[], datetime],
        ttl: timedelta,
    ) -> None:
        self.table = table
        self.engine = engine
        self.clock = clock
        self.ttl = ttl

    def claim(self, claim: Claim, print_: str, *, wait: float = WAIT_S) -> Answer | None:
        """None when this request holds the key: it must then :meth:`complete` or
        :meth:`release` it. Otherwise the first request's answer. Raises :class:`KeyReused`,
        or :class:`KeyInUse` when no answer came within ``wait`` seconds.

        A connection the database dropped (a restart) is replaced and the claim tried again
        (:data:`~tutor_times.store.drivers.DISCONNECT_ATTEMPTS` in all). A claim whose COMMIT was
        lost with its connection may have been stored: the key's row with this request's
        own claim time is then this request's, not another's still in progress."""
        deadline = time.monotonic() + wait
        #: the claim times this request sent on connections that were dropped
        sent: set[datetime] = set()
        while True:
            now = self.clock()
            try:
                with self.engine().connect() as conn:
                    if self._insert(conn, claim, print_, now):
                        return None
                    row = conn.execute(
                        sa.select(self.table.c.fingerprint, self.table.c.status, self.table.c.body)
                        .add_columns(self.table.c.created_at)
                        .where(claim.where(self.table))
                    ).first()
                    if (
                        row is not None
                        and row.status is None
                        and row.fingerprint == print_
                        and row.created_at in sent
                    ):
                        return None  # stored before the connection dropped: ours
                    if row is not None and self._stale(row.created_at, row.status, now):
                        # expired, or abandoned: forget it (only that row) and claim afresh
                        conn.execute(
                            sa.delete(self.table).where(
                                claim.where(self.table), self.table.c.created_at == row.created_at
                            )
                        )
                        conn.commit()
                        continue
            except sa.exc.DBAPIError as exc:
                if not drivers.is_disconnect(exc) or len(sent) + 1 >= drivers.DISCONNECT_ATTEMPTS:
                    raise
                sent.add(now)
                continue
            if row is not None:
                if row.fingerprint != print_:
                    raise KeyReused
                if row.status is not None:
                    return Answer(row.status, row.body or "")
            if time.monotonic() >= deadline:
                raise KeyInUse
            time.sleep(POLL_S)

    def _insert(self, conn: sa.Connection, claim: Claim, print_: str, now: datetime) -> bool:
        values = {"scope": claim.scope, "user_id": claim.user_id, "key": claim.key}
        try:
            conn.execute(sa.insert(self.table).values(**values, fingerprint=print_, created_at=now))
            conn.commit()
            return True
        except IntegrityError:
            conn.rollback()
            return False

    def _stale(self, created_at: datetime, status: int | None, now: datetime) -> bool:
        age = now - created_at
        return age >= self.ttl or (status is None and age >= ABANDONED_AFTER)

    def complete(self, claim: Claim, answer: Answer) -> None:
        """Store the first request's answer for the retries (again on a new connection if
        the database dropped the first: the UPDATE may be repeated)."""

        def write() -> None:
            with self.engine().connect() as conn:
                conn.execute(
                    sa.update(self.table)
                    .where(claim.where(self.table))
                    .values(status=answer.status, body=answer.body)
                )
                conn.commit()

        drivers.retry_disconnects(write)

    def release(self, claim: Claim) -> None:
        """The first request failed: a retry may do the work (again on a new connection if
        the database dropped the first: the DELETE may be repeated)."""

        def write() -> None:
            with self.engine().connect() as conn:
                conn.execute(
                    sa.delete(self.table).where(
                        claim.where(self.table), self.table.c.status.is_(None)
                    )
                )
                conn.commit()

        drivers.retry_disconnects(write)


def expire(conn: sa.Connection, table: sa.Table, *, before: datetime) -> int:
    """Forget the keys first used before ``before``; returns how many."""
    result = conn.execute(sa.delete(table).where(table.c.created_at < before))
    conn.commit()
    return int(result.rowcount or 0)
