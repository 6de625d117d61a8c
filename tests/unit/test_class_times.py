"""The tests of ``integration/test_class_times.py`` that need no app and no database."""

from __future__ import annotations

from datetime import timedelta

from tutor_times.store.class_times import Timetable

from ..integration.test_class_times import MON, as_classes


def test_a_days_reports_share_the_arrays_they_send() -> None:
    """A report of the last 7 days starts a little later on each request: the arrays sent
    for it are made once a day, not once a request."""
    timetable = Timetable.of_unit(as_classes([(3, 0, 3600 * 10**6)]))
    morning, evening = MON + timedelta(hours=1), MON + timedelta(hours=23)
    assert timetable.time_arrays(morning) is timetable.time_arrays(evening)
    assert timetable.sql_arrays(morning) is timetable.sql_arrays(evening)
    assert timetable.time_arrays(MON + timedelta(days=1)) is not timetable.time_arrays(evening)
