"""The rules of time accounting (R2-R4) as pure functions, shared by every step."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import TypeVar

T = TypeVar("T")

UTC = timezone.utc


def lock_hash(text: str) -> int:
    """A signed 64-bit number for ``text``, for a transaction's advisory lock."""
    return int.from_bytes(
        hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def continues(t: datetime, last_activity: datetime, timeout: timedelta) -> bool:
    """R2: an activity at ``t`` joins the session whose last activity is ``last_activity``.

    An out-of-order ``t`` (before ``last_activity``) always joins.
    """
    return t - last_activity < timeout


def runs(
    items: Iterable[T], time: Callable[[T], datetime], timeout: timedelta
) -> Iterator[list[T]]:
    """R2 over items sorted by ``time``: the maximal runs in which each item continues the
    one before it. Imports and rebuilds cut a key's activities into sessions with it."""
    current: list[T] = []
    for item in items:
        if current and not continues(time(item), time(current[-1]), timeout):
            yield current
            current = []
        current.append(item)
    if current:
        yield current


def overlapping(
    items: Iterable[T], start: Callable[[T], datetime], end: Callable[[T], datetime]
) -> Iterator[list[T]]:
    """R10 over items sorted by ``start``: the blocks, each item joining the one before it
    when it starts at or before the latest end so far (overlapping or touching). Reports
    merge a tutor's sessions with it; the stored figures keep its blocks."""
    current: list[T] = []
    latest = datetime.min.replace(tzinfo=UTC)
    for item in items:
        if current and start(item) > latest:
            yield current
            current = []
        latest = end(item) if not current else max(latest, end(item))
        current.append(item)
    if current:
        yield current


def duration_minutes(start: datetime, end: datetime, min_minutes: int) -> int:
    """R4: whole minutes from start to end, never below ``min_minutes``."""
    return max(min_minutes, int((end - start) // timedelta(minutes=1)))


def to_micros(t: datetime) -> int:
    """Microseconds since the epoch: exact, and small enough for Lua's doubles."""
    return (t - EPOCH) // timedelta(microseconds=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def merged_minutes(intervals: Iterable[tuple[datetime, datetime]], min_minutes: int) -> int:
    """R10: one tutor's minutes in a unit, counting no wall-clock minute twice.

    Sessions that overlap in time (two IPs at once) are merged into one block first; each
    block counts as a session would (R4). Without overlaps this is the sum of the durations.
    """
    total = 0
    block: tuple[datetime, datetime] | None = None
    for start, end in sorted(intervals):
        if block is not None and start <= block[1]:
            block = (block[0], max(block[1], end))
            continue
        if block is not None:
            total += duration_minutes(*block, min_minutes)
        block = (start, end)
    if block is not None:
        total += duration_minutes(*block, min_minutes)
    return total
