"""The endpoints' inputs and outputs, described once.

Each request model validates a query string or a JSON body; each response model documents
what an endpoint returns. ``GET /openapi.json`` is generated from these same classes.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from .accounting import UTC

BIGINT_MAX = 2**63 - 1

Id = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
#: a date (the whole day) or a datetime (naive: read in ``tz``)
When = Annotated[
    date | datetime,
    Field(
        json_schema_extra={
            "anyOf": [
                {"type": "string", "format": "date"},
                {"type": "string", "format": "date-time"},
            ]
        }
    ),
]
#: days in the default range, today included
DEFAULT_DAYS = 7
#: the most buckets one timeline may hold
MAX_BUCKETS = 1000


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class UnitPath(_Query):
    unit_id: Id = Field(description="The unit's id.")


class SessionPath(_Query):
    session_id: Id = Field(description="The session's id.")


class RangeQuery(_Query):
    """``from``/``to`` (inclusive) in ``tz``; the last 7 days by default."""

    from_: When | None = Field(
        None,
        alias="from",
        description="First day (ISO date) or instant (ISO datetime) of the range, inclusive;"
        " default: six days before `to`.",
    )
    to: When | None = Field(
        None,
        description="Last day (ISO date) or instant (ISO datetime) of the range, inclusive;"
        " default: today.",
    )
    tz: str = Field(
        "UTC",
        min_length=1,
        max_length=64,
        description="IANA time zone for dates, buckets and CSV times, e.g. Australia/Melbourne.",
    )
    format: Literal["json", "csv"] = Field("json", description="`csv` for a spreadsheet.")

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _parse_when(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            try:
                return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
            except ValueError:
                raise ValueError("must be an ISO date (2026-03-02) or datetime") from None
        return value

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value

    def zone(self) -> ZoneInfo:
        return zone(self.tz)

    def bounds(self, today: date) -> tuple[datetime, datetime]:
        """[start, end) in UTC; raises ValueError naming the field that is out of range."""
        tz = self.zone()
        last = today if self.to is None else self.to
        end = _instant(last, tz, "to", end=True)
        if self.from_ is not None:
            start = _instant(self.from_, tz, "from", end=False)
        else:
            last_day = _local(last, tz).date() if isinstance(last, datetime) else last
            start = _instant(last_day - timedelta(days=DEFAULT_DAYS - 1), tz, "from", end=False)
        if start >= end:
            raise FieldError("to", "must not be before from")
        return start, end


class PageQuery(_Query):
    page: int = Field(1, ge=1, le=1_000_000, description="Page number, from 1.")
    per_page: int = Field(50, ge=1, le=500, description="Rows per page (at most 500).")


class UnitReportQuery(RangeQuery):
    marker_id: Id | None = Field(
        None,
        description="Only this tutor's rows. A tutor may name only themself (else 403).",
    )


class SessionsQuery(UnitReportQuery, PageQuery):
    pass


class MySessionsQuery(RangeQuery, PageQuery):
    unit_id: Id | None = Field(None, description="Only this unit's sessions.")


class TimelineQuery(UnitReportQuery):
    bucket: Literal["day", "week"] = Field(
        "day", description="Calendar days, or ISO weeks from Monday, in `tz`."
    )


class ActivityIn(BaseModel):
    """An activity the current user reports (the marker and IP are the request's own)."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=64, description="One of TUTOR_TIMES_ACTIONS.")
    unit_id: Id
    project_id: Id | None = None
    task_id: Id | None = None
    task_definition_id: Id | None = None
    at: AwareDatetime | None = Field(
        None, description="When it happened (with a time zone); default: now."
    )


# -- responses ---------------------------------------------------------------------------


class ErrorBody(BaseModel):
    status: int
    message: str
    field: str | None = Field(None, description="The offending parameter, when there is one.")


class ErrorOut(BaseModel):
    error: ErrorBody


class ActivityOut(BaseModel):
    id: int
    marking_session_id: int
    action: str
    created_at: datetime
    project_id: int | None
    task_id: int | None
    task_definition_id: int | None


class ActivityCreated(ActivityOut):
    marker_id: int
    unit_id: int


class ActiveSession(BaseModel):
    id: int
    marker_id: int
    ip_address: str
    start_time: datetime
    last_activity: datetime
    duration_minutes: int = Field(description="Minutes so far (to the last activity).")
    active: Literal[True]


class ActiveOut(BaseModel):
    unit_id: int
    sessions: list[ActiveSession]


class SessionOut(BaseModel):
    id: int
    marker_id: int
    unit_id: int
    ip_address: str
    start_time: datetime
    end_time: datetime | None = Field(description="Null while the session is open.")
    last_activity: datetime
    duration_minutes: int = Field(description="Recorded, or running while open.")
    active: bool = Field(
        description="Open, with a last activity within the session timeout of now."
    )
    assessments: int
    activities: dict[str, int] = Field(description="Activity counts by action.")


class SessionDetail(SessionOut):
    activity_list: list[ActivityOut] = Field(description="Every activity, oldest first.")


class RangeOut(BaseModel):
    start: datetime = Field(description="First instant of the range (UTC).")
    end: datetime = Field(description="First instant after the range (UTC).")
    tz: str


class SessionsPage(BaseModel):
    range: RangeOut
    page: int
    per_page: int
    total: int = Field(description="Sessions in the range, on every page.")
    sessions: list[SessionOut]


class TutorTotals(BaseModel):
    marker_id: int
    sessions: int
    minutes: int = Field(description="Overlapping sessions merged first (R10).")
    assessments: int
    minutes_per_assessment: float | None


class Totals(BaseModel):
    sessions: int
    minutes: int
    assessments: int
    minutes_per_assessment: float | None


class SummaryOut(BaseModel):
    unit_id: int
    range: RangeOut
    tutors: list[TutorTotals]
    totals: Totals


class TaskRow(BaseModel):
    task_definition_id: int | None
    assessments: int
    tasks: int = Field(description="Distinct tasks assessed.")
    markers: int = Field(description="Distinct tutors who assessed.")
    estimated_minutes: float = Field(
        description="Each session's minutes shared equally among its assessments."
    )


class TasksOut(BaseModel):
    unit_id: int
    range: RangeOut
    tasks: list[TaskRow]


class Bucket(BaseModel):
    start: date = Field(description="The bucket's first day, in `tz`.")
    start_time: datetime = Field(description="The bucket's first instant (UTC).")
    minutes: int
    sessions: int
    assessments: int


class TimelineOut(BaseModel):
    unit_id: int
    range: RangeOut
    bucket: Literal["day", "week"]
    buckets: list[Bucket]


class MySessionsOut(SessionsPage):
    marker_id: int


# -- helpers -----------------------------------------------------------------------------


class FieldError(ValueError):
    """A valid-looking parameter that cannot be used, e.g. a date out of range."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except Exception:  # ZoneInfo raises several kinds for a bad key
        raise ValueError(f"unknown time zone {name!r}; use an IANA name like UTC") from None


def _local(t: datetime, tz: ZoneInfo) -> datetime:
    return t.replace(tzinfo=tz) if t.tzinfo is None else t.astimezone(tz)


def _instant(when: date, tz: ZoneInfo, field: str, *, end: bool) -> datetime:
    """The UTC instant a ``from`` (start) or ``to`` (first instant after it) stands for."""
    try:
        if isinstance(when, datetime):
            t = _local(when, tz)
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
    first = start.astimezone(tz).date()
    step = 1
    if bucket == "week":
        first -= timedelta(days=first.weekday())
        step = 7
    starts: list[datetime] = []
    day = first
    while True:
        try:
            t = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
        except OverflowError:
            break
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
