"""``flask seed-demo``: a unit with staff, students and submissions waiting to be marked."""

from __future__ import annotations

from datetime import datetime

import click
import sqlalchemy as sa
from flask.cli import with_appcontext

from .extensions import db
from .models import Project, Task, TaskDefinition, Unit, UnitRole, User
from .timetable import seed_timetable

PASSWORD = "password"

STAFF = [
    # username, name, is_admin, role in COS10001
    ("admin", "Ada Admin", True, None),
    ("convenor", "Connie Convenor", False, "convenor"),
    ("tutor1", "Tom Tutor", False, "tutor"),
    ("tutor2", "Tina Tutor", False, "tutor"),
]
STUDENTS = ["student1", "student2", "student3", "student4"]
TASKS = [("1.1P", "Hello World"), ("2.1P", "Counter"), ("3.1C", "Shape Drawer")]


def seed() -> bool:
    """Create the demo data; False when it is already there."""
    if db.session.scalar(sa.select(sa.func.count()).select_from(User)):
        return False
    unit = Unit(code="COS10001", name="Introduction to Programming")
    db.session.add(unit)
    db.session.flush()
    users: dict[str, int] = {}
    projects: dict[str, int] = {}
    for username, name, is_admin, role in STAFF:
        user = User(username=username, name=name, is_admin=is_admin)
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.flush()
        users[username] = user.id
        if role:
            db.session.add(UnitRole(user_id=user.id, unit_id=unit.id, role=role))
    definitions = [TaskDefinition(unit_id=unit.id, abbreviation=a, name=n) for a, n in TASKS]
    db.session.add_all(definitions)
    for username in STUDENTS:
        student = User(username=username, name=username.capitalize())
        student.set_password(PASSWORD)
        db.session.add(student)
        db.session.flush()
        project = Project(unit_id=unit.id, user_id=student.id)
        db.session.add(project)
        db.session.flush()
        projects[username] = project.id
        for definition in definitions:
            db.session.add(
                Task(
                    project_id=project.id,
                    task_definition_id=definition.id,
                    submission=f"{username}'s work for {definition.abbreviation}",
                )
            )
    seed_timetable(unit.id, users, projects)
    db.session.commit()
    return True


def seed_example() -> None:
    """The HTTP API page's report examples: unit 2, tutor9, and the golden scenario's sessions."""
    from .extensions import tutor_times
    from .scenario import add_second_unit, play

    tracked = tutor_times.MarkingSession
    if db.session.scalar(sa.select(sa.func.count()).select_from(tracked)) or db.session.get(
        Unit, 2
    ):
        raise click.ClickException(
            "the example needs a database with no tracked sessions yet (the documented ids"
            " start at 1): remove instance/demo.sqlite (or use a new DATABASE_URL), run"
            " make run once, then seed-demo --example"
        )
    add_second_unit()
    real_clock = tutor_times.clock
    moved: list[datetime] = []
    tutor_times.clock = lambda: moved[-1]
    try:
        play(moved.append)
    finally:
        tutor_times.clock = real_clock
        tutor_times.stop_sweeper()


@click.command("seed-demo")
@click.option(
    "--example",
    is_flag=True,
    help="Also load the documentation's report examples (unit 2, March 2026, 10.0.0.x).",
)
@click.option(
    "--history",
    is_flag=True,
    help="Also record a few weeks of marking in unit 1 (only while nothing is tracked yet).",
)
@with_appcontext
def seed_demo_command(example: bool, history: bool) -> None:
    """Fill the demo database (once; it leaves existing data alone)."""
    if seed():
        click.echo(
            f"seeded unit COS10001 (id 1): users admin, convenor, tutor1, tutor2,"
            f" student1-4, all with password {PASSWORD!r}; tutorials LA1-01 and LA1-02"
            " (tutor1), LA1-03 (tutor2) and the weekly workshop WS (every tutor)"
        )
    else:
        click.echo("demo data already present; nothing changed")
    if example:
        seed_example()
        click.echo(
            "loaded the documentation's example sessions: unit 1 and 2, 2026-03-02 and 03 (UTC),"
            " tutors 3 and 4 from 10.0.0.1-3; try the report examples with from=2026-03-02"
        )
    if history:
        from .history import WEEKS, seed_history

        recorded = seed_history()
        if recorded:
            click.echo(
                f"recorded {recorded} marking activities of the last {WEEKS} weeks in unit 1;"
                " see /tutor-times/units/1/dashboard (log in as convenor)"
            )
