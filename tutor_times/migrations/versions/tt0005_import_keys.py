"""tutor_times: a source key on imported activities

- ``session_activities.import_key``: where an imported activity came from (a file's identity
  and line number, or a column of the source), unique, so importing the same rows twice — or
  resuming an import killed mid-file — adds nothing twice. NULL for live activities, which
  the unique index does not compare.

Revision ID: tt0005
Revises: tt0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "tt0005"
down_revision = "tt0004"
branch_labels = None
depends_on = None

INDEX = "uq_session_activities_import_key"


def upgrade() -> None:
    with op.batch_alter_table("session_activities") as batch:
        batch.add_column(sa.Column("import_key", sa.String(200)))
    op.create_index(INDEX, "session_activities", ["import_key"], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="session_activities")
    with op.batch_alter_table("session_activities") as batch:
        batch.drop_column("import_key")
