"""The tracker: checks an activity against the rules of time and records it through the
session cache and the SQL store (R1-R9)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

from ..core import metrics
from ..core.errors import InvalidActivityError
from ..store.activity import Activity
from ..store.models import SERVER
from ..store.redis_cache import REDIS_ERRORS, RedisStore
from ..store.sql_store import SqlStore

logger = logging.getLogger("tutor_times")


class Tracker:
    def __init__(
        self,
        *,
        actions: Collection[str],
        sql: SqlStore,
        redis_store: RedisStore | None,
        clock: Callable[[], datetime],
        max_skew: timedelta,
        max_backdate: timedelta,
        ip_policy: Callable[[str], str] = str,
    ) -> None:
        self.actions = frozenset(actions)
        self.sql = sql
        self.redis = redis_store
        self.clock = clock
        self.max_skew = max_skew
        self.max_backdate = max_backdate
        #: the stored form of an address (TUTOR_TIMES_IP_STORAGE), applied before any key
        self.ip_policy = ip_policy

    def validate(
        self, action: object, *, source: str = SERVER, at: object = None, **fields: object
    ) -> Activity:
        """Every check before anything is written (R2's window, R8, bad input). ``fields``
        are the activity's ids and address, as :meth:`Activity.checked` names them."""
        now = self.clock()
        activity = Activity.checked(
            action,
            at=now if at is None else at,
            source=source,
            actions=self.actions,
            ip_policy=self.ip_policy,
            **fields,
        )
        self.check_live(activity.at, now)
        return activity

    def check_live(self, at: datetime, now: datetime) -> None:
        """R2: a live activity lies within [now - MAX_BACKDATE, now + MAX_CLOCK_SKEW].

        Anything older is history: it would reopen or reshape sessions that reports have
        already counted, so it goes through the importer, never through live tracking.
        """
        if at - now > self.max_skew:
            raise InvalidActivityError(
                f"at lies {at - now} in the future (more than the allowed clock skew,"
                f" {self.max_skew.total_seconds():g} s)",
                field="at",
            )
        if now - at > self.max_backdate:
            raise InvalidActivityError(
                f"at lies {now - at} in the past (more than TUTOR_TIMES_MAX_BACKDATE,"
                f" {self.max_backdate.total_seconds():g} s); import history instead",
                field="at",
            )

    def record(self, a: Activity) -> Any:
        """Store one activity in its session; Redis errors fall back to SQL only (R9)."""
        activity, path = self._record(a)
        metrics.recorded(path, a.action)
        return activity

    def _record(self, a: Activity) -> tuple[Any, str]:
        """The stored activity, and the path it took (for the metrics)."""
        store = self.redis
        if store is None:
            return self.sql.record(a).activity, metrics.SQL
        if not store.breaker.allows():
            return self.sql.record(a).activity, metrics.FALLBACK
        key = store.key(a.marker_id, a.unit_id, a.ip_address)
        try:
            session_id = store.lookup(key, a.at)
        except REDIS_ERRORS as exc:
            store.breaker.failed(exc)
            return self.sql.record(a).activity, metrics.FALLBACK
        store.breaker.succeeded()
        if session_id is not None:
            activity = self.sql.append_if_open(session_id, a)
            if activity is not None:
                return activity, metrics.CACHED
            # The cached session was closed meanwhile (by a sweep), is not this key's (the
            # database was restored), was merged into an earlier one, or starts after this
            # activity: SQL decides afresh, and replaces the cached id.
        recorded = self.sql.record(a)
        if not recorded.open:
            return recorded.activity, metrics.SQL  # a late activity joined a closed session
        try:
            store.remember(key, recorded.session_id, recorded.last_activity, stale=session_id)
        except REDIS_ERRORS as exc:
            store.breaker.failed(exc)
        return recorded.activity, metrics.SQL
