"""tutor_times: who reported an activity, a CHECK that NULL cannot slip through, and the
index that finds a key's neighbouring sessions by start time

- ``session_activities.source``: "server" for tracked host endpoints and the service API,
  "client" for what a client reports itself (POST /activities), so reports can tell them
  apart. Existing rows were all tracked by the server.
- ``ck_marking_sessions_closed_duration`` let a closed session without a duration in: the
  old expression evaluated to NULL for it, and a CHECK passes on NULL.
- ``ix_marking_sessions_key_start``: placing a late activity looks up the sessions of its
  key just before and after it.

Revision ID: tt0003
Revises: tt0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "tt0003"
down_revision = "tt0002"
branch_labels = None
depends_on = None

CHECK = "ck_marking_sessions_closed_duration"
OLD_CHECK = "end_time IS NULL OR (duration_minutes > 0 AND end_time >= start_time)"
NEW_CHECK = (
    "(end_time IS NULL AND duration_minutes IS NULL)"
    " OR (end_time IS NOT NULL AND duration_minutes IS NOT NULL"
    " AND duration_minutes > 0 AND end_time >= start_time)"
)
KEY_START = "ix_marking_sessions_key_start"


def _replace_check(expression: str) -> None:
    # batch mode: SQLite cannot alter a constraint in place, so the table is copied
    with op.batch_alter_table("marking_sessions") as batch:
        batch.drop_constraint(CHECK, type_="check")
        batch.create_check_constraint(CHECK, expression)


def upgrade() -> None:
    with op.batch_alter_table("session_activities") as batch:
        batch.add_column(
            sa.Column("source", sa.String(16), nullable=False, server_default="server")
        )
    _replace_check(NEW_CHECK)
    op.create_index(
        KEY_START, "marking_sessions", ["marker_id", "unit_id", "ip_address", "start_time"]
    )


def downgrade() -> None:
    op.drop_index(KEY_START, table_name="marking_sessions")
    _replace_check(OLD_CHECK)
    with op.batch_alter_table("session_activities") as batch:
        batch.drop_column("source")
