"""How the demo reads OnTrack's web-server log: ``flask tutor-times import --format
ontrack-log`` asks these two hooks what each logged request did and who made it."""

from __future__ import annotations

import re

import sqlalchemy as sa

from tutor_times.sources import LogTarget

from .extensions import db, tutor_times
from .models import Project, Task, User

UNIT_PATHS = [
    (re.compile(r"/api/units/(\d+)/tasks/inbox"), "GET", "inbox"),
    (re.compile(r"/api/units/(\d+)"), "GET", "GET"),
]
TASK_PATHS = [
    (re.compile(r"/api/projects/(\d+)/task_def_id/(\d+)/submission_details"), "GET", "get-submission-details"),
    (re.compile(r"/api/projects/(\d+)/task_def_id/(\d+)/comments"), "POST", "add-comment"),
    # an assessment: the request's "assessing task N" line makes it "assessing"
    (re.compile(r"/api/projects/(\d+)/task_def_id/(\d+)"), "PUT", "PUT"),
]


@tutor_times.log_path_resolver
def marking_request(method: str, path: str) -> LogTarget | None:
    """The unit and ids a logged API request worked on; None for anything that is not
    marking (a student's own pages, assets, sign-in)."""
    for pattern, verb, action in UNIT_PATHS:
        match = pattern.fullmatch(path)
        if match and method == verb:
            return LogTarget(unit_id=int(match[1]), action=action)
    for pattern, verb, action in TASK_PATHS:
        match = pattern.fullmatch(path)
        if match and method == verb:
            return _task_target(int(match[1]), int(match[2]), action)
    return None


def _task_target(project_id: int, task_definition_id: int, action: str) -> LogTarget | None:
    project = db.session.get(Project, project_id)
    if project is None:
        return None
    task_id = db.session.scalar(
        sa.select(Task.id).where(
            Task.project_id == project_id, Task.task_definition_id == task_definition_id
        )
    )
    return LogTarget(
        unit_id=project.unit_id,
        action=action,
        project_id=project_id,
        task_id=task_id,
        task_definition_id=task_definition_id,
    )


@tutor_times.username_resolver
def user_id(username: str) -> int | None:
    return db.session.scalar(sa.select(User.id).where(User.username == username))
