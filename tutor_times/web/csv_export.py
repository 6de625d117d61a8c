"""Spreadsheet downloads: CSV with Excel-friendly encoding, and the columns of a session."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response

from ..core.accounting import UTC
from .api import FieldError


def csv_response(name: str, columns: list[str], rows: Iterable[dict[str, Any]]) -> Response:
    """A spreadsheet-ready CSV download (UTF-8 with BOM, so Excel reads it as UTF-8)."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


SESSION_COLUMNS = [
    "session_id",
    "marker_id",
    "unit_id",
    "ip_address",
    "start_date",
    "start_time",
    "end_date",
    "end_time",
    "timezone",
    "duration_minutes",
    "duration_hours",
    "active",
    "assessments",
    "comments",
    "submissions_opened",
    "activities",
    "client_activities",
]


#: R12's split, beside the minutes, when the host has class times
SPLIT_COLUMNS = ["during_class_minutes", "outside_class_minutes"]
#: the legacy hours per student, when the host counts students
STUDENT_COLUMNS = ["students", "minutes_per_student"]

#: OnTrack's "my marking sessions" download, column for column
ONTRACK_COLUMNS = [
    "Start Date",
    "Start Time",
    "End Date",
    "End Time",
    "Timezone",
    "Duration (m)",
    "Duration (h)",
    "Submissions Opened",
    "Comments Added",
    "Assessments Made",
    "During Tutorial",
]


def hours(minutes: float | None) -> str:
    return "" if minutes is None else f"{minutes / 60:.1f}"


def instant(t: datetime) -> str:
    """A UTC instant as ISO 8601 with a Z, as the JSON replies write it."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def local_date_time(stamp: datetime | None, tz: ZoneInfo) -> tuple[str, str]:
    """A time as its local date and time of day in ``tz``, for a spreadsheet."""
    if stamp is None:
        return "", ""
    try:
        t = stamp.astimezone(tz)
    except OverflowError:  # a stored time at an end of the calendar, past it in ``tz``
        raise FieldError("tz", f"a time in the result cannot be shown in {tz.key}") from None
    return t.date().isoformat(), t.strftime("%H:%M:%S")


def session_rows(rows: Iterable[dict[str, Any]], tz: ZoneInfo) -> Iterable[dict[str, Any]]:
    for r in rows:
        start_date, start_time = local_date_time(r["start_time"], tz)
        end_date, end_time = local_date_time(r["end_time"], tz)
        yield {
            "session_id": r["id"],
            "marker_id": r["marker_id"],
            "unit_id": r["unit_id"],
            "ip_address": r["ip_address"],
            "start_date": start_date,
            "start_time": start_time,
            "end_date": end_date,
            "end_time": end_time,
            "timezone": tz.key,
            "duration_minutes": r["duration_minutes"],
            "duration_hours": hours(r["duration_minutes"]),
            "active": "yes" if r["active"] else "no",
            "assessments": r["assessments"],
            "comments": r["activities"].get("add-comment", 0),
            "submissions_opened": r["activities"].get("get-submission-details", 0),
            "activities": sum(r["activities"].values()),
            "client_activities": r["client_activities"],
            "during_class_minutes": r.get("during_class_minutes", ""),
            "outside_class_minutes": r.get("outside_class_minutes", ""),
        }


def ontrack_rows(
    rows: Iterable[dict[str, Any]], tz: ZoneInfo, *, split: bool
) -> Iterable[dict[str, Any]]:
    """Sessions in OnTrack's columns, with these exact durations. An open session's end is
    its last activity so far. During Tutorial is the session's minutes during class (R12):
    0 for none, all of Duration (m) for marking wholly in class, empty without class times."""
    for r in rows:
        start_date, start_time = local_date_time(r["start_time"], tz)
        end_date, end_time = local_date_time(r["end_time"] or r["last_activity"], tz)
        minutes = r["duration_minutes"]
        yield {
            "Start Date": start_date,
            "Start Time": start_time,
            "End Date": end_date,
            "End Time": end_time,
            "Timezone": tz.key,
            "Duration (m)": minutes,
            "Duration (h)": f"{minutes / 60:.2f}",
            "Submissions Opened": r["activities"].get("get-submission-details", 0),
            "Comments Added": r["activities"].get("add-comment", 0),
            "Assessments Made": r["assessments"],
            "During Tutorial": r["during_class_minutes"] if split else "",
        }
