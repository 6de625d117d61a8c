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
import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby, islice
from operator import itemgetter
from queue import Full, Queue
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa

from ..core import metrics
from ..core.accounting import UTC, duration_minutes, runs
from ..core.constants import ASSESSING, BIGINT_MAX
from ..core.errors import InvalidActivityError, UnknownActionError
from ..store import drivers, figures
from ..store.activity import STORED_FIELDS, check_action, check_id, check_ip, check_time
from ..store.models import IMPORT_KEY_INDEX, IMPORT_KEY_LENGTH, SERVER, Models
from ..store.sql import (
    IdleSession,
    close_sessions,
    last_activity_of,
    lock_keys,
    tutor_hash,
    update_rows,
)
from ..store.sql_store import SqlStore, key_hash

#: why a row was not imported, as the report names it
MALFORMED = "malformed line"
#: a line longer than a file reader holds (:data:`tutor_times.history.sources.MAX_LINE_BYTES`)
TOO_LONG = "line too long"
UNKNOWN_UNIT = "unknown unit"
UNKNOWN_USER = "unknown user"
NOT_ALLOWED = "action not allowed"
DUPLICATE = "duplicate"
#: a request of a marking route that was no tutor's marking: a student's own status change,
#: a user who is not the unit's staff, a marker's own project (R7)
NOT_MARKING = "not marking"
REASONS = (MALFORMED, TOO_LONG, UNKNOWN_UNIT, UNKNOWN_USER, NOT_ALLOWED, NOT_MARKING, DUPLICATE)

#: rows checked, deduplicated and placed together: the more rows of a key a batch holds,
#: the fewer statements each row costs
BATCH_SIZE = 20_000
#: times a transaction's keys are placed again after another import stored some of their rows
CONFLICT_RETRIES = 3
#: keys whose per-key locks one transaction holds at most: PostgreSQL's lock table is shared
#: and sized for about 64 locks per connection
KEYS_PER_TRANSACTION = 256
#: distinct IP addresses whose checked, stored form is remembered (they repeat in a file)
IP_CACHE = 65_536
#: rows checked between two readings of the clock (for the future-time check)
CLOCK_EVERY = 1024
#: the earliest time an imported activity may have: a session's window around a time near
#: the calendar's first day (year 1) leaves the calendar, and nobody marked before 1970
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
#: hex digits of a row's content digest in its key (128 bits)
DIGEST_LENGTH = 32
#: rows identical in every field are numbered among each other when they lie within this
#: many distinct rows of each other (in a file sorted by any of its fields they are
#: neighbours); further apart, the later is taken for the earlier again
IDENTICAL_WINDOW = 100_000
#: connections that place one batch at once on PostgreSQL, each a disjoint set of units
#: (so of keys and of locks, :func:`parts`): one places while another waits on the database
PLACERS = 4
#: a batch smaller than this is placed on one connection (a thread would cost more)
SPLIT_AT = 2_000

#: the fields of a row given as a tuple (the file readers' form: cheaper than a mapping)
ROW_FIELDS = (
    "marker_id",
    "unit_id",
    "ip_address",
    "action",
    "project_id",
    "task_id",
    "task_definition_id",
    "created_at",
    "import_key",
)

#: a checked row: (marker_id, unit_id, stored ip_address, at in UTC, action, project_id,
#: task_id, task_definition_id, import_key) — key and time first, the order it is sorted by
Pending = tuple[int, int, str, datetime, str, int | None, int | None, int | None, str]
Key = tuple[int, int, str]
#: a checked row's time
AT = itemgetter(3)
#: the ids a row may leave out, in ROW_FIELDS order
OPTIONAL_IDS = ("project_id", "task_id", "task_definition_id")
T = TypeVar("T")
by_key = itemgetter(0, 1, 2)
by_key_and_time = itemgetter(0, 1, 2, 3)


@dataclass(frozen=True)
class Rejected:
    """A source line that holds no valid activity, passed through so the report counts it."""

    reason: str
    detail: str = ""


Row = Mapping[str, Any] | tuple[Any, ...] | Rejected


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


