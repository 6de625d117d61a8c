"""Placing a batch of checked rows, set-wise, a transaction for a bounded number of keys at a
time (the steps are listed in :mod:`tutor_times.history.importer`): each key's runs, the
islands they make with its stored sessions, and the few statements that write them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..core.accounting import duration_minutes, runs
from ..core.constants import ASSESSING
from ..store import bulk, drivers, figures
from ..store.activity import STORED_FIELDS
from ..store.models import IMPORT_KEY_INDEX, SERVER, Models
from ..store.sql import (
    IdleSession,
    close_sessions,
    last_activity_of,
    lock_keys,
    tutor_hash,
    update_rows,
)
from ..store.sql_store import key_hash
from .rows import AT, Key, Pending, by_key, by_key_and_time

#: times a transaction's keys are placed again after another import stored some of their rows
CONFLICT_RETRIES = 3
#: keys whose per-key locks one transaction holds at most: PostgreSQL's lock table is shared
#: and sized for about 64 locks per connection
KEYS_PER_TRANSACTION = 256


class Run(NamedTuple):
    """A key's new activities, each less than TIMEOUT after the one before."""

    start: datetime
    last: datetime
    rows: list[Pending]


class Stored(NamedTuple):
    """A stored session near a run: its span to its last activity, and whether it is open."""

    id: int
    start: datetime
    last: datetime
    is_open: bool


@dataclass(slots=True)
class Island:
    """Runs and stored sessions less than TIMEOUT apart in a chain: one session to be."""

    key: Key
    start: datetime
    last: datetime
    runs: list[Run] = field(default_factory=list)
    #: by start: the first is the one the island's session keeps
    sessions: list[Stored] = field(default_factory=list)
    is_open: bool = False


@dataclass
class Plan:
    """Every write of one transaction's placement, each list one statement.

    :meth:`Placer.write` applies a plan in this order: close, merge, respan, create, then
    the activities."""

    #: open sessions that are no longer their key's latest (R5), closed at their last activity
    close: list[IdleSession] = field(default_factory=list)
    #: a merged session's id → the id of the session it becomes
    merge: dict[int, int] = field(default_factory=dict)
    #: (id, start, last, is_open) of a stored session the island keeps
    respan: list[tuple[int, datetime, datetime, bool]] = field(default_factory=list)
    #: islands with no stored session: a session each
    create: list[Island] = field(default_factory=list)
    #: (session id or the island to create, rows)
    place: list[tuple[int | Island, list[Pending]]] = field(default_factory=list)


def chunks(
    groups: list[tuple[Key, list[Pending]]], size: int | None = None
) -> Iterator[list[tuple[Key, list[Pending]]]]:
    """Keys' rows by transaction: at most ``size`` keys each, a tutor's keys together (so a
    transaction merges a tutor's new sessions into blocks once, not once for each of their
    addresses; a tutor with more keys than that spreads over transactions of their own).
    Tutors in the order of their locks' numbers, a tutor's keys in the order of theirs.
    Each transaction takes all its locks in one statement, in ascending order
    (:func:`~tutor_times.store.sql.lock_keys`), so no order of keys lets two wait in a cycle.
    ``size`` is KEYS_PER_TRANSACTION unless given, read when called."""
    size = KEYS_PER_TRANSACTION if size is None else size
    groups = sorted(groups, key=lambda kg: (tutor_hash(kg[0][1], kg[0][0]), key_hash(kg[0])))
    chunk: list[tuple[Key, list[Pending]]] = []
    for _, tutor in groupby(groups, key=lambda kg: (kg[0][1], kg[0][0])):
        keys = list(tutor)
        if chunk and len(chunk) + len(keys) > size:
            yield chunk
            chunk = []
        while len(keys) > size:
            yield keys[:size]
            keys = keys[size:]
        chunk += keys
    if chunk:
        yield chunk


def key_runs(rows: Sequence[Pending], timeout: timedelta) -> list[Run]:
    """One key's rows, sorted by time, cut where R2 starts a new session."""
    return [Run(run[0][3], run[-1][3], run) for run in runs(rows, AT, timeout)]


