"""The tracker: validates an activity and records it through the stores (R1-R9)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError

from .accounting import UTC
from .errors import InvalidActivityError, UnknownActionError
from .store import Activity, RedisStore, SqlStore

logger = logging.getLogger("tutor_times")

BIGINT_MAX = 2**63 - 1


def check_action(action: object, actions: Collection[str]) -> str:
    if not isinstance(action, str) or action not in actions:
        raise UnknownActionError(
            f"unknown action {action!r}; TUTOR_TIMES_ACTIONS allows: {', '.join(sorted(actions))}",
            field="action",
        )
    return action


def check_id(value: object, field: str, *, required: bool) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= BIGINT_MAX:
        raise InvalidActivityError(
            f"{field} must be a positive integer, got {value!r}", field=field
        )
    return value


def check_ip(value: object) -> str:
    try:
        if not isinstance(value, str):  # ip_address() would take an int as an address
            raise ValueError
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidActivityError(
            f"ip_address must be an IPv4 or IPv6 address, got {value!r}", field="ip_address"
        ) from None


class Tracker:
    def __init__(
        self,
        *,
        actions: Collection[str],
        sql: SqlStore,
        redis_store: RedisStore | None,
        clock: Callable[[], datetime],
        max_skew: timedelta,
        ip_policy: Callable[[str], str] = str,
    ) -> None:
        self.actions = frozenset(actions)
        self.sql = sql
        self.redis = redis_store
        self.clock = clock
        self.max_skew = max_skew
        #: the stored form of an address (TUTOR_TIMES_IP_STORAGE), applied before any key
        self.ip_policy = ip_policy

    def validate(
        self,
        action: object,
        *,
        marker_id: object,
        unit_id: object,
        ip_address: object,
        project_id: object = None,
        task_id: object = None,
        task_definition_id: object = None,
        at: object = None,
    ) -> Activity:
        """Every check before anything is written (R8, bad input)."""
        now = self.clock()
        if at is None:
            at = now
        elif not isinstance(at, datetime):
            raise InvalidActivityError(f"at must be a datetime, got {at!r}", field="at")
        elif at.tzinfo is None or at.utcoffset() is None:
            raise InvalidActivityError(
                "at must be an aware datetime (with a time zone), got a naive one", field="at"
            )
        elif at - now > self.max_skew:
            raise InvalidActivityError(
                f"at lies {at - now} in the future (more than the allowed clock skew)",
                field="at",
            )
        return Activity(
            action=check_action(action, self.actions),
            marker_id=check_id(marker_id, "marker_id", required=True),  # type: ignore[arg-type]
            unit_id=check_id(unit_id, "unit_id", required=True),  # type: ignore[arg-type]
            ip_address=self.ip_policy(check_ip(ip_address)),
            project_id=check_id(project_id, "project_id", required=False),
            task_id=check_id(task_id, "task_id", required=False),
            task_definition_id=check_id(task_definition_id, "task_definition_id", required=False),
            at=at.astimezone(UTC),
        )

    def record(self, a: Activity) -> Any:
        """Store one activity in its session; Redis errors fall back to SQL only (R9)."""
        store = self.redis
        if store is None or not store.breaker.allows():
            return self.sql.record(a).activity
        key = store.key(a.marker_id, a.unit_id, a.ip_address)
        try:
            session_id = store.lookup(key, a.at)
        except RedisError as exc:
            store.breaker.failed(exc)
            return self.sql.record(a).activity
        store.breaker.succeeded()
        if session_id is not None:
            activity = self.sql.append_if_open(session_id, a)
            if activity is not None:
                return activity
            # The cached session was closed meanwhile (by a sweep), or is not this key's
            # (the database was restored): SQL decides afresh, and replaces the cached id.
        recorded = self.sql.record(a)
        try:
            store.remember(key, recorded.session_id, recorded.last_activity, stale=session_id)
        except RedisError as exc:
            store.breaker.failed(exc)
        return recorded.activity
