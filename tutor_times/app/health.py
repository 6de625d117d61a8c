"""``GET /health``: is this process able to track? The database, Redis, and the worker.

Built for a load balancer probing every second: one short query (which reads the worker's
heartbeat while it proves the database answers) and one PING, each bounded by the timeouts
tracking already has (TUTOR_TIMES_SQL_TIMEOUT; Redis's 0.25 s), and no lock of its own.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import redis
import sqlalchemy as sa

from ..store import jobs
from .state import AppState

OK, FAIL, NOT_USED, STALE, UNKNOWN = "ok", "fail", "not used", "stale", "unknown"


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


def _database(engine: sa.Engine, table: sa.Table) -> tuple[dict[str, Any], datetime | None]:
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            beat = jobs.last_beat(conn, table)
    except sa.exc.SQLAlchemyError as exc:
        return {"status": FAIL, "ms": _ms(started), "error": _name(exc)}, None
    return {"status": OK, "ms": _ms(started)}, beat


def _redis(state: AppState) -> dict[str, Any]:
    client = state.redis
    if client is None:
        return {"status": NOT_USED}
    started = time.perf_counter()
    try:
        client.ping()
    except redis.RedisError as exc:
        return {"status": FAIL, "ms": _ms(started), "error": _name(exc)}
    return {"status": OK, "ms": _ms(started)}


def _name(exc: BaseException) -> str:
    """The failure's kind, not its message: an anonymous caller learns no host names."""
    cause = getattr(exc, "orig", None) or exc
    return type(cause).__name__


def _worker(state: AppState, beat: datetime | None, now: datetime) -> dict[str, Any]:
    max_age = state.settings.operations.health_max_heartbeat_age
    if beat is None:
        return {"status": UNKNOWN if max_age is None else FAIL, "last_heartbeat": None}
    age = (now - beat).total_seconds()
    status = OK
    if max_age is not None and age > max_age.total_seconds():
        status = FAIL
    elif age > 3 * state.settings.sweep_interval + 60:
        status = STALE  # shown to a person; fails the check only past the configured age
    return {"status": status, "last_heartbeat": beat.isoformat(), "age_seconds": round(age, 1)}


def check(state: AppState, engine: sa.Engine, table: sa.Table, now: datetime) -> dict[str, Any]:
    """The answer's body: ``status`` is "ok" when every check passes, else "fail"."""
    database, beat = _database(engine, table)
    checks = {"database": database, "redis": _redis(state), "worker": _worker(state, beat, now)}
    failed = any(c["status"] == FAIL for c in checks.values())
    return {"status": FAIL if failed else OK, "checks": checks}
