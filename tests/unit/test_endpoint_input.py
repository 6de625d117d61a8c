"""The tests of ``integration/test_endpoint_input.py`` that need no app and no database."""

from __future__ import annotations

import zoneinfo

from tutor_times.web.ranges import ZONES


def test_the_zones_are_the_iana_names() -> None:
    assert {"UTC", "Australia/Adelaide", "Asia/Kathmandu", "Europe/Berlin"} <= ZONES
    assert ZONES <= zoneinfo.available_timezones()
    assert not {z for z in ZONES if z.startswith(("posix/", "right/"))}
    assert not ZONES & {"localtime", "posixrules", "Factory"}
