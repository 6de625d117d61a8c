"""The demo's timetable and enrolments, as tutor_times' class_times_loader and
student_count_loader: reports then split marking into during-class and outside-class
minutes, and show minutes per student.

Classes are weekly, at wall-clock times of the unit's zone; each week's real start and end
are computed in that zone, so a class on the day daylight saving changes lasts what it
really lasts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from tutor_times import TutorTimes

from .extensions import db
from .models import Project, Tutorial, TutorialEnrolment

#: where the demo's units are taught
ZONE = ZoneInfo("Australia/Melbourne")
#: (abbreviation, tutor's username or None for every tutor, weekday, start, end), unit 1
TIMETABLE = [
    ("LA1-01", "tutor1", 0, time(10, 30), time(12, 30)),
    ("LA1-02", "tutor1", 2, time(14, 30), time(16, 0)),
    ("LA1-03", "tutor2", 1, time(18, 30), time(20, 30)),
    ("WS", None, 3, time(9, 0), time(10, 0)),  # the weekly workshop: every tutor is there
]
#: students by tutorial
ENROLMENTS = {"LA1-01": ["student1", "student2", "student3"], "LA1-03": ["student4"]}


def _days(start: datetime, end: datetime) -> Iterator[date]:
    """Every local date that [start, end) touches."""
    day, last = start.astimezone(ZONE).date(), end.astimezone(ZONE).date()
    while day <= last:
        yield day
        if day == date.max:  # the calendar's last day has no next
            return
        day += timedelta(days=1)


def class_times(
    unit_id: int, start: datetime, end: datetime
) -> list[tuple[int | None, datetime, datetime]]:
    """The unit's classes that meet in [start, end), as real instants."""
    tutorials = db.session.execute(
        sa.select(Tutorial.tutor_id, Tutorial.weekday, Tutorial.starts_at, Tutorial.ends_at).where(
            Tutorial.unit_id == unit_id
        )
    ).all()
    found = []
    for day in _days(start, end):
        for tutor_id, weekday, starts_at, ends_at in tutorials:
            if day.weekday() != weekday:
                continue
            begins = datetime.combine(day, starts_at, tzinfo=ZONE)
            ends = datetime.combine(day, ends_at, tzinfo=ZONE)
            if begins < end and ends > start:
                found.append((tutor_id, begins, ends))
    return found


def student_count(unit_id: int, marker_id: int | None) -> int:
    """The students of the tutor's tutorials in the unit; with no tutor, the unit's."""
    if marker_id is None:
        query = sa.select(sa.func.count()).select_from(Project).where(Project.unit_id == unit_id)
    else:
        query = (
            sa.select(sa.func.count(sa.distinct(TutorialEnrolment.project_id)))
            .join(Tutorial, Tutorial.id == TutorialEnrolment.tutorial_id)
            .where(Tutorial.unit_id == unit_id, Tutorial.tutor_id == marker_id)
        )
    return int(db.session.scalar(query) or 0)


def wire(extension: TutorTimes, *, enabled: bool) -> None:
    """Register both loaders (DEMO_TIMETABLE on), or leave the reports without them."""
    if enabled:
        extension.class_times_loader(class_times)
        extension.student_count_loader(student_count)
    else:
        extension.forget_workload_loaders()


def seed_timetable(unit_id: int, users: dict[str, int], projects: dict[str, int]) -> None:
    """The unit's weekly timetable and who is enrolled in which tutorial."""
    ids = {}
    for abbreviation, tutor, weekday, starts_at, ends_at in TIMETABLE:
        tutorial = Tutorial(
            unit_id=unit_id,
            tutor_id=None if tutor is None else users[tutor],
            abbreviation=abbreviation,
            weekday=weekday,
            starts_at=starts_at,
            ends_at=ends_at,
        )
        db.session.add(tutorial)
        db.session.flush()
        ids[abbreviation] = tutorial.id
    for abbreviation, students in ENROLMENTS.items():
        for student in students:
            db.session.add(
                TutorialEnrolment(tutorial_id=ids[abbreviation], project_id=projects[student])
            )
