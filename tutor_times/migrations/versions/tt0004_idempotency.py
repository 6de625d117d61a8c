"""tutor_times: idempotency keys, and the worker's jobs (its heartbeat and daily retention)

- ``tutor_times_idempotency_keys``: the first answer to each (scope, user, key), so a retried
  request stores nothing new and gets that answer again; rows expire after
  TUTOR_TIMES_IDEMPOTENCY_TTL.
- ``tutor_times_jobs``: one row per recurring job. The worker's heartbeat lives in SQL so that
  ``/health`` can read it with Redis down; the retention job's row is a lease, so two workers
  never purge at once.

Revision ID: tt0004
Revises: tt0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "tt0004"
down_revision = "tt0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tutor_times_idempotency_keys",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("user_id", sa.BigInteger, primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("body", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_tutor_times_idempotency_keys_created_at",
        "tutor_times_idempotency_keys",
        ["created_at"],
    )
    op.create_table(
        "tutor_times_jobs",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holder", sa.String(128)),
    )


def downgrade() -> None:
    op.drop_table("tutor_times_jobs")
    op.drop_index(
        "ix_tutor_times_idempotency_keys_created_at", table_name="tutor_times_idempotency_keys"
    )
    op.drop_table("tutor_times_idempotency_keys")
