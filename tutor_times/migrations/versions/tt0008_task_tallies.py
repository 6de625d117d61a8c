"""tutor_times: tallies the tasks report keeps per unit

- ``tutor_times_assessed``: each tallied session's distinct (definition, task) and
  (definition, marker) pairs with its start;
- ``tutor_times_assessed_keys``: per pair, its first and last start and widest gap;
- ``tutor_times_assessed_days``: assessments and shares of minutes per unit, definition and
  UTC day (see ``tutor_times/tallies.py``);
- ``ix_marking_sessions_untallied``: the sessions the tallies leave out (the open ones), which
  the tasks report reads itself.

On PostgreSQL the triggers on ``marking_sessions`` that keep them are created, and the
tallies filled from every closed session's stored lists. The functions are created as the
package at this revision declares them; a later revision that changes them replaces them.

Revision ID: tt0008
Revises: tt0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from tutor_times import tallies
from tutor_times.models import LISTS_AGREE, UTCDateTime

revision = "tt0008"
down_revision = "tt0007"
branch_labels = None
depends_on = None

SESSIONS = "marking_sessions"
UNTALLIED = "ix_marking_sessions_untallied"


def upgrade() -> None:
    op.create_table(
        tallies.ASSESSED,
        sa.Column("session_id", sa.BigInteger, nullable=False),
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("definition", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("start_time", UTCDateTime, nullable=False),
    )
    op.create_index(
        f"ix_{tallies.ASSESSED}_session_id", tallies.ASSESSED, ["session_id"], unique=False
    )
    op.create_index(
        "ix_tutor_times_assessed_key_start",
        tallies.ASSESSED,
        ["unit_id", "definition", "kind", "value", "start_time"],
    )
    op.create_table(
        tallies.KEYS,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("definition", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("first_start", UTCDateTime, nullable=False),
        sa.Column("last_start", UTCDateTime, nullable=False),
        sa.Column("widest_gap", sa.Interval, nullable=False),
        sa.PrimaryKeyConstraint(*tallies.KEY_COLUMNS, postgresql_include=list(tallies.KEY_FIGURES)),
    )
    op.create_table(
        tallies.DAYS,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("definition", sa.BigInteger, nullable=False),
        sa.Column("assessments", sa.BigInteger, nullable=False),
        sa.Column("minutes", sa.Numeric, nullable=False),
        sa.PrimaryKeyConstraint(*tallies.DAY_COLUMNS, postgresql_include=list(tallies.DAY_FIGURES)),
    )
    op.create_index(
        UNTALLIED,
        SESSIONS,
        ["unit_id", "start_time"],
        postgresql_where=sa.text(f"NOT {LISTS_AGREE}"),
        sqlite_where=sa.text("assessments IS NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in tallies.create_statements() + tallies.FILL:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in tallies.drop_statements():
            op.execute(statement)
    op.drop_index(UNTALLIED, table_name=SESSIONS)
    for table in (tallies.DAYS, tallies.KEYS, tallies.ASSESSED):
        op.drop_table(table)
