"""tutor_times: the task definition and task of each session's assessments

- ``marking_sessions.assessed_definitions``, ``assessed_tasks``: the task definition and
  the task of each of a closed session's assessing activities, in the order they came
  (a ``bigint[]`` on PostgreSQL, JSON text elsewhere), so that the tasks report reads a
  range's sessions rather than every one of their activities (see
  ``tutor_times/figures.py``).

Every closed session with figures gets them on upgrade, by one statement of this revision's
own, so that later changes to the package never change what this revision did.

Revision ID: tt0007
Revises: tt0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from tutor_times.store.models import IdList

revision = "tt0007"
down_revision = "tt0006"
branch_labels = None
depends_on = None

SESSIONS = "marking_sessions"
LISTS = {"assessed_definitions": "task_definition_id", "assessed_tasks": "task_id"}

#: one list per column, of the session's assessing activities in order (created_at, id)
LIST_OF = {
    "postgresql": "ARRAY(SELECT a.{column} FROM session_activities AS a"
    " WHERE a.marking_session_id = marking_sessions.id AND a.action = 'assessing'"
    " ORDER BY a.created_at, a.id)",
    "sqlite": "(SELECT json_group_array(o.{column}) FROM (SELECT a.{column} FROM"
    " session_activities AS a WHERE a.marking_session_id = marking_sessions.id"
    " AND a.action = 'assessing' ORDER BY a.created_at, a.id) AS o)",
}


def upgrade() -> None:
    with op.batch_alter_table(SESSIONS) as batch:
        for name in LISTS:
            batch.add_column(sa.Column(name, IdList))
    of = LIST_OF[op.get_bind().dialect.name]
    sets = ", ".join(f"{name} = {of.format(column=column)}" for name, column in LISTS.items())
    op.execute(f"UPDATE {SESSIONS} SET {sets} WHERE assessments IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table(SESSIONS) as batch:
        for name in reversed(LISTS):
            batch.drop_column(name)
