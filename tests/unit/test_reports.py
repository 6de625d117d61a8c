"""The tests of ``integration/test_reports.py`` that need no app and no database."""

from __future__ import annotations

from datetime import datetime

import pytest

from tutor_times.core.accounting import merged_minutes

from ..integration.test_reports import m


@pytest.mark.parametrize(
    ("intervals", "minutes"),
    [
        ([], 0),
        ([(m(9, 0), m(9, 20))], 20),
        ([(m(9, 0), m(9, 20)), (m(9, 15), m(9, 30))], 30),  # overlap: merged
        ([(m(9, 0), m(9, 20)), (m(9, 20), m(9, 30))], 30),  # touching: same total either way
        ([(m(9, 0), m(9, 10)), (m(9, 30), m(9, 40))], 20),  # apart: summed
        ([(m(9, 0), m(10, 0)), (m(9, 10), m(9, 20)), (m(9, 30), m(9, 31))], 60),  # nested
        ([(m(9, 5), m(9, 5)), (m(9, 0), m(9, 10))], 10),  # a one-activity session inside another
        ([(m(9, 5), m(9, 5)), (m(11, 0), m(11, 0))], 2),  # two lone activities: the minimum each
    ],
)
def test_merged_minutes(intervals: list[tuple[datetime, datetime]], minutes: int) -> None:
    assert merged_minutes(intervals, 1) == minutes
