"""History: activities from before live tracking, placed into sessions by R1-R4.

An imported activity is checked as a live one is (:meth:`Activity.checked`), but not against
the live backdating window of R2: that window is what makes an activity history. Each key's
new activities are sorted by time and cut into *runs* — neighbours less than TIMEOUT apart —
and each run is placed among the key's stored sessions the way :meth:`SqlStore.place` places
one activity, widened from a point to an interval: every stored session less than TIMEOUT from
the run joins it, and they all become one session under the earliest id. Because a key's
stored sessions are R2's runs of its activities (gaps of TIMEOUT or more between them), one
placement keeps that true, so after any number of imports in any order, beside live tracking,
the stored sessions are R2 over all the key's activities sorted by time.

Every imported activity carries a source key (``import_key``, unique): rows already stored
are skipped as duplicates, so an import can be run again, or resumed after it was killed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby, islice
from typing import Any, NamedTuple

import sqlalchemy as sa

from . import drivers, metrics, rollups
from .accounting import continues, duration_minutes, runs
from .activity import STORED_FIELDS, Activity
from .errors import InvalidActivityError, UnknownActionError
from .models import IMPORT_KEY_LENGTH, Models, close_sessions, last_activity_of, sessions_of_key
from .sql_store import SqlStore, key_hash

#: why a row was not imported, as the report names it
MALFORMED = "malformed line"
UNKNOWN_UNIT = "unknown unit"
UNKNOWN_USER = "unknown user"
NOT_ALLOWED = "action not allowed"
DUPLICATE = "duplicate"
REASONS = (MALFORMED, UNKNOWN_UNIT, UNKNOWN_USER, NOT_ALLOWED, DUPLICATE)

#: rows checked, deduplicated and placed together: the more rows of a key a batch holds,
#: the fewer statements each row costs
BATCH_SIZE = 20_000
#: keys whose per-key locks one transaction holds at most: PostgreSQL's lock table is shared
#: and sized for about 64 locks per connection
KEYS_PER_TRANSACTION = 256


@dataclass(frozen=True)
class Rejected:
    """A source line that holds no valid activity, passed through so the report counts it."""

    reason: str
    detail: str = ""


@dataclass
class ImportReport:
    """What an import did: rows read, imported, and skipped by reason."""

    read: int = 0
    imported: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    #: what a dry run would have imported (nothing is written then)
    dry_run: bool = False

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        reasons = ", ".join(f"{self.skipped[r]} {r}" for r in REASONS if self.skipped[r])
        return f"read {self.read} rows, {verb} {self.imported}, skipped {self.skipped_total}" + (
            f" ({reasons})" if reasons else ""
        )


class Checks(NamedTuple):
    """The field checks of live tracking (R8, bad input), without its time window."""

    actions: Collection[str]
    ip_policy: Callable[[str], str]
    #: how far in the future a time may lie (TUTOR_TIMES_MAX_CLOCK_SKEW)
    max_skew: timedelta


class Pending(NamedTuple):
    import_key: str
    activity: Activity


class Importer:
    """Places batches of historical activities into their keys' sessions."""

    def __init__(
        self,
        store: SqlStore,
        checks: Checks,
        *,
        clock: Callable[[], datetime],
        closing_delay: timedelta,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.store = store
        self.models: Models = store.models
        self.checks = checks
        self.clock = clock
        #: a key's latest session stays open only while its last activity is this recent (R6)
        self.closing_delay = closing_delay
        self.batch_size = batch_size
        self._statements()

    def _statements(self) -> None:
        ms = self.models.MarkingSession
        row = sessions_of_key(self.models)
        # The sessions that may join a run ending at :until, latest first: they form a run of
        # consecutive sessions by start, so a page at a time is read until one does not join.
        self._candidates = (
            row.where(ms.start_time < sa.bindparam("until"), ms.start_time < sa.bindparam("below"))
            .order_by(ms.start_time.desc(), ms.id.desc())
            .limit(sa.bindparam("page"))
            .with_for_update(of=ms)
        )
        self._open_session = row.where(ms.end_time.is_(None)).with_for_update(of=ms)
        self._later = (
            sa.select(ms.id)
            .where(
                ms.marker_id == sa.bindparam("marker_id"),
                ms.unit_id == sa.bindparam("unit_id"),
                ms.ip_address == sa.bindparam("ip_address"),
                ms.start_time > sa.bindparam("last"),
            )
            .limit(1)
        )

    # -- rows to activities --------------------------------------------------------------

    def check(self, row: Mapping[str, Any], now: datetime) -> Activity:
        """One row as an activity, by the checks of live tracking; raises InvalidActivityError."""
        activity = Activity.checked(
            row.get("action"),
            marker_id=row.get("marker_id"),
            unit_id=row.get("unit_id"),
            ip_address=row.get("ip_address"),
            project_id=row.get("project_id"),
            task_id=row.get("task_id"),
            task_definition_id=row.get("task_definition_id"),
            at=row.get("created_at"),
            actions=self.checks.actions,
            ip_policy=self.checks.ip_policy,
        )
        if activity.at - now > self.checks.max_skew:
            raise InvalidActivityError(f"created_at lies in the future: {activity.at}", "at")
        return activity

    def _checked(
        self, rows: Iterable[Mapping[str, Any] | Rejected], source_key: str, report: ImportReport
    ) -> Iterator[Pending]:
        for n, row in enumerate(rows, start=1):
            report.read += 1
            if isinstance(row, Rejected):
                report.skipped[row.reason] += 1
                continue
            try:
                activity = self.check(row, self.clock())
            except UnknownActionError:
                report.skipped[NOT_ALLOWED] += 1
                continue
            except InvalidActivityError:
                report.skipped[MALFORMED] += 1
                continue
            yield Pending(import_key(source_key, row.get("import_key", n)), activity)

    # -- the import ------------------------------------------------------------------------

    def run(
        self,
        rows: Iterable[Mapping[str, Any] | Rejected],
        *,
        source_key: str,
        dry_run: bool = False,
        progress: Callable[[ImportReport], None] | None = None,
    ) -> ImportReport:
        """Import ``rows`` a batch at a time; each batch is checked, deduplicated and placed
        in transactions of its own, so an import stopped at any point loses no batch half."""
        report = ImportReport(dry_run=dry_run)
        pending = self._checked(rows, source_key, report)
        counted = (0, Counter[str]())  # what the metrics have been told so far
        while batch := list(islice(pending, self.batch_size)):
            with self.store.connect() as conn:
                batch = self._admissible(conn, batch, report)
                if not dry_run:
                    self._write(conn, batch)
            report.imported += len(batch)
            if not dry_run:
                metrics.import_progress(
                    report.read - counted[0], len(batch), report.skipped - counted[1]
                )
                counted = (report.read, Counter(report.skipped))
            if progress is not None:
                progress(report)
        if not dry_run:  # rows read and skipped after the last batch
            metrics.import_progress(report.read - counted[0], 0, report.skipped - counted[1])
        if progress is not None:
            progress(report)
        return report

    def _admissible(
        self, conn: sa.Connection, batch: list[Pending], report: ImportReport
    ) -> list[Pending]:
        """The batch without rows already imported, repeated, or naming a unit or user the
        database does not know (counted by reason)."""
        act = self.models.SessionActivity
        keys = [p.import_key for p in batch]
        stored = set(conn.scalars(sa.select(act.import_key).where(act.import_key.in_(keys))))
        units = self._known(conn, "unit_id", {p.activity.unit_id for p in batch})
        users = self._known(conn, "marker_id", {p.activity.marker_id for p in batch})
        kept: list[Pending] = []
        for p in batch:
            if p.import_key in stored:
                report.skipped[DUPLICATE] += 1
            elif units is not None and p.activity.unit_id not in units:
                report.skipped[UNKNOWN_UNIT] += 1
            elif users is not None and p.activity.marker_id not in users:
                report.skipped[UNKNOWN_USER] += 1
            else:
                stored.add(p.import_key)
                kept.append(p)
        return kept

    def _known(self, conn: sa.Connection, column: str, ids: set[int]) -> set[int] | None:
        """Which of ``ids`` the table a session's ``column`` references holds; None when the
        column references no table (the host declared no foreign key)."""
        for fk in self.models.MarkingSession.__table__.c[column].foreign_keys:
            target = fk.column
            return set(conn.scalars(sa.select(target).where(target.in_(sorted(ids)))))
        return None

    def _write(self, conn: sa.Connection, batch: list[Pending]) -> None:
        """Place the batch key by key, in key order (so two imports never wait for each other
        in a cycle), a bounded number of keys per transaction."""
        batch.sort(key=lambda p: (p.activity.key, p.activity.at))
        by_key = [list(group) for _, group in groupby(batch, key=lambda p: p.activity.key)]
        for start in range(0, len(by_key), KEYS_PER_TRANSACTION):
            now = self.clock()
            alone: list[tuple[dict[str, Any], list[Pending]]] = []
            keys = by_key[start : start + KEYS_PER_TRANSACTION]
            for group in keys:
                drivers.lock_key(conn, key_hash(group[0].activity.key))
                alone += self._place_key(conn, group, now)
            self._create_closed(conn, alone, now)
            rollups.keys_changed(conn, self.models, [g[0].activity.key for g in keys], now)
            conn.commit()

    def _place_key(
        self, conn: sa.Connection, group: list[Pending], now: datetime
    ) -> list[tuple[dict[str, Any], list[Pending]]]:
        """Place one key's runs. A run that no stored session joins, and that is not the key's
        last, is a closed session of its own: those are returned, to be written in bulk for
        every key at once. The others are placed one by one, in time order; the bulk ones
        cannot join them, being TIMEOUT or more from every other run and every stored
        session, and cannot be the key's latest (its last run comes after them)."""
        timeout = self.store.timeout
        every = key_runs(group, timeout)
        key = _key_params(group[0].activity)
        near = self._stored_between(conn, key, every[0][0].activity.at, every[-1][-1].activity.at)
        starts = [s.start_time for s in near]
        alone: list[list[Pending]] = []
        placed: list[list[Pending]] = []
        for run in every[:-1]:
            # the stored session starting last before the run's end + TIMEOUT is the only one
            # that can reach back to the run (a key's sessions do not overlap)
            i = bisect_left(starts, run[-1].activity.at + timeout) - 1
            joins = i >= 0 and continues(run[0].activity.at, near[i].last, timeout)
            (placed if joins else alone).append(run)
        for run in [*placed, every[-1]]:
            self._place_run(conn, run, now)
        return [(key, run) for run in alone]

    def _stored_between(
        self, conn: sa.Connection, key: dict[str, Any], first: datetime, last: datetime
    ) -> list[Any]:
        """The key's sessions within TIMEOUT of [first, last], by start."""
        ms = self.models.MarkingSession
        timeout = self.store.timeout
        rows = conn.execute(
            sa.select(ms.id, ms.start_time, last_activity_of(self.models).label("last"))
            .where(
                *(getattr(ms, name) == value for name, value in key.items()),
                ms.start_time < last + timeout,
                sa.or_(ms.end_time > first - timeout, ms.end_time.is_(None)),
            )
            .order_by(ms.start_time)
        ).all()
        return list(rows)

    def _create_closed(
        self, conn: sa.Connection, alone: list[tuple[dict[str, Any], list[Pending]]], now: datetime
    ) -> None:
        """Runs that are sessions of their own, closed (R3, R4): one INSERT for the sessions,
        one bulk write for their activities."""
        if not alone:
            return
        ms = self.models.MarkingSession.__table__
        columns = [
            *alone[0][0],
            *("start_time", "end_time", "duration_minutes", "created_at", "updated_at"),
        ]
        sessions = []
        for key, run in alone:
            span = self._span(run[0].activity.at, run[-1].activity.at, is_open=False)
            sessions.append((*key.values(), *span.values(), run[0].activity.at, now))
        ids = drivers.insert_returning_ids(conn, ms, columns, sessions)
        self._insert_activities(
            conn, [(int(sid), p) for sid, (_, run) in zip(ids, alone, strict=True) for p in run]
        )

    # -- placing one run ---------------------------------------------------------------------

    def _place_run(self, conn: sa.Connection, run: Sequence[Pending], now: datetime) -> None:
        """R2 for a run of one key's activities (each less than TIMEOUT from the next): it
        joins every stored session less than TIMEOUT away, and they become one session."""
        first, last = run[0].activity, run[-1].activity
        key = _key_params(first)
        joined = self._joining(conn, key, first.at, last.at)
        start = min([first.at, *(s.start_time for s in joined)])
        end = max([last.at, *(s.last for s in joined)])
        latest = conn.execute(self._later, {**key, "last": end}).first() is None
        is_open = latest and now - end < self.closing_delay
        ids = [s.id for s in joined]
        if latest:
            self._close_other_open(conn, key, ids, now)
        if joined:
            target = self._merge(conn, joined)
            self._set_span(conn, target, start, end, is_open=is_open, now=now)
        else:
            target = self._create(conn, key, start, end, is_open=is_open, now=now)
        self._insert_activities(conn, [(target, p) for p in run])

    def _joining(
        self, conn: sa.Connection, key: dict[str, Any], first: datetime, last: datetime
    ) -> list[Any]:
        """The key's sessions less than TIMEOUT from the run [first, last], earliest first."""
        timeout = self.store.timeout
        found: list[Any] = []
        below: datetime | None = None
        page = 8
        while True:
            params = {
                **key,
                "until": last + timeout,
                "below": below or last + timeout,
                "page": page,
            }
            rows = conn.execute(self._candidates, params).all()
            for row in rows:
                # a session before the run joins it when its last activity is close enough;
                # one that starts within the run or less than TIMEOUT after it always does
                if not continues(first, row.last, timeout):
                    return found[::-1]
                found.append(row)
            if len(rows) < page:
                return found[::-1]
            below = rows[-1].start_time
            page *= 4

    def _close_other_open(
        self, conn: sa.Connection, key: dict[str, Any], keep: list[int], now: datetime
    ) -> None:
        """The run's session becomes the key's latest: an earlier open one ends (R5)."""
        row = conn.execute(self._open_session, key).first()
        if row is not None and row.id not in keep:
            close_sessions(
                conn, self.models, [(row.id, row.start_time, row.last)], self.store.min_minutes, now
            )

    def _merge(self, conn: sa.Connection, joined: list[Any]) -> int:
        """Every joined session becomes the earliest one; the id of that one."""
        ms, act = self.models.MarkingSession, self.models.SessionActivity
        target, others = joined[0].id, [s.id for s in joined[1:]]
        if others:
            conn.execute(
                sa.update(act.__table__)
                .where(act.marking_session_id.in_(others))
                .values(marking_session_id=target)
            )
            # before the target's span changes: one of these may be the key's open one (R5)
            conn.execute(sa.delete(ms.__table__).where(ms.id.in_(others)))
        return int(target)

    def _span(self, start: datetime, end: datetime, *, is_open: bool) -> dict[str, Any]:
        """A session's start, and for a closed one its end and duration (R3, R4)."""
        if is_open:
            return {"start_time": start, "end_time": None, "duration_minutes": None}
        minutes = duration_minutes(start, end, self.store.min_minutes)
        return {"start_time": start, "end_time": end, "duration_minutes": minutes}

    def _set_span(
        self,
        conn: sa.Connection,
        session_id: int,
        start: datetime,
        end: datetime,
        *,
        is_open: bool,
        now: datetime,
    ) -> None:
        ms = self.models.MarkingSession.__table__
        values = self._span(start, end, is_open=is_open)
        conn.execute(sa.update(ms).where(ms.c.id == session_id).values(**values, updated_at=now))

    def _create(
        self,
        conn: sa.Connection,
        key: dict[str, Any],
        start: datetime,
        end: datetime,
        *,
        is_open: bool,
        now: datetime,
    ) -> int:
        ms = self.models.MarkingSession.__table__
        values = {**key, **self._span(start, end, is_open=is_open)}
        stmt = sa.insert(ms).values(**values, created_at=start, updated_at=now).returning(ms.c.id)
        return int(conn.execute(stmt).scalar_one())

    def _insert_activities(self, conn: sa.Connection, placed: list[tuple[int, Pending]]) -> None:
        table = self.models.SessionActivity.__table__
        columns = ["marking_session_id", *STORED_FIELDS, "created_at", "updated_at", "import_key"]
        rows = [
            (
                session_id,
                *(getattr(p.activity, name) for name in STORED_FIELDS),
                p.activity.at,
                p.activity.at,
                p.import_key,
            )
            for session_id, p in placed
        ]
        drivers.insert_rows(conn, table, columns, rows)


def key_runs(group: list[Pending], timeout: timedelta) -> list[list[Pending]]:
    """One key's activities, sorted by time, cut where R2 starts a new session."""
    return list(runs(group, lambda p: p.activity.at, timeout))


def import_key(source_key: str, line: object) -> str:
    """A row's source key: its source's identity and its place (or key) in the source."""
    key = f"{source_key}:{line}"
    if len(key) > IMPORT_KEY_LENGTH:
        raise ValueError(f"an import key is at most {IMPORT_KEY_LENGTH} characters: {key[:60]}…")
    return key


def _key_params(a: Activity) -> dict[str, Any]:
    return {"marker_id": a.marker_id, "unit_id": a.unit_id, "ip_address": a.ip_address}
