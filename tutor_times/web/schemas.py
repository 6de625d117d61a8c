"""The endpoints' inputs and outputs, described once.

Each request model validates a query string or a JSON body; each response model documents
what an endpoint returns. ``GET /openapi.json`` is generated from these same classes.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
)

from ..core.accounting import UTC
from ..core.constants import BIGINT_MAX
from . import ranges
from .ranges import zone

DIGITS = re.compile(r"[0-9]{1,30}")


def _digits(value: Any) -> Any:
    """Integers in a URL are plain decimal digits: ``1.0``, ``+1``, `` 1``, ``1_0`` or
    another script's digits would each be read as some number, so none is."""
    if isinstance(value, str):
        if not DIGITS.fullmatch(value):
            raise ValueError("must be a whole number in decimal digits")
        return int(value)
    return value


#: an id in a path or query string
Id = Annotated[int, BeforeValidator(_digits), Field(ge=1, le=BIGINT_MAX)]
#: an id in a JSON body: a JSON integer, never a string, a float or a boolean
BodyId = Annotated[StrictInt, Field(ge=1, le=BIGINT_MAX)]
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


class _Query(BaseModel):
    # unknown parameters are refused before these models see them (api.py)
    model_config = ConfigDict(extra="forbid", frozen=True)


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
        description="IANA time zone name for dates, buckets and CSV times,"
        " e.g. Australia/Melbourne.",
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
        """[start, end) in UTC; raises FieldError naming the field that is out of range."""
        return ranges.bounds(self.from_, self.to, self.zone(), today)


class PageQuery(_Query):
    page: Annotated[int, BeforeValidator(_digits)] = Field(
        1, ge=1, le=1_000_000, description="Page number, from 1."
    )
    per_page: Annotated[int, BeforeValidator(_digits)] = Field(
        50, ge=1, le=500, description="Rows per page (at most 500)."
    )


class UnitReportQuery(RangeQuery):
    marker_id: Id | None = Field(
        None,
        description="Only this tutor's rows. A tutor may name only themself (else 403).",
    )


class CsvStyleQuery(_Query):
    style: Literal["tutor_times", "ontrack"] = Field(
        "tutor_times",
        description="With `format=csv`: `ontrack` gives OnTrack's columns (Start Date, Start"
        " Time, End Date, End Time, Timezone, Duration (m), Duration (h), Submissions Opened,"
        " Comments Added, Assessments Made, During Tutorial), with these exact durations;"
        " During Tutorial is the session's minutes during class (R12), empty without class"
        " times. Only with `format=csv`.",
    )


class SessionsQuery(UnitReportQuery, PageQuery, CsvStyleQuery):
    pass


class WhatIfQuery(UnitReportQuery):
    timeout: Annotated[int, BeforeValidator(_digits)] | None = Field(
        None,
        ge=1,
        le=86_400,
        description="What if: seconds of inactivity that end a session, instead of"
        " TUTOR_TIMES_SESSION_TIMEOUT; minutes are then computed from the raw activities.",
    )


class MySessionsQuery(RangeQuery, PageQuery, CsvStyleQuery):
    unit_id: Id | None = Field(None, description="Only this unit's sessions.")


class TimelineQuery(WhatIfQuery):
    bucket: Literal["day", "week"] = Field(
        "day", description="Calendar days, or ISO weeks from Monday, in `tz`."
    )


def _blank_is_off(value: Any) -> Any:
    """A form's picker left at "off" sends ``timeout=``: no what-if, not a bad number."""
    return None if value == "" else _digits(value)


class DashboardQuery(UnitReportQuery):
    """A unit's dashboard page: a range, a zone, optionally one tutor and a what-if timeout."""

    bucket: Literal["day", "week"] | None = Field(
        None, description="Minutes per day or per week; default: days up to 31 days, else weeks."
    )
    timeout: Annotated[int | None, BeforeValidator(_blank_is_off)] = Field(
        None,
        ge=1,
        le=86_400,
        description="What if: also each tutor's minutes under this inactivity timeout, in"
        " seconds, as `summary?timeout=` gives them; empty or absent: off.",
    )


