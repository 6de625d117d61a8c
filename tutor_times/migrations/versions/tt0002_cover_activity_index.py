"""tutor_times: the (marking_session_id, created_at) index covers action and task ids

Reports count each session's assessments and read their tasks; on PostgreSQL the index
now carries those columns, so the counts are index-only scans instead of a scan of every
activity (benchmarks/README.md, B3).

Revision ID: tt0002
Revises: tt0001
Create Date: 2026-11-25
"""

from alembic import op

revision = "tt0002"
down_revision = "tt0001"
branch_labels = None
depends_on = None

NAME = "ix_session_activities_session_created"
COLUMNS = ["marking_session_id", "created_at"]
COVERED = ["action", "task_id", "task_definition_id"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # INCLUDE is PostgreSQL's; elsewhere the index stays as it was
    op.drop_index(NAME, table_name="session_activities")
    op.create_index(NAME, "session_activities", COLUMNS, postgresql_include=COVERED)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(NAME, table_name="session_activities")
    op.create_index(NAME, "session_activities", COLUMNS)
