"""History: activities from before live tracking, placed into sessions by R1-R4.

An imported activity is checked as a live one is (the checks of :meth:`Activity.checked`),
but not against the live backdating window of R2: that window is what makes an activity
history. A batch is placed set-wise, a transaction for a bounded number of keys at a time:

1. the keys' locks are taken, in one statement, in one order (every importer's);
2. each key's new activities, sorted by time, are cut into *runs* — neighbours less than
   TIMEOUT apart;
3. the keys' stored sessions near their runs are locked in one statement, then read with
   their last activities in another;
4. runs and stored sessions, each an interval [start, last activity], are sorted by start
   and cut again where the next one starts TIMEOUT or more after the latest end so far
   (gaps and islands): each *island* holding a run becomes one session, under the id of its
   earliest stored session, or a new one;
5. the writes — sessions closed, merged, respanned, created, and the activities — are a few
   statements for every key of the transaction at once (see :class:`Plan`).

Because a key's stored sessions are R2's runs of its activities (gaps of TIMEOUT or more
between them), one placement keeps that true, so after any number of imports in any order,
beside live tracking, the stored sessions are R2 over all the key's activities sorted by time.

Every imported activity carries a source key (``import_key``, unique): rows already stored
are skipped as duplicates, so an import can be run again, or resumed after it was killed. A
row without a key of its own is keyed by what it says (:func:`content_key`): a digest of its
checked fields and its place among the rows identical to it, never its line number, so an
edited, re-sorted or regenerated file adds exactly its new rows.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta
from itertools import islice
from queue import Full, Queue
from typing import Any, TypeVar

import sqlalchemy as sa

from ..core import metrics
from ..core.errors import InvalidActivityError, UnknownActionError
from ..store import bulk
from ..store.drivers import is_in_memory
from ..store.models import Models
from ..store.sql_store import SqlStore
from .placer import Placer
from .rows import (
    CLOCK_EVERY,
    DIGEST_LENGTH,
    DUPLICATE,
    MALFORMED,
    NOT_ALLOWED,
    UNKNOWN_UNIT,
    UNKNOWN_USER,
    Checks,
    ImportReport,
    Pending,
    Rejected,
    Row,
    RowChecker,
    as_tuple,
    content_key,
)

#: rows checked, deduplicated and placed together: the more rows of a key a batch holds,
#: the fewer statements each row costs; three batches are held at once (one read, one
#: waiting, one placed), so memory grows with it
BATCH_SIZE = 30_000
#: rows of an import's first batch at most: nothing is placed before the first batch is read
#: and checked, so a small one sets the placers to work sooner (later batches are read while
#: the one before is placed)
FIRST_BATCH = 2_000
#: connections that place one batch at once on PostgreSQL, each a disjoint set of units
#: (so of keys and of locks, :func:`parts`): one places while another waits on the database
PLACERS = 4
#: a batch smaller than this is placed on one connection (a thread would cost more)
SPLIT_AT = 2_000


T = TypeVar("T")


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
        context: Callable[[], AbstractContextManager[Any]] = nullcontext,
        placers: int | None = None,
    ) -> None:
        self.store = store
        #: connections placing a batch at once (PostgreSQL only: SQLite has one writer)
        self.placers = max(1, PLACERS if placers is None else placers)
        #: what reading rows runs inside, in the reading thread (the host's resolvers of a
        #: log may need its app context)
        self.context = context
        self.models: Models = store.models
        self.checks = checks
        self.clock = clock
        #: a key's latest session stays open only while its last activity is this recent (R6)
        self.closing_delay = closing_delay
        self.batch_size = batch_size
        self.placer = Placer(self.models, store.timeout, store.min_minutes, closing_delay)
        #: whether the next batch's keys are looked up before it is placed (:meth:`_admitted`)
        self.look_up_keys = True

    # -- rows to activities --------------------------------------------------------------

    def _checked(
        self, rows: Iterable[Row], source_key: str, report: ImportReport
    ) -> Iterator[Pending]:
        checker = RowChecker(self.checks)
        latest = self.clock() + self.checks.max_skew
        skipped = report.skipped
        for n, row in enumerate(rows, start=1):
            report.read = n
            if n % CLOCK_EVERY == 0:
                latest = self.clock() + self.checks.max_skew
            if isinstance(row, Rejected):
                skipped[row.reason] += 1
                continue
            values = as_tuple(row)
            try:
                yield checker.pending(values, source_key, latest)
            except UnknownActionError:
                skipped[NOT_ALLOWED] += 1
            except InvalidActivityError:
                skipped[MALFORMED] += 1

    # -- the import ------------------------------------------------------------------------

    def run(
        self,
        rows: Iterable[Row],
        *,
        source_key: str,
        dry_run: bool = False,
        progress: Callable[[ImportReport], None] | None = None,
    ) -> ImportReport:
        """Import ``rows`` a batch at a time; each batch is checked, deduplicated and placed
        in transactions of its own, so an import stopped at any point loses no batch half."""
        # a source key too long for any row is the caller's error
        content_key(source_key, "0" * DIGEST_LENGTH, 10**12)
        report = ImportReport(dry_run=dry_run)
        # rows another import stored since they were checked (the same file imported twice
        # at once), or an earlier batch of this one: duplicates too
        stored_meanwhile = Counter[str]()
        told = (0, Counter[str]())  # what the metrics have been told so far
        self.look_up_keys = True
        batches = self._batches(rows, source_key)
        if is_in_memory(self.store.maintenance().url):
            # one connection every checkout shares: a check in the reading thread would end
            # the transaction a batch is written in, so batches are checked where placed
            checked = self._admitted(in_background(batches, self.context), dry_run)
        else:
            checked = in_background(self._admitted(batches, dry_run), self.context)
        with (
            fewer_collections(),
            quicker_switches(),
            ThreadPoolExecutor(self.placers - 1 or 1, "tutor-times-import-placer") as pool,
        ):
            for batch, read, skipped in checked:
                report.read = read
                placed = len(batch)
                if batch and not dry_run:
                    with self.store.connect() as conn:
                        meanwhile = self._place(pool, conn, batch)
                    stored_meanwhile[DUPLICATE] += meanwhile
                    placed -= meanwhile
                    if meanwhile:
                        self.look_up_keys = True
                report.imported += placed
                self._report(report, skipped + stored_meanwhile, dry_run, told, placed, progress)
                told = (read, Counter(report.skipped))
        if not dry_run and report.imported >= ANALYZE_AFTER:
            with self.store.connect() as conn:
                analyze_filled(conn, self.models)
        return report

    def _report(
        self,
        report: ImportReport,
        skipped: Counter[str],
        dry_run: bool,
        told: tuple[int, Counter[str]],
        placed: int,
        progress: Callable[[ImportReport], None] | None,
    ) -> None:
        report.skipped = skipped
        if not dry_run:
            metrics.import_progress(report.read - told[0], placed, report.skipped - told[1])
        if progress is not None:
            progress(report)

    def _place(self, pool: ThreadPoolExecutor, conn: sa.Connection, batch: list[Pending]) -> int:
        """The batch placed on ``conn`` and, on PostgreSQL, on PLACERS - 1 more connections
        at once, each taking its own units' rows (:func:`parts`). Returns the rows found stored
        already when placed, as :meth:`Placer.place` does."""
        if self.placers == 1 or conn.dialect.name != "postgresql" or len(batch) < SPLIT_AT:
            return self.placer.place(conn, batch, self.clock)
        first, *rest = parts(batch, self.placers)
        others = [pool.submit(self._place_apart, part) for part in rest if part]
        stored_meanwhile = self.placer.place(conn, first, self.clock)
        return stored_meanwhile + sum(placed.result() for placed in others)

    def _place_apart(self, part: list[Pending]) -> int:
        with self.context(), self.store.connect() as conn:
            return self.placer.place(conn, part, self.clock)

    def _batches(
        self, rows: Iterable[Row], source_key: str
    ) -> Iterator[tuple[list[Pending], int, Counter[str]]]:
        """Batches of checked rows, each with the rows read and skipped up to its end; a last,
        empty one with the totals."""
        seen = ImportReport()
        pending = self._checked(rows, source_key, seen)
        size = min(self.batch_size, FIRST_BATCH)
        while batch := list(islice(pending, size)):
            yield batch, seen.read, Counter(seen.skipped)
            size = self.batch_size
        yield [], seen.read, Counter(seen.skipped)

    def _admitted(
        self, batches: Iterator[tuple[list[Pending], int, Counter[str]]], dry_run: bool
    ) -> Iterator[tuple[list[Pending], int, Counter[str]]]:
        """``batches`` without the rows :meth:`_admissible` leaves out, each with the rows
        skipped so far, those included. This runs in the reading thread, on a connection of
        its own, while the batch before is placed (in the placing thread on in-memory
        SQLite, whose one connection the threads would share): a row of this batch that the
        one before stores (a key the file repeats) meets its stored key when it is placed,
        and is counted as a duplicate then (:meth:`Placer.place`).

        Once a batch finds none of its keys stored, the next ones are placed without looking
        theirs up (the unique index looks each up as it is inserted): a row stored already
        then fails its transaction, which is placed again without it and counted, and the
        batches checked after that look their keys up again (:attr:`look_up_keys`; one or
        two read ahead may not, which costs a retry, not a count). A dry run, which
        places nothing, looks every key up."""
        admitted = Counter[str]()
        for batch, read, skipped in batches:
            if batch:
                look_up = self.look_up_keys or dry_run
                with self.store.connect() as conn:
                    batch = self._admissible(conn, batch, admitted, look_up=look_up)
            yield batch, read, skipped + admitted

    def _admissible(
        self,
        conn: sa.Connection,
        batch: list[Pending],
        skipped: Counter[str],
        *,
        look_up: bool = True,
    ) -> list[Pending]:
        """The batch without rows already imported (when ``look_up``), repeated, or naming a
        unit or user the database does not know (counted by reason)."""
        bulk.without_jit(conn)
        stored = self._stored_keys(conn, [p[8] for p in batch]) if look_up else set()
        if look_up:
            self.look_up_keys = bool(stored)
        units = self._known(conn, "unit_id", {p[1] for p in batch})
        users = self._known(conn, "marker_id", {p[0] for p in batch})
        kept: list[Pending] = []
        for p in batch:
            if p[8] in stored:
                skipped[DUPLICATE] += 1
            elif units is not None and p[1] not in units:
                skipped[UNKNOWN_UNIT] += 1
            elif users is not None and p[0] not in users:
                skipped[UNKNOWN_USER] += 1
            else:
                stored.add(p[8])
                kept.append(p)
        return kept

    def _stored_keys(self, conn: sa.Connection, keys: list[str]) -> set[str]:
        """Which of ``keys`` are stored already."""
        return bulk.stored_values(conn, self.models.SessionActivity.__table__.c.import_key, keys)

    def _known(self, conn: sa.Connection, column: str, ids: set[int]) -> set[int] | None:
        """Which of ``ids`` the table a session's ``column`` references holds; None when the
        column references no table (the host declared no foreign key)."""
        for fk in self.models.MarkingSession.__table__.c[column].foreign_keys:
            target = fk.column
            return set(conn.scalars(sa.select(target).where(target.in_(sorted(ids)))))
        return None


def parts(batch: list[Pending], n: int) -> list[list[Pending]]:
    """``batch`` cut into ``n`` parts (some maybe empty) for connections placing at once,
    none of whose locks another takes: whole units each, the largest first into the part
    with the fewest rows so far. The first writes of a unit's sessions in a transaction take
    the unit's lock of the roll-ups and tallies (:mod:`~tutor_times.store.tallies`) until it commits, so two
    connections writing one unit would place one after the other. A batch of one unit is
    cut by tutor (a tutor's keys share the lock of their figures): its connections then
    overlap while they read and plan."""
    units = Counter(p[1] for p in batch)
    out: list[list[Pending]] = [[] for _ in range(n)]
    if len(units) == 1:
        for p in batch:
            out[hash((p[0], p[1])) % n].append(p)
        return out
    sizes = [0] * n
    part_of: dict[int, int] = {}
    for unit, rows in sorted(units.items(), key=lambda item: (-item[1], item[0])):
        smallest = sizes.index(min(sizes))
        part_of[unit] = smallest
        sizes[smallest] += rows
    for p in batch:
        out[part_of[p[1]]].append(p)
    return out


class _WhileImporting:
    """A setting of the whole process, changed while any import runs: the first import to
    start changes it, the last to end puts back what the first found."""

    def __init__(self, change: Callable[[], Any], put_back: Callable[[Any], object]) -> None:
        self._change, self._put_back = change, put_back
        self._lock = threading.Lock()
        self._imports = 0
        self._found: Any = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            self._imports += 1
            if self._imports == 1:
                self._found = self._change()
        try:
            yield
        finally:
            with self._lock:
                self._imports -= 1
                if self._imports == 0:
                    self._put_back(self._found)


#: container objects allocated (net) between two of the garbage collector's youngest passes
#: while an import runs (Python's default is 700)
GC_YOUNGEST = 50_000


def _rarer_collections() -> tuple[int, int, int]:
    found = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNGEST, *found[1:])
    return found


def _collections_as_found(found: tuple[int, int, int]) -> None:
    gc.set_threshold(*found)
    gc.unfreeze()


_collections = _WhileImporting(_rarer_collections, _collections_as_found)


def fewer_collections() -> AbstractContextManager[None]:
    """The garbage collector's passes made rarer while imports run: the objects that exist
    when the first starts (the app's modules and the host's) are set aside from its full
    passes (``gc.freeze``), and its youngest pass waits for GC_YOUNGEST allocations. An
    import allocates tuples and lists by the million and frees them all; with Python's
    defaults the full passes, each over every object of the process, were a third of its
    CPU. The last import to end puts back what it found."""
    return _collections.held()


#: seconds a thread runs before another that waits for the interpreter is let in, while
#: imports run (Python's default is 0.005)
SWITCH_INTERVAL = 0.0005


def _quicker_switches() -> float:
    found = sys.getswitchinterval()
    sys.setswitchinterval(min(SWITCH_INTERVAL, found))
    return found


_switches = _WhileImporting(_quicker_switches, sys.setswitchinterval)


def quicker_switches() -> AbstractContextManager[None]:
    """Threads handed the interpreter ten times as often while imports run. The reading
    thread is busy in Python, and each placer's round trip to the database ends waiting for
    it to let go: up to Python's 5 ms a time, so placing waited on reading (measured in
    benchmarks/README.md, B6). The last import to end puts back what it found."""
    return _switches.held()


#: rows an import adds before it analyzes the tables it filled (PostgreSQL): its plans then
#: see the new rows without waiting for autovacuum, or on a server that runs none
ANALYZE_AFTER = 10_000


def analyze_filled(conn: sa.Connection, models: Models) -> None:
    """ANALYZE the tables an import fills on PostgreSQL (the sessions, their activities, and
    the tallies and roll-ups the sessions' triggers keep); elsewhere nothing."""
    if conn.dialect.name != "postgresql":
        return
    tables = [getattr(m, "__table__", m) for m in models if m is not None]
    kept = [t for t in tables if t.name not in NOT_FILLED]
    names = ", ".join(conn.dialect.identifier_preparer.format_table(t) for t in kept)
    conn.execute(sa.text(f"ANALYZE {names}"))
    conn.commit()


#: tables of the models an import never writes
NOT_FILLED = ("tutor_times_idempotency_keys", "tutor_times_jobs")


#: batches read ahead of the one being placed
READ_AHEAD = 1
_DONE = object()


def in_background(
    items: Iterator[T], context: Callable[[], AbstractContextManager[Any]] = nullcontext
) -> Iterator[T]:
    """``items``, produced by a thread of their own while the consumer works on the one
    before: reading and checking the next batch overlaps the database placing this one
    (the thread runs while this one waits on the database). At most READ_AHEAD items wait,
    so memory stays bounded; an error of the producer is raised to the consumer, and a
    consumer that stops early stops the producer."""
    queue: Queue[Any] = Queue(maxsize=READ_AHEAD)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            with context():
                for item in items:
                    if not offer(item):
                        return
            offer(_DONE)
        except BaseException as exc:  # noqa: BLE001  # raised again by the consumer
            offer(exc)

    thread = threading.Thread(target=produce, name="tutor-times-import-reader", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