class RowChecker:
    """The checks of :meth:`Activity.checked`, in its order, on one row at a time, without
    building an Activity: the usual valid value passes a type test inline, anything else goes
    to the same check functions (which raise the same errors). An address is checked, and put
    in its stored form, once per distinct text (the IP policies are pure functions)."""

    def __init__(self, checks: Checks) -> None:
        self.checks = checks
        self.actions = frozenset(checks.actions)
        self._ips: dict[str, str] = {}
        self.occurrences = Occurrences()

    def ip(self, value: object) -> str:
        stored = self._ips.get(value) if isinstance(value, str) else None
        if stored is None:
            stored = self.checks.ip_policy(check_ip(value))
            if len(self._ips) >= IP_CACHE:
                self._ips.clear()
            self._ips[value] = stored  # type: ignore[index]  # check_ip took only a str
        return stored

    def pending(self, r: Sequence[Any], source_key: str, latest: datetime) -> Pending:
        """The row as a Pending; raises UnknownActionError or InvalidActivityError. A row
        whose own key (``r[8]``) is None is keyed by its content (:func:`content_key`)."""
        marker, unit, ip, action, project, task, definition, at = r[:8]
        if action.__class__ is not str or action not in self.actions:
            check_action(action, self.actions)
        if marker.__class__ is not int or not 0 < marker <= BIGINT_MAX:
            check_id(marker, "marker_id", required=True)
        if unit.__class__ is not int or not 0 < unit <= BIGINT_MAX:
            check_id(unit, "unit_id", required=True)
        stored_ip = self.ip(ip)
        for value, name in zip((project, task, definition), OPTIONAL_IDS, strict=True):
            if value is not None and (value.__class__ is not int or not 0 < value <= BIGINT_MAX):
                check_id(value, name, required=False)
        if at.__class__ is not datetime or at.tzinfo is not UTC:
            at = check_time(at)
        if at > latest:
            raise InvalidActivityError(f"created_at lies in the future: {at}", "at")
        if at < EARLIEST:
            raise InvalidActivityError(f"created_at lies before {EARLIEST:%Y}: {at}", "at")
        row = (marker, unit, stored_ip, at, action, project, task, definition)
        if r[8] is None:
            return (*row, self.content_key(source_key, row))
        try:
            key = import_key(source_key, r[8])
        except ValueError as exc:  # the row's own key (an import_key column) is too long
            raise InvalidActivityError(str(exc), "import_key") from None
        return (*row, key)

    def content_key(self, source_key: str, row: tuple[Any, ...]) -> str:
        """The key of a checked row without one of its own: its content, and how many
        identical rows came before it (:class:`Occurrences`)."""
        digest = content_digest(row)
        return content_key(source_key, digest, self.occurrences.next(digest))


def as_tuple(row: Mapping[str, Any] | tuple[Any, ...]) -> tuple[Any, ...]:
    """A row in ROW_FIELDS order; a mapping without an import_key is keyed by its content."""
    if isinstance(row, tuple):
        return row
    return (*(row.get(name) for name in ROW_FIELDS[:-1]), row.get("import_key"))


