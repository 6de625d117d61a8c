"""The tests of ``integration/test_endpoints.py`` that need no app and no database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tutor_times.web.ranges import day_starts, zone


def test_day_buckets_follow_daylight_saving() -> None:
    melbourne = zone("Australia/Melbourne")  # DST ends 2026-04-05 03:00 -> 02:00: 25 hours
    start = datetime(2026, 4, 3, 13, tzinfo=timezone.utc)  # 2026-04-04 00:00 local
    starts = day_starts(start, start + timedelta(days=3), melbourne, "day")
    assert [s.isoformat() for s in starts] == [
        "2026-04-03T13:00:00+00:00",
        "2026-04-04T13:00:00+00:00",  # 2026-04-05 00:00, still UTC+11
        "2026-04-05T14:00:00+00:00",  # 2026-04-06 00:00, now UTC+10
    ]
    new_york = zone("America/New_York")  # 2026-03-08 02:00 -> 03:00: 23 hours
    start = datetime(2026, 3, 8, 5, tzinfo=timezone.utc)
    assert [
        s.isoformat() for s in day_starts(start, start + timedelta(hours=40), new_york, "day")
    ] == [
        "2026-03-08T05:00:00+00:00",
        "2026-03-09T04:00:00+00:00",
    ]
