"""A row of history: its fields, its checks (those of a live activity, but the backdating
window), why a row is skipped, the report that counts them, and the key an imported row is
stored under — the source's own, or a digest of what the row says and its place among the rows
identical to it, never its line number."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..core.accounting import UTC
from ..core.constants import BIGINT_MAX
from ..core.errors import InvalidActivityError
from ..store import bulk
from ..store.activity import check_action, check_id, check_ip, check_time
from ..store.models import IMPORT_KEY_LENGTH, Models
from ..store.sql import (
    lock_keys,
    update_rows,
)

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


def import_key(source_key: str, line: object) -> str:
    """A row's source key: its source's identity and its place (or key) in the source."""
    key = f"{source_key}:{line}"
    if len(key) > IMPORT_KEY_LENGTH:
        raise ValueError(f"an import key is at most {IMPORT_KEY_LENGTH} characters: {key[:60]}…")
    return key


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
    taken = bulk.stored_values(conn, act.c.import_key, candidates)
    following = Counter[str]()
    keyed = []
    column = act.c.import_key

    def stored(key: str, digest: str) -> bool:
        if key in taken:
            return True
        beyond = following[digest] >= 2 * copies[digest]  # not among the candidates asked
        return beyond and bool(bulk.stored_values(conn, column, [key]))

    for activity_id, digest in digests:
        while stored(key := content_key(source_key, digest, following[digest]), digest):
            following[digest] += 1
        taken.add(key)
        keyed.append((activity_id, key))
    update_rows(conn, act, ["import_key"], keyed)
    conn.commit()
    return len(keyed)
