"""The facade's closing, removing and worker methods (a part of :class:`TutorTimes`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from flask import Flask, current_app

from ..closing import retention
from ..closing.closer import oldest_unclosed, sweep
from ..closing.worker import Worker
from ..core import metrics
from ..core.accounting import UTC
from ..history.importer import BATCH_SIZE, Importer
from ..history.rebuild import Rebuilder, RebuildReport
from ..history.rows import Checks, ImportReport, Row, adopt_line_keys
from ..store import idempotency, jobs
from ..tracking.decorator import check_routes

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from ..store.models import Models
    from .state import AppState

logger = logging.getLogger("tutor_times")

#: how often the worker applies TUTOR_TIMES_RETENTION_DAYS
RETENTION_EVERY = timedelta(days=1)


def _utc(t: datetime, name: str) -> datetime:
    """An aware datetime in UTC; a naive one is refused (it would be read as local time)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return t.astimezone(UTC)


class Maintenance:
    """Closing idle sessions, removing old data, and running the worker."""

    db: SQLAlchemy
    models: Models
    clock: Callable[[], datetime]
    _lock: threading.Lock

    @property
    def state(self) -> AppState:
        raise NotImplementedError

    def state_of(self, app: Flask) -> AppState:
        raise NotImplementedError

    def _on_first_request(self) -> None:
        """Once per app, when every route exists: each @track's view-argument names must be
        arguments of its route (or nothing could ever be recorded), and without a closer in
        this process, warn if sessions are left open long past idle."""
        state = self.state
        if state.routes_checked:
            return
        check_routes(current_app)
        state.routes_checked = True
        if not state.in_process_sweeper:
            self._warn_if_nothing_closes(state)

    def close_idle_session(
        self, marker_id: int, unit_id: int, ip_address: str, now: datetime | None = None
    ) -> int:
        """Close one key's open session if it is idle at ``now`` (1), else leave it (0)."""
        return self._sweep(now, key=(marker_id, unit_id, ip_address))

    def close_expired_sessions(self, now: datetime | None = None) -> int:
        """Close every session idle at ``now`` — no activity for the timeout plus
        TUTOR_TIMES_MAX_BACKDATE (R6) — at its last activity; returns how many were closed."""
        return self._sweep(now)

    def _sweep(self, now: datetime | None, key: tuple[int, int, str] | None = None) -> int:
        state = self.state
        return sweep(
            state.tracker.sql.connect,
            self.models,
            now=self.clock() if now is None else _utc(now, "now"),
            timeout=state.settings.closing_delay,
            min_minutes=state.min_minutes,
            batch_size=1 if key else state.settings.sweep_batch_size,
            key=key,
            closer=metrics.EXPIRY if key else metrics.SWEEP,
            idle_after=state.timeout,
        )

    def purge(
        self,
        before: datetime,
        *,
        anonymize: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete closed sessions that ended before ``before`` and their activities (or,
        with ``anonymize``, blank their IP addresses); returns how many sessions changed."""
        state = self.state
        return retention.purge(
            state.tracker.sql.connect,
            self.models,
            before=_utc(before, "before"),
            anonymize=anonymize,
            batch_size=state.settings.sweep_batch_size,
            progress=progress,
        )

    def purge_count(self, before: datetime, *, anonymize: bool = False) -> int:
        """How many sessions :meth:`purge` would change."""
        with self.state.tracker.sql.connect() as conn:
            return retention.purge_count(
                conn, self.models, before=_utc(before, "before"), anonymize=anonymize
            )

    def expire_idempotency_keys(self) -> int:
        """Forget the idempotency keys older than TUTOR_TIMES_IDEMPOTENCY_TTL; how many."""
        state = self.state
        before = self.clock() - state.settings.operations.idempotency_ttl
        with state.tracker.sql.connect() as conn:
            return idempotency.expire(conn, self.models.IdempotencyKeys, before=before)

    # -- history -----------------------------------------------------------------

    def importer(self, *, batch_size: int = BATCH_SIZE) -> Importer:
        """The current app's importer (see :mod:`tutor_times.history.importer`)."""
        state = self.state
        tracker = state.tracker
        return Importer(
            tracker.sql,
            Checks(tracker.actions, tracker.ip_policy, tracker.max_skew),
            clock=self.clock,
            closing_delay=state.settings.closing_delay,
            batch_size=batch_size,
            context=current_app._get_current_object().app_context,  # type: ignore[attr-defined]
        )

    def import_activities(
        self,
        rows: Iterable[Row],
        *,
        source_key: str,
        dry_run: bool = False,
        batch_size: int = BATCH_SIZE,
        progress: Callable[[ImportReport], None] | None = None,
    ) -> ImportReport:
        """Place historical activities into sessions by R1-R4, as live tracking would have,
        merged with the sessions already stored for their keys.

        Each row is a mapping with the fields of :meth:`record_activity` and ``created_at``
        (an aware datetime). Its source key is ``source_key`` and the row's ``import_key``
        or, without one, what the row says (a digest of its checked fields and its place
        among the rows identical to it): a row whose key is already stored is skipped, so
        importing the same rows again, re-sorted or with rows added, adds only the new
        ones. The live backdating window does not apply; every other check does (and a time
        before 1970 is refused), and a row that fails one is counted by reason in the
        report, never raised. After 10,000 rows or more, PostgreSQL's tables the import
        filled are analyzed.
        """
        return self.importer(batch_size=batch_size).run(
            rows, source_key=source_key, dry_run=dry_run, progress=progress
        )

    def adopt_line_keys(self, line_source: str, source_key: str) -> int:
        """Key the activities an earlier version imported from one file by line by what they
        say (see :func:`tutor_times.history.rows.adopt_line_keys`); how many were keyed anew."""
        with self.state.tracker.sql.connect() as conn:
            return adopt_line_keys(conn, self.models, line_source, source_key)

    def rebuild_sessions(
        self,
        *,
        unit_id: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        progress: Callable[[RebuildReport], None] | None = None,
    ) -> RebuildReport:
        """Re-derive the sessions starting in [start, end) (of one unit, or all) from their
        activities under the current TUTOR_TIMES_SESSION_TIMEOUT (R2-R4): exact, and a
        no-op for keys already right, so it can be run again or resumed. Safe beside live
        tracking: each key is rebuilt under the lock its placements take."""
        state = self.state
        return Rebuilder(
            self.models,
            state.tracker.sql.connect,
            timeout=state.timeout,
            min_minutes=state.min_minutes,
            closing_delay=state.settings.closing_delay,
            clock=self.clock,
        ).run(
            unit_id=unit_id,
            start=None if start is None else _utc(start, "start"),
            end=None if end is None else _utc(end, "end"),
            progress=progress,
        )

    # -- the worker --------------------------------------------------------------

    def after_sweep(self) -> None:
        """What the worker does after each sweep pass: its heartbeat (for ``/health``), and
        forgetting expired idempotency keys. Each step's failure is logged, never fatal to
        the others."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("write the worker heartbeat", self.heartbeat),
            ("forget expired idempotency keys", self.expire_idempotency_keys),
            ("apply the retention period", self.apply_retention),
        ]
        for what, step in steps:
            try:
                step()
            except Exception:
                logger.exception("could not %s", what)

    def apply_retention(self) -> int | None:
        """Remove (or anonymize) the closed sessions older than TUTOR_TIMES_RETENTION_DAYS,
        at most once a day across every worker: the first to take the day's lease does it,
        in batches; the others skip. Returns how many sessions changed, None when skipped."""
        state = self.state
        settings = state.settings.operations
        if settings.retention is None:
            return None
        now = self.clock()
        with state.tracker.sql.connect() as conn:
            if not jobs.take_lease(
                conn, self.models.Jobs, jobs.RETENTION, now=now, every=RETENTION_EVERY
            ):
                return None
        before = now - settings.retention
        anonymize = settings.retention_anonymize
        done = self.purge(before, anonymize=anonymize)
        metrics.retained(anonymize, done)
        logger.info(
            "retention: %s %d marking session%s that ended before %s",
            "anonymized" if anonymize else "deleted",
            done,
            "" if done == 1 else "s",
            before.isoformat(),
        )
        return done

    def heartbeat(self) -> None:
        with self.state.tracker.sql.connect() as conn:
            jobs.beat(conn, self.models.Jobs, now=self.clock())

    def run_worker(
        self,
        *,
        interval: float | None = None,
        listen: bool = True,
        stop: threading.Event | None = None,
    ) -> None:
        """Sweep every ``interval`` seconds and close sessions on Redis expiry events, until
        ``stop`` is set (see :class:`~tutor_times.closing.worker.Worker`)."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        Worker(app, self, interval=interval, listen=listen, stop=stop).work()

    def stop_sweeper(self) -> None:
        """Stop this app's in-process sweeper thread, if it runs."""
        sweeper = self.state.sweeper
        if sweeper is not None:
            sweeper.stop()
            sweeper.join(timeout=10)

    def _start_sweeper(self, state: AppState) -> None:
        """The embedded mode's sweeper: a daemon thread of this process, started on first use
        (after any fork). Several processes each run one; the sweep is safe to run at once."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        with self._lock:
            if state.sweeper is None:
                state.sweeper = Worker(app, self, listen=False).start_in_background()

    def _warn_if_nothing_closes(self, state: AppState) -> None:
        settings = state.settings
        grace = settings.closing_delay + timedelta(seconds=2 * settings.sweep_interval + 60)
        try:
            with state.tracker.sql.connect() as conn:
                since = oldest_unclosed(conn, self.models, cutoff=self.clock() - grace)
        except Exception:  # a check at start-up must never cost the request
            logger.debug("could not look for unclosed sessions", exc_info=True)
            return
        if since is not None:
            logger.warning(
                "a marking session idle since %s is still open: no worker or cron sweep seems"
                " to run, and this process closes none (TUTOR_TIMES_IN_PROCESS_SWEEPER is off)."
                " Run `flask tutor-times worker`, or `flask tutor-times sweep` from cron.",
                since.isoformat(),
            )
