"""How the demo reads OnTrack's web-server log: ``flask tutor-times import --format
ontrack-log`` asks these two hooks what each logged request did and who made it.

The routes are doubtfire-api's marking routes, as its Grape API declares them (under the
``/api`` prefix, each with an optional ``.json`` suffix):

- ``GET /api/units/:id/tasks/inbox`` (units_api.rb): the tutor's inbox;
- ``PUT /api/projects/:id/task_def_id/:task_definition_id`` (tasks_api.rb): a status change,
  an ``assessing`` when its ``assessing task N to <trigger>`` line names a staff trigger;
- ``GET …/submission_details`` and ``GET …/submission_files`` (tasks_api.rb), and
  ``GET …/submission`` (submission/portfolio_evidence_api.rb): a submission opened;
- ``GET …/comments`` and ``POST …/comments`` (task_comments_api.rb): comments read, added;
- ``GET|POST /api/submission/assess/`` (submission/batch_task_api.rb): the batch download
  and upload of marks, whose unit is in the query or the body, not the path: the request
  takes the unit of the tutor's previous request.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from tutor_times import LogTarget

from .extensions import db, tutor_times
from .models import Project, Task, User

_JSON = r"(?:\.json)?"
INBOX = re.compile(r"/api/units/(\d+)/tasks/inbox" + _JSON)
TASK = re.compile(r"/api/projects/(\d+)/task_def_id/(\d+)(/[a-z_]+)?" + _JSON)
BATCH = re.compile(r"/api/submission/assess/?" + _JSON)
#: (method, what follows the task's path) -> action
TASK_ACTIONS = {
    ("PUT", None): "PUT",
    ("GET", "/submission_details"): "get-submission-details",
    ("GET", "/submission_files"): "get-submission-details",
    ("GET", "/submission"): "get-submission-details",
    ("GET", "/comments"): "GET",
    ("POST", "/comments"): "add-comment",
}
BATCH_ACTIONS = {"GET": "GET", "POST": "PUT"}


@tutor_times.log_path_resolver
def marking_request(method: str, path: str) -> LogTarget | None:
    """The unit and ids a logged API request worked on; None for anything that is not
    marking (a student's own pages, sign-in, settings, assets)."""
    if match := TASK.fullmatch(path):
        action = TASK_ACTIONS.get((method, match[3]))
        return _task_target(int(match[1]), int(match[2]), action) if action else None
    if method == "GET" and (match := INBOX.fullmatch(path)):
        return LogTarget(unit_id=int(match[1]), action="inbox")
    if BATCH.fullmatch(path) and method in BATCH_ACTIONS:
        return LogTarget(unit_id=None, action=BATCH_ACTIONS[method])
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
        owner_id=project.user_id,
    )


@tutor_times.username_resolver
def log_user(username: str) -> User | None:
    """The user a log names: the object the role_loader takes, so R7 is asked of it."""
    return db.session.scalar(sa.select(User).where(User.username == username))
