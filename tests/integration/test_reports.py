"""Report numbers on a hand-built scenario: known sessions, exact expected results."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Flask

from demo.extensions import tutor_times
from tutor_times.reports.scope import Scope
from tutor_times.reports.summary import summary

from ..conftest import D, at


def run_summary(app: Flask, **kw: Any) -> dict[str, Any]:
    with app.app_context():
        state = tutor_times.state
        with state.tracker.sql.connect() as conn:
            args: dict[str, Any] = {
                "unit_id": 1,
                "start": D,
                "end": D + timedelta(days=2),
                "marker_id": None,
            }
            result = summary(
                conn, tutor_times.models, Scope(**(args | kw)), min_minutes=state.min_minutes
            )
            return {"unit_id": 1, **result}


def test_summary_golden_numbers(scenario: Flask) -> None:
    assert run_summary(scenario) == {
        "unit_id": 1,
        "tutors": [
            {
                "marker_id": 3,
                "sessions": 3,
                "assessments": 5,
                "minutes": 49,
                "minutes_per_assessment": 9.8,
            },
            {
                "marker_id": 4,
                "sessions": 2,
                "assessments": 2,
                "minutes": 8,
                "minutes_per_assessment": 4.0,
            },
        ],
        "totals": {"sessions": 5, "assessments": 7, "minutes": 57, "minutes_per_assessment": 8.1},
    }


def test_summary_of_one_tutor(scenario: Flask) -> None:
    result = run_summary(scenario, marker_id=4)
    assert [t["marker_id"] for t in result["tutors"]] == [4]
    assert result["totals"]["minutes"] == 8


def test_summary_range_is_by_session_start(scenario: Flask) -> None:
    # the first day only: the midnight session started on it, the open one did not
    result = run_summary(scenario, end=D + timedelta(days=1))
    assert [(t["marker_id"], t["sessions"], t["minutes"]) for t in result["tutors"]] == [
        (3, 3, 49),
        (4, 1, 1),
    ]


def test_no_assessments_gives_no_minutes_per_assessment(scenario: Flask) -> None:
    result = run_summary(scenario, end=D + timedelta(hours=10, minutes=30), marker_id=4)
    assert result["tutors"] == [
        {
            "marker_id": 4,
            "sessions": 1,
            "assessments": 0,
            "minutes": 1,
            "minutes_per_assessment": None,
        }
    ]


def test_an_empty_range(scenario: Flask) -> None:
    result = run_summary(scenario, start=D + timedelta(days=30), end=D + timedelta(days=31))
    assert result["tutors"] == []
    assert result["totals"] == {
        "sessions": 0,
        "assessments": 0,
        "minutes": 0,
        "minutes_per_assessment": None,
    }


def m(hh: int, mm: int) -> datetime:
    return at(0, hh, mm)
