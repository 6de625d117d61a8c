"""Spreadsheet downloads: CSV with Excel-friendly encoding, and the columns of a session."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response

from ..accounting import UTC
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
        }