def content_digest(row: tuple[Any, ...]) -> str:
    """The digest of a checked row's fields (marker, unit, stored address, time in UTC,
    action, project, task, definition): what the row says, not how a file wrote it (quoting,
    spaces, the time's zone). The address is its stored form, so a key reveals no more than
    the stored row does."""
    marker, unit, ip, at, action, project, task, definition = row[:8]
    # the fields as str() writes them, joined by \x1f, an id left out empty (one f-string
    # costs half of building the parts and joining them)
    text = (
        f"{marker}\x1f{unit}\x1f{ip}\x1f{at.astimezone(UTC).isoformat(timespec='microseconds')}"
        f"\x1f{action}\x1f{'' if project is None else project}"
        f"\x1f{'' if task is None else task}\x1f{'' if definition is None else definition}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_LENGTH]


def content_key(source_key: str, digest: str, occurrence: int) -> str:
    """``{source_key}#{digest}:{occurrence}``: the n-th (from 0) row with this content."""
    return import_key(f"{source_key}#{digest}", occurrence)


class Occurrences:
    """How many rows with the same digest came before, counted over the last
    IDENTICAL_WINDOW to 2 × IDENTICAL_WINDOW distinct digests (two generations of a dict:
    memory stays bounded whatever the file's length)."""

    def __init__(self, window: int = IDENTICAL_WINDOW) -> None:
        self.window = window
        self.current: dict[str, int] = {}
        self.previous: dict[str, int] = {}

    def next(self, digest: str) -> int:
        """The digest's number among its identical rows (0 for the first)."""
        seen = self.current.get(digest)
        if seen is None:
            seen = self.previous.pop(digest, 0)
            if len(self.current) >= self.window:
                self.previous, self.current = self.current, {}
        self.current[digest] = seen + 1
        return seen


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
        admitted = Counter[str]()  # rows skipped when a batch was checked against the database
        told = (0, Counter[str]())  # what the metrics have been told so far
        batches = self._batches(rows, source_key)
        with (
            fewer_collections(),
            ThreadPoolExecutor(self.placers - 1 or 1, "tutor-times-import-placer") as pool,
        ):
            for batch, read, skipped in in_background(batches, self.context):
                report.read = read
                placed = 0
                if batch:
                    with self.store.connect() as conn:
                        batch = self._admissible(conn, batch, admitted)
                        # rows another import stored since they were checked (the same file
                        # imported twice at once) are duplicates too
                        stored_meanwhile = 0
                        if not dry_run:
                            stored_meanwhile = self._place(pool, conn, batch)
                    admitted[DUPLICATE] += stored_meanwhile
                    placed = len(batch) - stored_meanwhile
                    report.imported += placed
                self._report(report, skipped + admitted, dry_run, told, placed, progress)
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
        at once, each taking its own units' rows (:func:`parts`). Returns the rows another
        import stored meanwhile, as :meth:`Placer.place` does."""
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
        while batch := list(islice(pending, self.batch_size)):
            yield batch, seen.read, Counter(seen.skipped)
        yield [], seen.read, Counter(seen.skipped)

    def _admissible(
        self, conn: sa.Connection, batch: list[Pending], skipped: Counter[str]
    ) -> list[Pending]:
        """The batch without rows already imported, repeated, or naming a unit or user the
        database does not know (counted by reason)."""
        drivers.without_jit(conn)
        stored = self._stored_keys(conn, [p[8] for p in batch])
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
        return drivers.stored_values(conn, self.models.SessionActivity.__table__.c.import_key, keys)

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
    the unit's lock of the roll-ups and tallies (:mod:`.tallies`) until it commits, so two
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


#: container objects allocated (net) between two of the garbage collector's youngest passes
#: while an import runs (Python's default is 700)
GC_YOUNGEST = 50_000
_gc_lock = threading.Lock()
_gc_imports = 0
_gc_before: tuple[int, int, int] = (0, 0, 0)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """The garbage collector's passes made rarer while imports run: the objects that exist
    when the first starts (the app's modules and the host's) are set aside from its full
    passes (``gc.freeze``), and its youngest pass waits for GC_YOUNGEST allocations. An
    import allocates tuples and lists by the million and frees them all; with Python's
    defaults the full passes, each over every object of the process, were a third of its
    CPU. The last import to end puts back what it found."""
    global _gc_imports, _gc_before
    with _gc_lock:
        _gc_imports += 1
        if _gc_imports == 1:
            _gc_before = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(GC_YOUNGEST, *_gc_before[1:])
    try:
        yield
    finally:
        with _gc_lock:
            _gc_imports -= 1
            if _gc_imports == 0:
                gc.set_threshold(*_gc_before)
                gc.unfreeze()


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


# -- placing a batch, set-wise -------------------------------------------------------------


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
    groups: list[tuple[Key, list[Pending]]], size: int = KEYS_PER_TRANSACTION
) -> Iterator[list[tuple[Key, list[Pending]]]]:
    """Keys' rows by transaction: at most ``size`` keys each, a tutor's keys together (so a
    transaction merges a tutor's new sessions into blocks once, not once for each of their
    addresses; a tutor with more keys than that spreads over transactions of their own).
    Tutors in the order of their locks' numbers, a tutor's keys in the order of theirs.
    Each transaction takes all its locks in one statement, in ascending order
    (:func:`~tutor_times.models.lock_keys`), so no order of keys lets two wait in a cycle."""
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
        of keys per transaction (:func:`chunks`). Returns how many rows another import
        stored after the batch was checked (left out: see :meth:`_place_chunk`)."""
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
        """One transaction's keys. Another import of the same rows (the same file twice at
        once) may have stored some of them since the batch was checked: the insert then
        meets the import key's unique index. The transaction is rolled back and the keys
        placed again, their rows checked once more under the keys' locks (an import that
        stores a row holds its key's lock until it commits): those stored are left out and
        counted. Returns how many."""
        left_out = 0
        for attempt in range(CONFLICT_RETRIES + 1):
            # the keys' locks and their tutors' (figures.refresh writes other keys' rows)
            hashes = [key_hash(k) for k, _ in chunk] + [tutor_hash(k[1], k[0]) for k, _ in chunk]
            drivers.without_jit(conn)
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
        stored = drivers.stored_values(conn, column, [p[8] for _, rows in chunk for p in rows])
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
            ids = drivers.next_ids(conn, ms, len(rows))
        else:
            ids = drivers.insert_returning_ids(conn, ms, columns, rows)
        made = [
            figures.Made(sid, island.key[1], island.key[0], island.start, row[4], counted(island))
            for island, sid, row in zip(plan.create, ids, rows, strict=True)
        ]
        ids_touched = sorted(set(touched))
        touches = figures.touched(conn, self.models, ids_touched)
        changed, found = figures.merged(conn, self.models, touches, recount=ids_touched, made=made)
        if drawn:
            drivers.insert_rows(
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
        drivers.insert_rows(conn, table, columns, rows)

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


def import_key(source_key: str, line: object) -> str:
    """A row's source key: its source's identity and its place (or key) in the source."""
    key = f"{source_key}:{line}"
    if len(key) > IMPORT_KEY_LENGTH:
        raise ValueError(f"an import key is at most {IMPORT_KEY_LENGTH} characters: {key[:60]}…")
    return key


# -- rows stored under line keys -----------------------------------------------------------


def adopt_line_keys(conn: sa.Connection, models: Models, line_source: str, source_key: str) -> int:
    """Key the activities an earlier version imported from a file by line
    (``{line_source}:{line}``, ``line_source`` the format and a digest of the file's first
    lines) by what they say, as :class:`RowChecker` keys the file's rows now: importing the
    file, or an edited or re-sorted copy of it, then finds them. Rows alike in every field
    are numbered in their lines' order, after any content key of theirs already stored (an
    overlapping file imported since). One transaction, under a lock of the file's own on
    PostgreSQL; returns how many activities were keyed anew."""
    act, ms = models.SessionActivity.__table__, models.MarkingSession.__table__
    lock_keys(
        conn,
        [int.from_bytes(hashlib.sha256(line_source.encode()).digest()[:8], "big", signed=True)],
    )
    prefix = f"{line_source}:"
    found = conn.execute(
        sa.select(
            act.c.id,
            act.c.import_key,
            ms.c.marker_id,
            ms.c.unit_id,
            ms.c.ip_address,
            act.c.created_at,
            act.c.action,
            act.c.project_id,
            act.c.task_id,
            act.c.task_definition_id,
        )
        .join(ms, ms.c.id == act.c.marking_session_id)
        .where(act.c.import_key.like(f"{prefix}%"))
    ).all()
    lines = [(int(r[1][len(prefix) :]), r) for r in found if r[1][len(prefix) :].isdigit()]
    lines.sort(key=itemgetter(0))
    digests = [(r[0], content_digest(tuple(r[2:]))) for _, r in lines]
    copies = Counter(d for _, d in digests)
    # the content keys of these digests stored already (up to as many again as there are)
    candidates = [content_key(source_key, d, k) for d, n in copies.items() for k in range(2 * n)]
    taken = drivers.stored_values(conn, act.c.import_key, candidates)
    following = Counter[str]()
    keyed = []
    column = act.c.import_key

    def stored(key: str, digest: str) -> bool:
        if key in taken:
            return True
        beyond = following[digest] >= 2 * copies[digest]  # not among the candidates asked
        return beyond and bool(drivers.stored_values(conn, column, [key]))

    for activity_id, digest in digests:
        while stored(key := content_key(source_key, digest, following[digest]), digest):
            following[digest] += 1
        taken.add(key)
        keyed.append((activity_id, key))
    update_rows(conn, act, ["import_key"], keyed)
    conn.commit()
    return len(keyed)
