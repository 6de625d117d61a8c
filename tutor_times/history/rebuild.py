"""Rebuilding sessions from their activities, after TUTOR_TIMES_SESSION_TIMEOUT changed.

For each key (R1) in scope, the block of its stored sessions in the chosen time range —
widened to every neighbour less than the new TIMEOUT away, so no run is cut at the range's
edge — is cut again into R2's runs of its activities, and the sessions are rewritten to match:
the same ids where a run keeps a session's start, new ones where a session splits, fewer
where sessions merge. A key whose sessions already match is left untouched, so a rebuild can
be run again, or resumed after it was stopped, and changes nothing twice.

Each key is rebuilt in its own transaction under the per-key lock every placement takes,
with its sessions locked: live tracking on the same key waits for it, then finds the
sessions as R2 says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..core.accounting import continues, duration_minutes, runs
from ..store import bulk, figures
from ..store.models import Models
from ..store.sql import activities_of, last_activity_of, lock_keys, tutor_hash, update_rows
from ..store.sql_store import key_hash

Key = tuple[int, int, str]


@dataclass
class RebuildReport:
    keys: int = 0
    #: keys whose sessions changed
    changed: int = 0
    sessions_before: int = 0
    sessions_after: int = 0

    def summary(self) -> str:
        return (
            f"rebuilt {self.keys} keys ({self.changed} changed):"
            f" {self.sessions_before} sessions before, {self.sessions_after} after"
        )


@dataclass(frozen=True)
class Run:
    """One session to be: its first and last times, and its activities as (id, the id of
    the session they are stored in now)."""

    start: datetime
    last: datetime
    ids: list[tuple[int, int]]


class Rebuilder:
    def __init__(
        self,
        models: Models,
        connect: Callable[[], sa.Connection],
        *,
        timeout: timedelta,
        min_minutes: int,
        closing_delay: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self.models = models
        self.connect = connect
        self.timeout = timeout
        self.min_minutes = min_minutes
        self.closing_delay = closing_delay
        self.clock = clock

    def keys(self, unit_id: int | None, start: datetime | None, end: datetime | None) -> list[Key]:
        """The keys with a session starting in [start, end), in the unit."""
        ms = self.models.MarkingSession
        scope = self._scope(unit_id, start, end)
        with self.connect() as conn:
            rows = conn.execute(
                sa.select(ms.marker_id, ms.unit_id, ms.ip_address)
                .where(*scope)
                .distinct()
                .order_by(ms.marker_id, ms.unit_id, ms.ip_address)
            ).all()
        return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

    def _scope(
        self, unit_id: int | None, start: datetime | None, end: datetime | None
    ) -> list[Any]:
        ms = self.models.MarkingSession
        scope: list[Any] = []
        if unit_id is not None:
            scope.append(ms.unit_id == unit_id)
        if start is not None:
            scope.append(ms.start_time >= start)
        if end is not None:
            scope.append(ms.start_time < end)
        return scope

    def run(
        self,
        *,
        unit_id: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        progress: Callable[[RebuildReport], None] | None = None,
    ) -> RebuildReport:
        report = RebuildReport()
        for key in self.keys(unit_id, start, end):
            with self.connect() as conn:
                lock_keys(conn, [key_hash(key), tutor_hash(key[1], key[0])])
                before, after = self._rebuild_key(conn, key, start, end)
                conn.commit()
            report.keys += 1
            report.changed += after is not None
            report.sessions_before += before
            report.sessions_after += before if after is None else after
            if progress is not None:
                progress(report)
        return report

    # -- one key -------------------------------------------------------------------------

    def _rebuild_key(
        self, conn: sa.Connection, key: Key, start: datetime | None, end: datetime | None
    ) -> tuple[int, int | None]:
        """(sessions before, sessions after or None when nothing changed)."""
        block = self._block(conn, key, start, end)
        if not block:
            return 0, None
        ids = [s.id for s in block]
        activities = sorted(self._activities(conn, ids), key=lambda a: (a[1], a[0]))
        runs = self._runs(activities)
        latest = self._next(conn, key, block[-1].start_time) is None
        now = self.clock()
        is_open = latest and now - runs[-1].last < self.closing_delay if runs else False
        if self._unchanged(conn, block, runs, is_open):
            return len(block), None
        self._rewrite(conn, key, block, runs, is_open, now)
        return len(block), len(runs)

    def _activities(self, conn: sa.Connection, ids: list[int]) -> Sequence[Any]:
        """(id, created_at, session id) of the sessions' activities."""
        act = self.models.SessionActivity
        return activities_of(
            conn, self.models, ids, (act.id, act.created_at, act.marking_session_id)
        )

    def _block(
        self, conn: sa.Connection, key: Key, start: datetime | None, end: datetime | None
    ) -> list[Any]:
        """The key's sessions starting in [start, end), with every neighbour less than
        TIMEOUT away on either side (repeatedly), by start; all locked."""
        ms = self.models.MarkingSession
        rows = list(
            conn.execute(
                self._sessions(key).where(*self._scope(None, start, end)).order_by(ms.start_time)
            ).all()
        )
        if not rows:
            return rows
        while (prev := self._previous(conn, key, rows[0].start_time)) is not None and continues(
            rows[0].start_time, prev.last, self.timeout
        ):
            rows.insert(0, prev)
        while (nxt := self._next(conn, key, rows[-1].start_time)) is not None and continues(
            nxt.start_time, rows[-1].last, self.timeout
        ):
            rows.append(nxt)
        return rows

    def _sessions(self, key: Key) -> sa.Select[Any]:
        ms = self.models.MarkingSession
        last = last_activity_of(self.models).label("last")
        return (
            sa.select(ms.id, ms.start_time, ms.end_time, last)
            .where(ms.marker_id == key[0], ms.unit_id == key[1], ms.ip_address == key[2])
            .with_for_update(of=ms)
        )

    def _previous(self, conn: sa.Connection, key: Key, before: datetime) -> Any:
        ms = self.models.MarkingSession
        stmt = self._sessions(key).where(ms.start_time < before)
        return conn.execute(stmt.order_by(ms.start_time.desc()).limit(1)).first()

    def _next(self, conn: sa.Connection, key: Key, after: datetime) -> Any:
        ms = self.models.MarkingSession
        stmt = self._sessions(key).where(ms.start_time > after)
        return conn.execute(stmt.order_by(ms.start_time).limit(1)).first()

    def _runs(self, activities: Sequence[Any]) -> list[Run]:
        """R2 under the current timeout, over activities (id, time, session) by time."""
        return [
            Run(run[0][1], run[-1][1], [(a[0], a[2]) for a in run])
            for run in runs(activities, lambda a: a[1], self.timeout)
        ]

    def _unchanged(
        self, conn: sa.Connection, block: list[Any], runs: list[Run], is_open: bool
    ) -> bool:
        if len(block) != len(runs):
            return False
        for i, (s, r) in enumerate(zip(block, runs, strict=True)):
            open_now = i == len(runs) - 1 and is_open
            if (s.start_time, s.last, s.end_time is None) != (r.start, r.last, open_now):
                return False
        return True

    def _rewrite(
        self,
        conn: sa.Connection,
        key: Key,
        block: list[Any],
        runs: list[Run],
        is_open: bool,
        now: datetime,
    ) -> None:
        """The block's sessions become the runs: ids kept where a run starts where a session
        did, every session closed until the end (one open session per key, R5). Each step is
        one statement for the whole key (an UPDATE over arrays, or COPY, on PostgreSQL), and
        only activities whose session changes are moved."""
        ms, act = self.models.MarkingSession.__table__, self.models.SessionActivity.__table__
        old = {s.start_time: s.id for s in block}
        kept = [(old.pop(run.start), run) for run in runs if run.start in old]
        kept_runs = {id(run) for _, run in kept}
        fresh = [run for run in runs if id(run) not in kept_runs]
        names = list(self._closed(runs[0], now))
        update_rows(conn, ms, names, [(sid, *self._closed(run, now).values()) for sid, run in kept])
        columns = ["marker_id", "unit_id", "ip_address", "start_time", "end_time"]
        columns += ["duration_minutes", "updated_at", "created_at"]
        rows = [(*key, *self._closed(run, now).values(), run.start) for run in fresh]
        ids = bulk.insert_returning_ids(conn, ms, columns, rows)
        target = {id(run): sid for sid, run in kept}
        target.update({id(run): sid for sid, run in zip(ids, fresh, strict=True)})
        moves = [
            (aid, target[id(run)]) for run in runs for aid, sid in run.ids if sid != target[id(run)]
        ]
        update_rows(conn, act, ["marking_session_id"], moves)
        if old:
            conn.execute(sa.delete(ms).where(ms.c.id.in_(list(old.values()))))
        if is_open:
            last = target[id(runs[-1])]
            conn.execute(
                sa.update(ms)
                .where(ms.c.id == last)
                .values(
                    end_time=None,
                    duration_minutes=None,
                    updated_at=now,
                    **dict.fromkeys(figures.FIGURES),
                )
            )
        since = min([s.start_time for s in block] + [runs[0].start])
        until = max([s.last for s in block] + [run.last for run in runs])
        touch = figures.Touch(key[1], key[0], since, until)
        figures.refresh(conn, self.models, [touch], recount=[*target.values()])

    def _closed(self, run: Run, now: datetime) -> dict[str, Any]:
        return {
            "start_time": run.start,
            "end_time": run.last,
            "duration_minutes": duration_minutes(run.start, run.last, self.min_minutes),
            "updated_at": now,
        }
