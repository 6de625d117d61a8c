"""The golden scenario: the data behind the documentation's report examples and the report tests.

``flask seed-demo --example`` loads it into the demo; the tests play it on their own clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from .extensions import db, tutor_times
from .models import Unit, UnitRole, User

D = datetime(2026, 3, 2, tzinfo=timezone.utc)


def at(day: int, hh: int, mm: int, ss: int = 0) -> datetime:
    return D + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


# (time, marker, unit, ip, action, task_id, task_definition_id)
SCENARIO = [
    # tutor 3, two IPs at once: 09:00-09:20 and 09:15-09:29 merge into 29 minutes (R10);
    # each gap is under the 15-minute timeout
    (at(0, 9, 0), 3, 1, "10.0.0.1", "assessing", 11, 1),
    (at(0, 9, 10), 3, 1, "10.0.0.1", "inbox", None, None),
    (at(0, 9, 20), 3, 1, "10.0.0.1", "assessing", 21, 2),
    (at(0, 9, 15), 3, 1, "10.0.0.2", "assessing", 11, 1),
    (at(0, 9, 29), 3, 1, "10.0.0.2", "add-comment", 11, 1),
    # tutor 3 in another unit at the same time: not this unit's time
    (at(0, 9, 5), 3, 2, "10.0.0.1", "assessing", 11, 1),
    # tutor 3 two days earlier: outside the range
    (at(-2, 9, 0), 3, 1, "10.0.0.1", "assessing", 11, 1),
    # tutor 3 across midnight: 23:50-00:10, 20 minutes, 2 assessments
    (at(0, 23, 50), 3, 1, "10.0.0.1", "assessing", 12, 1),
    (at(1, 0, 2), 3, 1, "10.0.0.1", "add-comment", 12, 1),
    (at(1, 0, 10), 3, 1, "10.0.0.1", "assessing", 13, 1),
    # tutor 4: a single look at the inbox (1 minute, the minimum) ...
    (at(0, 10, 0), 4, 1, "10.0.0.3", "inbox", None, None),
    # ... and a session still open: 7.5 minutes so far, 2 assessments of one task
    (at(1, 0, 20), 4, 1, "10.0.0.3", "assessing", 22, 2),
    (at(1, 0, 27, 30), 4, 1, "10.0.0.3", "assessing", 22, 2),
]
#: the scenario's "now": session 7 is still open then
NOW = at(1, 0, 28)


def add_second_unit() -> None:
    """Unit 2, where tutor1 also marks, and tutor9, a tutor of unit 2 only."""
    db.session.add(Unit(id=2, code="COS20007", name="Object Oriented Programming"))
    other = User(username="tutor9", name="Otto Other")
    other.set_password("password")
    db.session.add(other)
    db.session.flush()
    db.session.add(UnitRole(user_id=other.id, unit_id=2, role="tutor"))
    db.session.commit()


def play(set_clock: Callable[[datetime], object]) -> None:
    """Record the activities at their times (``set_clock`` moves the extension's clock),
    then close what is idle at NOW."""
    for t, marker, unit, ip, action, task, definition in sorted(SCENARIO, key=lambda a: a[0]):
        set_clock(t)
        tutor_times.record_activity(
            action,
            marker_id=marker,
            unit_id=unit,
            ip_address=ip,
            task_id=task,
            task_definition_id=definition,
        )
    set_clock(NOW)
    tutor_times.close_expired_sessions()