class MyDashboardQuery(RangeQuery):
    """One's own dashboard page, across units or in one."""

    unit_id: Id | None = Field(None, description="Only this unit's time.")
    bucket: Literal["day", "week"] | None = None


class ActivityIn(BaseModel):
    """An activity the current user reports (the marker and IP are the request's own)."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=64, description="One of TUTOR_TIMES_ACTIONS.")
    unit_id: BodyId
    project_id: BodyId | None = None
    task_id: BodyId | None = None
    task_definition_id: BodyId | None = None
    at: AwareDatetime | None = Field(
        None, description="When it happened, an ISO datetime with a time zone; default: now."
    )

    @field_validator("at", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        # a number would be read as seconds since 1970: too easy to send by mistake
        if value is not None and not isinstance(value, str):
            raise ValueError("must be an ISO datetime with a time zone")
        return value

    @field_validator("at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        try:
            return None if value is None else value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError("is out of range") from None


# -- responses ---------------------------------------------------------------------------

WITH_CLASS_TIMES = " Present only when the host registers a class_times_loader."
WITH_STUDENTS = (
    " Present only when the host registers a student_count_loader and it returns a count."
)


def _absent_if_none(description: str, extra: str) -> Any:
    """A field left out of the reply, not written as null, when it has no value."""
    return Field(None, description=description + extra, exclude_if=lambda v: v is None)


class ClassSplit(BaseModel):
    """R12: minutes during the host's scheduled classes and outside them; they add up to
    the row's minutes."""

    during_class_minutes: int | None = _absent_if_none(
        "Of the minutes, those during the tutor's scheduled classes (R12).", WITH_CLASS_TIMES
    )
    outside_class_minutes: int | None = _absent_if_none(
        "Of the minutes, those outside scheduled classes: the minutes minus"
        " during_class_minutes (R12).",
        WITH_CLASS_TIMES,
    )


class Workload(BaseModel):
    """The legacy hours per student: students marked for, and minutes per student."""

    students: int | None = _absent_if_none(
        "Students the tutor marks for (in totals: the unit's students).", WITH_STUDENTS
    )
    minutes_per_student: float | None = _absent_if_none(
        "Minutes divided by students, to 0.1; absent when there are no students.",
        WITH_STUDENTS,
    )


class ActivityOut(BaseModel):
    id: int
    marking_session_id: int
    action: str
    created_at: datetime
    project_id: int | None
    task_id: int | None
    task_definition_id: int | None
    source: Literal["server", "client"] = Field(
        description="`server`: recorded by a tracked endpoint of the host; `client`: reported"
        " by the user's client through POST /activities."
    )


class ActivityCreated(ActivityOut):
    marker_id: int
    unit_id: int


class ActiveSession(ClassSplit):
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


class SessionOut(ClassSplit):
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
    client_activities: int = Field(
        description="How many of the activities the user's client reported itself"
        " (POST /activities) rather than a tracked endpoint of the host."
    )


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


class TutorTotals(ClassSplit, Workload):
    marker_id: int
    sessions: int
    minutes: int = Field(description="Overlapping sessions merged first (R10).")
    assessments: int
    minutes_per_assessment: float | None


class Totals(ClassSplit, Workload):
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


class Bucket(ClassSplit):
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


class OpenApiOut(BaseModel):
    """An OpenAPI 3.1 document."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


class HealthCheck(BaseModel):
    status: Literal["ok", "fail", "not used", "stale", "unknown"]
    ms: float | None = Field(None, description="How long the check took.")
    error: str | None = Field(None, description="The kind of failure, when it failed.")
    last_heartbeat: datetime | None = Field(
        None, description="When the worker last finished a pass (worker only)."
    )
    age_seconds: float | None = Field(None, description="Seconds since that heartbeat.")


class HealthOut(BaseModel):
    """`ok` (HTTP 200) when every check passes, else `fail` (HTTP 503)."""

    status: Literal["ok", "fail"]
    checks: dict[str, HealthCheck]
