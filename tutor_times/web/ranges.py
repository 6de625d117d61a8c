"""Calendar arithmetic of the reports: time zones, the instants a range stands for, and the
buckets of a timeline — in local days, so daylight-saving changes fall where they are."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

from ..core.accounting import UTC
from .api import FieldError

#: the zones a report may be asked in: the IANA names, without the tz database's
#: special files (``localtime`` is the server's own zone; ``posix/`` and ``right/`` are
#: copies, the latter counting leap seconds; ``Factory`` and ``posixrules`` are no place)
ZONES = frozenset(
    name
    for name in available_timezones()
    if name not in {"localtime", "posixrules", "Factory"}
    and not name.startswith(("posix/", "right/"))
)
#: days in the default range, today included
DEFAULT_DAYS = 7
#: the most buckets one timeline may hold
MAX_BUCKETS = 1000
#: The days a range may cover, on every endpoint that takes one: a year inside either end
#: of the calendar. Reports work around a range — a zone's offset (under a day), a week's
#: Monday and the calendar's seven days, the default six days before ``to``, a what-if's
#: timeout before the range and its read past the end — and near year 1 or 9999 that
#: arithmetic leaves the calendar (an OverflowError). No range within these bounds can.
FIRST_DAY = date(2, 1, 1)
LAST_DAY = date(9998, 12, 31)


def zone(name: str) -> ZoneInfo:
    if name not in ZONES:
        raise ValueError(f"unknown time zone {name[:64]!r}; use an IANA name like UTC")
    return ZoneInfo(name)


def _local(t: datetime, tz: ZoneInfo) -> datetime:
    return t.replace(tzinfo=tz) if t.tzinfo is None else t.astimezone(tz)


def within_bounds(when: date, field: str) -> None:
    """Refuse a ``from`` or ``to`` outside [FIRST_DAY, LAST_DAY], by the day it names as
    written (an instant's offset, under a day, is well inside the year of margin)."""
    day = when.date() if isinstance(when, datetime) else when
    if not FIRST_DAY <= day <= LAST_DAY:
        raise FieldError(field, f"must lie between {FIRST_DAY} and {LAST_DAY}")


def _instant(when: date, tz: ZoneInfo, field: str, *, end: bool) -> datetime:
    """The UTC instant a ``from`` (start) or ``to`` (first instant after it) stands for."""
    within_bounds(when, field)
    try:
        if isinstance(when, datetime):
            # an aware datetime is an instant already: never converted into ``tz``, where
            # an instant at either end of the calendar may not exist
            t = when if when.tzinfo is not None else when.replace(tzinfo=tz)
            if end:
                t += timedelta(microseconds=1)  # a `to` instant is inclusive
        else:
            t = datetime.combine(when + timedelta(days=1) if end else when, time(), tzinfo=tz)
        return t.astimezone(UTC)
    except (OverflowError, ValueError):
        raise FieldError(field, "is out of range") from None


def day_starts(start: datetime, end: datetime, tz: ZoneInfo, bucket: str) -> list[datetime]:
    """Each bucket's first instant in UTC, from the bucket holding ``start`` up to ``end``,
    stepping calendar days (or weeks from Monday) in ``tz`` so DST changes fall right."""
    step = 7 if bucket == "week" else 1
    try:
        first = start.astimezone(tz).date()
        if bucket == "week":
            first -= timedelta(days=first.weekday())
    except (OverflowError, ValueError):
        raise FieldError("from", f"is out of range (the {bucket} holding it)") from None
    starts: list[datetime] = []
    day = first
    while True:
        try:
            t = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
        except OverflowError:
            if starts:
                break
            t = start  # the first local midnight is before year 1 in UTC: start there
        if t >= end:
            break
        starts.append(t)
        if len(starts) > MAX_BUCKETS:
            raise FieldError(
                "to", f"the range holds more than {MAX_BUCKETS} {bucket}s; shorten it or use weeks"
            )
        try:
            day += timedelta(days=step)
        except OverflowError:
            break
    return starts


def bounds(
    from_: date | None, to: date | None, tz: ZoneInfo, today: date
) -> tuple[datetime, datetime]:
    """[start, end) in UTC of a ``from``/``to`` pair (dates are whole days, inclusive; naive
    datetimes are read in ``tz``); the last DEFAULT_DAYS days to ``today`` by default."""
    last = today if to is None else to
    if from_ is not None:  # checked first: a range wholly out of bounds is refused by its start
        start = _instant(from_, tz, "from", end=False)
    end = _instant(last, tz, "to", end=True)
    if from_ is None:
        try:
            last_day = _local(last, tz).date() if isinstance(last, datetime) else last
            first_day = last_day - timedelta(days=DEFAULT_DAYS - 1)
        except (OverflowError, ValueError):
            raise FieldError(
                "from", f"is out of range ({DEFAULT_DAYS - 1} days before `to`)"
            ) from None
        start = _instant(first_day, tz, "from", end=False)
    if start >= end:
        raise FieldError("to", "must not be before from")
    return start, end
