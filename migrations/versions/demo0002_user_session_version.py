"""users.session_version: logging out ends every session of the user

Revision ID: demo0002
Revises: demo0001
Create Date: 2026-11-25

"""

import sqlalchemy as sa
from alembic import op

revision = "demo0002"
down_revision = "demo0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(
            sa.Column("session_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("session_version")
