"""tutor_times: figures kept on each closed session for reports over long ranges

- ``marking_sessions.assessments``: the session's assessing activities.
- ``marking_sessions.block_start``, ``block_last_start``, ``block_end``, ``block_minutes``:
  the R10 block of its tutor's closed sessions in the unit that the session belongs to, and
  the block's whole minutes on its first session (see ``tutor_times/figures.py``).
- ``ix_marking_sessions_unit_start`` covers what a report reads on PostgreSQL;
  ``ix_marking_sessions_tutor_block_end`` finds a tutor's blocks that reach a time.

Every closed session's figures are computed on upgrade.

Revision ID: tt0006
Revises: tt0005
Create Date: 2026-12-03
"""

from types import SimpleNamespace

import sqlalchemy as sa
from alembic import op

from tutor_times import figures
from tutor_times.models import REPORTED, UTCDateTime

revision = "tt0006"
down_revision = "tt0005"
branch_labels = None
depends_on = None

UNIT_START = "ix_marking_sessions_unit_start"
BLOCK_END = "ix_marking_sessions_tutor_block_end"
TIMES = ("block_start", "block_last_start", "block_end")


def upgrade() -> None:
    with op.batch_alter_table("marking_sessions") as batch:
        batch.add_column(sa.Column("assessments", sa.Integer))
        for name in TIMES:
            batch.add_column(sa.Column(name, UTCDateTime))
        batch.add_column(sa.Column("block_minutes", sa.Integer))
    op.drop_index(UNIT_START, table_name="marking_sessions")
    op.create_index(
        UNIT_START,
        "marking_sessions",
        ["unit_id", "start_time"],
        postgresql_include=list(REPORTED),
    )
    op.create_index(BLOCK_END, "marking_sessions", ["unit_id", "marker_id", "block_end"])
    figures.refresh_all(op.get_bind(), _models())


def downgrade() -> None:
    op.drop_index(BLOCK_END, table_name="marking_sessions")
    op.drop_index(UNIT_START, table_name="marking_sessions")
    op.create_index(UNIT_START, "marking_sessions", ["unit_id", "start_time"])
    with op.batch_alter_table("marking_sessions") as batch:
        for name in reversed(figures.FIGURES):
            batch.drop_column(name)


def _models() -> SimpleNamespace:
    """The two tables as this revision leaves them, shaped as ``figures`` reads models."""
    meta = sa.MetaData()
    sessions = sa.Table(
        "marking_sessions",
        meta,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("marker_id", sa.BigInteger),
        sa.Column("unit_id", sa.BigInteger),
        sa.Column("start_time", UTCDateTime),
        sa.Column("end_time", UTCDateTime),
        sa.Column("assessments", sa.Integer),
        *(sa.Column(name, UTCDateTime) for name in TIMES),
        sa.Column("block_minutes", sa.Integer),
    )
    activities = sa.Table(
        "session_activities",
        meta,
        sa.Column("marking_session_id", sa.BigInteger),
        sa.Column("action", sa.String(64)),
    )

    def shaped(table: sa.Table) -> SimpleNamespace:
        return SimpleNamespace(__table__=table, **{c.name: c for c in table.c})

    return SimpleNamespace(MarkingSession=shaped(sessions), SessionActivity=shaped(activities))
