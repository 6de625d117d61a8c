"""``flask seed-demo --history``: a few weeks of plausible marking in unit 1, so the
dashboard has something to show the moment ``make run`` starts.

The activities go through ``record_activity`` — the same tracking path as a tracked
request — at their own times: live tracking accepts only times near the extension's clock
(TUTOR_TIMES_MAX_BACKDATE), so the clock is moved to each activity's time while seeding and
put back afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa

from .extensions import db, tutor_times
from .models import Project, Task, UnitRole, User
from .timetable import ZONE  # where the unit is taught: the tutors' habits are local hours

UNIT = 1
WEEKS = 3
#: tutors added for the history, beside the seeded tutor1 and tutor2
EXTRA_TUTORS = [("tutor3", "Theo Tutor"), ("tutor4", "Tess Tutor")]
#: (first hour, last hour) of the day each tutor tends to start marking, in ZONE
HABITS = {"tutor1": (8, 12), "tutor2": (18, 22), "tutor3": (12, 17), "tutor4": (9, 20)}
READING = ("inbox", "get-submission-details")

Activity = tuple[datetime, int, str, str, int | None, int | None]


def _tutors() -> dict[str, int]:
    """Every tutor of the history by username, creating the extra ones."""
    for username, name in EXTRA_TUTORS:
        if db.session.scalar(sa.select(User).where(User.username == username)) is None:
            user = User(username=username, name=name)
            user.set_password("password")
            db.session.add(user)
            db.session.flush()
            db.session.add(UnitRole(user_id=user.id, unit_id=UNIT, role="tutor"))
    db.session.commit()
    rows = db.session.execute(sa.select(User.username, User.id).where(User.username.in_(HABITS)))
    return {username: user_id for username, user_id in rows}


def _session(
    rng: random.Random, start: datetime, marker: int, ip: str, tasks: list[tuple[int, int]]
) -> Iterator[Activity]:
    """One sitting: the inbox, then submissions read, commented on and assessed, a few
    minutes apart (never the timeout, so it stays one session)."""
    t = start
    yield t, marker, ip, "inbox", None, None
    for task_id, definition in rng.sample(tasks, k=min(len(tasks), rng.randint(2, 6))):
        for action in ("get-submission-details", "add-comment", "assessing"):
            if action == "add-comment" and rng.random() < 0.4:
                continue
            t += timedelta(minutes=rng.uniform(1, 7))
            yield t, marker, ip, action, task_id, definition


def activities(today: date, rng: random.Random) -> list[Activity]:
    """WEEKS of weekdays (and today, up to now) of every tutor's sittings."""
    tasks = [
        (task_id, definition)
        for task_id, definition in db.session.execute(
            sa.select(Task.id, Task.task_definition_id)
            .join(Project, Project.id == Task.project_id)
            .where(Project.unit_id == UNIT)
        )
    ]
    tutors = _tutors()
    now = datetime.now(timezone.utc)
    # nothing in the future, and the backdating window's margin from now
    latest = now - timedelta(seconds=30)
    found: list[Activity] = []
    for offset in range(WEEKS * 7, -1, -1):
        day = today - timedelta(days=offset)
        if day.weekday() >= 5 and rng.random() < 0.8:
            continue  # weekends are mostly quiet
        for i, (username, (first, last)) in enumerate(HABITS.items()):
            for sitting in range(rng.choice((0, 1, 1, 2))):
                hour = rng.uniform(first, last)
                start = datetime.combine(day, time(), tzinfo=ZONE) + timedelta(hours=hour)
                ip = f"10.1.{i}.{1 + sitting % 2}"
                found.extend(
                    _session(rng, start.astimezone(timezone.utc), tutors[username], ip, tasks)
                )
        if day.weekday() == 0:
            # tutor1 marks in the quiet half hour of their Monday tutorial (LA1-01)
            start = datetime.combine(day, time(11, 45), tzinfo=ZONE).astimezone(timezone.utc)
            found.extend(_session(rng, start, tutors["tutor1"], "10.1.0.9", tasks))
    # someone still at it as the server starts: the "marking now" panel has a row
    found.extend(_session(rng, now - timedelta(minutes=20), tutors["tutor2"], "10.1.9.1", tasks))
    return sorted((a for a in found if a[0] < latest), key=lambda a: a[0])


def seed_history() -> int:
    """Record the history (once: only on a database with no tracked sessions); how many
    activities were recorded."""
    tracked = tutor_times.MarkingSession
    if db.session.scalar(sa.select(sa.func.count()).select_from(tracked)):
        return 0
    history = activities(datetime.now(ZONE).date(), random.Random(13))
    real_clock = tutor_times.clock
    moved: list[datetime] = []
    tutor_times.clock = lambda: moved[-1]
    try:
        for at, marker, ip, action, task_id, definition in history:
            moved.append(at)
            tutor_times.record_activity(
                action,
                marker_id=marker,
                unit_id=UNIT,
                ip_address=ip,
                task_id=task_id,
                task_definition_id=definition,
            )
    finally:
        tutor_times.clock = real_clock
    tutor_times.close_expired_sessions()  # all but the sittings of the last minutes
    tutor_times.stop_sweeper()
    return len(history)