def islands(key: Key, runs: list[Run], stored: list[Stored], timeout: timedelta) -> list[Island]:
    """Gaps and islands over a key's runs and stored sessions: sorted by start, a new island
    begins where the next starts TIMEOUT or more after the latest last activity so far. Only
    islands that hold a run are returned, in time order."""
    if not stored:  # runs are TIMEOUT or more apart: each is an island of its own
        return [Island(key, run.start, run.last, [run]) for run in runs]
    spans: list[tuple[datetime, int, Run | Stored]] = [
        *((s.start, 0, s) for s in stored),
        *((r.start, 1, r) for r in runs),
    ]
    spans.sort(key=itemgetter(0, 1))
    found: list[Island] = []
    current: Island | None = None
    for start, _, span in spans:
        if current is None or start - current.last >= timeout:
            if current is not None and current.runs:
                found.append(current)
            current = Island(key, start, span.last)
        current.last = max(current.last, span.last)
        if isinstance(span, Run):
            current.runs.append(span)
        else:
            current.sessions.append(span)
    if current is not None and current.runs:
        found.append(current)
    for island in found:
        if len(island.sessions) > 1:
            island.sessions.sort(key=lambda s: (s.start, s.id))
    return found


class Placer:
    """Places a batch of checked rows: a transaction per KEYS_PER_TRANSACTION keys."""

    def __init__(
        self, models: Models, timeout: timedelta, min_minutes: int, closing_delay: timedelta
    ) -> None:
        self.models = models
        self.timeout = timeout
        self.min_minutes = min_minutes
        self.closing_delay = closing_delay

    def place(
        self, conn: sa.Connection, batch: list[Pending], clock: Callable[[], datetime]
    ) -> int:
        """Keys in order of their tutors' locks' numbers, then their own, a bounded number
        of keys per transaction (:func:`chunks`). Returns how many of its rows were stored
        already (left out: see :meth:`_place_chunk`)."""
        batch.sort(key=by_key_and_time)
        groups = [(k, list(g)) for k, g in groupby(batch, key=by_key)]
        stored_meanwhile = 0
        for chunk in chunks(groups):
            stored_meanwhile += self._place_chunk(conn, chunk, clock)
        return stored_meanwhile

    def _place_chunk(
        self,
        conn: sa.Connection,
        chunk: list[tuple[Key, list[Pending]]],
        clock: Callable[[], datetime],
    ) -> int:
        """One transaction's keys. Some of their rows may be stored already: by another
        import of the same rows since the batch was checked (the same file twice at once), by
        this import's batch before (a key the file repeats), or before the import, when its
        keys were not looked up (after a batch of new ones): the insert then meets the import
        key's unique index. The transaction is rolled back and the keys
        placed again, their rows checked once more under the keys' locks (an import that
        stores a row holds its key's lock until it commits): those stored are left out and
        counted. Returns how many."""
        left_out = 0
        for attempt in range(CONFLICT_RETRIES + 1):
            # the keys' locks and their tutors' (figures.refresh writes other keys' rows)
            hashes = [key_hash(k) for k, _ in chunk] + [tutor_hash(k[1], k[0]) for k, _ in chunk]
            bulk.without_jit(conn)
            lock_keys(conn, hashes)
            if attempt:
                chunk, dropped = self._unstored(conn, chunk)
                left_out += dropped
                if not chunk:
                    conn.commit()
                    return left_out
            try:
                runs_ = {k: key_runs(rows, self.timeout) for k, rows in chunk}
                self.write(conn, self.plan(conn, runs_, clock()), clock())
                conn.commit()
                return left_out
            except Exception as exc:
                conn.rollback()
                if attempt == CONFLICT_RETRIES or not drivers.is_unique_violation(
                    exc, IMPORT_KEY_INDEX, "import_key"
                ):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _unstored(
        self, conn: sa.Connection, chunk: list[tuple[Key, list[Pending]]]
    ) -> tuple[list[tuple[Key, list[Pending]]], int]:
        """The chunk without the rows whose import keys are stored, and how many those were."""
        column = self.models.SessionActivity.__table__.c.import_key
        stored = bulk.stored_values(conn, column, [p[8] for _, rows in chunk for p in rows])
        kept = [(k, [p for p in rows if p[8] not in stored]) for k, rows in chunk]
        dropped = sum(len(rows) for _, rows in chunk) - sum(len(rows) for _, rows in kept)
        return [(k, rows) for k, rows in kept if rows], dropped

    # -- reading and planning ----------------------------------------------------------------

    def plan(self, conn: sa.Connection, runs: dict[Key, list[Run]], now: datetime) -> Plan:
        near = self._stored_near(conn, runs)
        latest_start = self._latest_starts(conn, list(runs))
        plan = Plan()
        for key, key_runs_ in runs.items():
            stored = near.get(key, [])
            found = islands(key, key_runs_, stored, self.timeout)
            last = found[-1]
            later = latest_start.get(key)
            if later is None or later <= last.last:  # nothing of the key starts after it
                last.is_open = now - last.last < self.closing_delay
                plan.close += self._open_left_out(stored, found)
            for island in found:
                self._plan_island(plan, island)
        return plan

    @staticmethod
    def _open_left_out(stored: list[Stored], found: list[Island]) -> list[IdleSession]:
        """The key's open session, when no island takes it in: the key's latest session is
        now another one, so it closes at its last activity (R5)."""
        inside = {s.id for island in found for s in island.sessions}
        return [(s.id, s.start, s.last) for s in stored if s.is_open and s.id not in inside]

    def _plan_island(self, plan: Plan, island: Island) -> None:
        runs = island.runs
        rows = runs[0].rows if len(runs) == 1 else [p for run in runs for p in run.rows]
        if not island.sessions:
            plan.create.append(island)
            plan.place.append((island, rows))
            return
        target = island.sessions[0].id
        plan.merge.update((s.id, target) for s in island.sessions[1:])
        plan.respan.append((target, island.start, island.last, island.is_open))
        plan.place.append((target, rows))

    def _stored_near(
        self, conn: sa.Connection, runs: dict[Key, list[Run]]
    ) -> dict[Key, list[Stored]]:
        """Each key's sessions less than TIMEOUT from the span of its runs, and its open one
        if it starts before the span's end: locked first, then read with their last
        activities (an append that held a session when the lock was asked is then seen)."""
        ms = self.models.MarkingSession
        if conn.dialect.name == "postgresql":
            ids = self._lock_near_pg(conn, runs)
        else:
            ids = self._lock_near(conn, runs)
        if not ids:
            return {}
        last = last_activity_of(self.models)
        found: dict[Key, list[Stored]] = {}
        for row in conn.execute(
            sa.select(
                ms.id, ms.marker_id, ms.unit_id, ms.ip_address, ms.start_time, ms.end_time, last
            ).where(ms.id.in_(ids))
        ):
            key = (int(row[1]), int(row[2]), str(row[3]))
            stored = Stored(int(row[0]), row[4], row[6], row[5] is None)
            found.setdefault(key, []).append(stored)
        return found

    def _lock_near(self, conn: sa.Connection, runs: dict[Key, list[Run]]) -> list[int]:
        """The ids of the sessions :meth:`_stored_near` reads, locked, in id order."""
        ms = self.models.MarkingSession
        timeout = self.timeout
        near = [
            sa.and_(
                ms.marker_id == key[0],
                ms.unit_id == key[1],
                ms.ip_address == key[2],
                ms.start_time < rs[-1].last + timeout,
                sa.or_(ms.end_time > rs[0].start - timeout, ms.end_time.is_(None)),
            )
            for key, rs in runs.items()
        ]
        stmt = sa.select(ms.id).where(sa.or_(*near)).order_by(ms.id).with_for_update()
        return list(conn.scalars(stmt))

    def _lock_near_pg(self, conn: sa.Connection, runs: dict[Key, list[Run]]) -> list[int]:
        """:meth:`_lock_near` on PostgreSQL: the keys' windows as arrays, one statement
        whatever their number (a condition per key costs more to compile than to run)."""
        timeout = self.timeout
        windows = {
            "m": [k[0] for k in runs],
            "u": [k[1] for k in runs],
            "ip": [k[2] for k in runs],
            "lo": [rs[0].start - timeout for rs in runs.values()],
            "hi": [rs[-1].last + timeout for rs in runs.values()],
        }
        return [int(i) for i in conn.execute(self._pg_sql(conn, "near"), windows).scalars()]

    def _pg_sql(self, conn: sa.Connection, name: str) -> sa.TextClause:
        """The statements of the PostgreSQL path that take arrays, on this app's tables."""
        prep = conn.dialect.identifier_preparer
        table = prep.format_table(self.models.MarkingSession.__table__)
        sql = {
            "near": f"""
                SELECT ms.id FROM {table} AS ms
                JOIN unnest(CAST(:m AS bigint[]), CAST(:u AS bigint[]), CAST(:ip AS text[]),
                            CAST(:lo AS timestamptz[]), CAST(:hi AS timestamptz[]))
                     AS w(m, u, ip, lo, hi)
                  ON ms.marker_id = w.m AND ms.unit_id = w.u AND ms.ip_address = w.ip
                 AND ms.start_time < w.hi AND (ms.end_time > w.lo OR ms.end_time IS NULL)
                ORDER BY ms.id FOR UPDATE OF ms""",
            "latest": f"""
                SELECT w.n - 1, (SELECT max(ms.start_time) FROM {table} AS ms
                                 WHERE ms.marker_id = w.m AND ms.unit_id = w.u
                                   AND ms.ip_address = w.ip)
                FROM unnest(CAST(:m AS bigint[]), CAST(:u AS bigint[]), CAST(:ip AS text[]))
                     WITH ORDINALITY AS w(m, u, ip, n)""",
        }[name]
        return sa.text(sql)

    def _latest_starts(self, conn: sa.Connection, keys: list[Key]) -> dict[Key, datetime]:
        """Each key's latest session start (one index probe a key)."""
        ms = self.models.MarkingSession
        if conn.dialect.name == "postgresql":
            params: dict[str, list[Any]] = {"m": [k[0] for k in keys], "u": [k[1] for k in keys]}
            params["ip"] = [k[2] for k in keys]
            rows = conn.execute(self._pg_sql(conn, "latest"), params).all()
            return {keys[n]: start for n, start in rows if start is not None}
        probes = [
            sa.select(sa.literal(n).label("n"), sa.func.max(ms.start_time).label("start")).where(
                ms.marker_id == key[0], ms.unit_id == key[1], ms.ip_address == key[2]
            )
            for n, key in enumerate(keys)
        ]
        rows = conn.execute(sa.union_all(*probes) if len(probes) > 1 else probes[0]).all()
        return {keys[row[0]]: row[1] for row in rows if row[1] is not None}

    # -- writing -------------------------------------------------------------------------

    def write(self, conn: sa.Connection, plan: Plan, now: datetime) -> None:
        """A plan's writes, in an order that keeps one open session per key at every step
        (R5's index): close, merge, respan (closed ones first), the activities of the stored
        sessions, then the sessions created, each with its figures, and their activities."""
        self._close(conn, plan, now)
        self._merge(conn, plan)
        self._respan(conn, plan, now)
        stored = [(t, ps) for t, ps in plan.place if isinstance(t, int)]
        self._insert_activities(conn, stored)
        # every stored session written keeps its figures; a merged one lay within its target
        touched = [sid for sid, *_ in plan.close] + [sid for sid, *_ in plan.respan]
        touched += [*plan.merge.values(), *(t for t, _ in stored)]
        created = self._create(conn, plan, now, touched)
        self._insert_activities(
            conn, [(created[id(t)], ps) for t, ps in plan.place if not isinstance(t, int)]
        )

    def _close(self, conn: sa.Connection, plan: Plan, now: datetime) -> None:
        """Open sessions that are no longer their key's latest close at their last activity."""
        close_sessions(conn, self.models, plan.close, self.min_minutes, now)

    def _merge(self, conn: sa.Connection, plan: Plan) -> None:
        """Merged sessions' activities move to the session kept; the merged ones go."""
        if not plan.merge:
            return
        ms, act = self.models.MarkingSession.__table__, self.models.SessionActivity.__table__
        moves = {sid: sa.literal(target) for sid, target in plan.merge.items()}
        conn.execute(
            sa.update(act)
            .where(act.c.marking_session_id.in_(list(moves)))
            .values(marking_session_id=sa.case(moves, value=act.c.marking_session_id))
        )
        conn.execute(sa.delete(ms).where(ms.c.id.in_(list(moves))))

    def _respan(self, conn: sa.Connection, plan: Plan, now: datetime) -> None:
        """Kept sessions take their island's span: the closed ones first, so an open one
        never meets another of its key."""
        ms = self.models.MarkingSession.__table__
        names = ["start_time", "end_time", "duration_minutes", "updated_at"]
        for opening in (False, True):
            rows = [
                (sid, *self._span(start, last, is_open).values(), now)
                for sid, start, last, is_open in plan.respan
                if is_open is opening
            ]
            update_rows(conn, ms, names, rows)

    def _create(
        self, conn: sa.Connection, plan: Plan, now: datetime, touched: list[int]
    ) -> dict[int, int]:
        """A session for each island with none stored, with its figures, merged into its
        tutor's blocks together with the stored sessions ``touched`` (whose figures change
        too): id(island) → its new id.

        The new sessions' figures come from the rows the islands hold, so nothing is read
        back: on PostgreSQL their ids are drawn first and each is inserted whole (the
        roll-up and tally triggers see it once), then the stored sessions' figures are
        updated. Elsewhere the sessions are inserted for their ids, then given figures."""
        ms = self.models.MarkingSession.__table__
        columns = ["marker_id", "unit_id", "ip_address", "start_time", "end_time"]
        columns += ["duration_minutes", "created_at", "updated_at"]
        minimum = self.min_minutes
        rows = [
            (*i.key, i.start, None, None, i.start, now)
            if i.is_open
            else (*i.key, i.start, i.last, duration_minutes(i.start, i.last, minimum), i.start, now)
            for i in plan.create
        ]  # (as _span gives them, without a dict a session)
        drawn = conn.dialect.name == "postgresql"
        if drawn:
            ids = bulk.next_ids(conn, ms, len(rows))
        else:
            ids = bulk.insert_returning_ids(conn, ms, columns, rows)
        made = [
            figures.Made(sid, island.key[1], island.key[0], island.start, row[4], counted(island))
            for island, sid, row in zip(plan.create, ids, rows, strict=True)
        ]
        ids_touched = sorted(set(touched))
        touches = figures.touched(conn, self.models, ids_touched)
        changed, found = figures.merged(conn, self.models, touches, recount=ids_touched, made=made)
        if drawn:
            bulk.insert_rows(
                conn,
                ms,
                ["id", *columns, *figures.FIGURES],
                [(sid, *row, *found[sid]) for sid, row in zip(ids, rows, strict=True)],
            )
        else:
            changed += [(m.id, *found[m.id]) for m in made if m.end_time is not None]
        figures.write_changed(conn, self.models, changed)
        return {id(island): sid for island, sid in zip(plan.create, ids, strict=True)}

    def _insert_activities(
        self, conn: sa.Connection, place: list[tuple[int, list[Pending]]]
    ) -> None:
        """Each session's rows, as its activities: (session id, rows) each."""
        table = self.models.SessionActivity.__table__
        columns = ["marking_session_id", *STORED_FIELDS, "created_at", "updated_at", "import_key"]
        rows = [
            (sid, p[4], p[5], p[6], p[7], SERVER, p[3], p[3], p[8]) for sid, ps in place for p in ps
        ]
        bulk.insert_rows(conn, table, columns, rows)

    def _span(self, start: datetime, end: datetime, is_open: bool) -> dict[str, Any]:
        """A session's start, and for a closed one its end and duration (R3, R4)."""
        if is_open:
            return {"start_time": start, "end_time": None, "duration_minutes": None}
        minutes = duration_minutes(start, end, self.min_minutes)
        return {"start_time": start, "end_time": end, "duration_minutes": minutes}


def counted(island: Island) -> tuple[int, list[int | None], list[int | None]]:
    """A new session's assessments and the definition and task of each, in the order its
    activities are stored (:data:`.figures.COUNTED`)."""
    assessed = [p for run in island.runs for p in run.rows if p[4] == ASSESSING]
    return len(assessed), [p[7] for p in assessed], [p[6] for p in assessed]
