"""tutor_times: figures kept on each closed session for reports over long ranges

- ``marking_sessions.assessments``: the session's assessing activities.
- ``marking_sessions.block_start``, ``block_last_start``, ``block_end``, ``block_minutes``:
  the R10 block of its tutor's closed sessions in the unit that the session belongs to, and
  the block's whole minutes on its first session (see ``tutor_times/figures.py``).
- ``ix_marking_sessions_unit_start`` covers what a report reads on PostgreSQL;
  ``ix_marking_sessions_tutor_block_end`` finds a tutor's blocks that reach a time;
  ``ix_marking_sessions_unfigured`` finds the sessions without figures (the open ones).

Every closed session's figures are computed on upgrade, by one statement of this
revision's own (SQLite 3.33 or later for UPDATE … FROM), so that later changes to the
package never change what this revision did.

Revision ID: tt0006
Revises: tt0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from tutor_times.store.models import UTCDateTime

revision = "tt0006"
down_revision = "tt0005"
branch_labels = None
depends_on = None

SESSIONS = "marking_sessions"
UNIT_START = "ix_marking_sessions_unit_start"
BLOCK_END = "ix_marking_sessions_tutor_block_end"
UNFIGURED = "ix_marking_sessions_unfigured"
TIMES = ("block_start", "block_last_start", "block_end")
COVERED = ["id", "marker_id", "assessments", *TIMES, "block_minutes"]

#: whole minutes from ``first`` to ``ends``: PostgreSQL's epoch arithmetic is exact;
#: SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff', so the whole seconds (read without their
#: fraction, which SQLite's time functions round to milliseconds) plus the microseconds


def _micros(t: str) -> str:
    """Microseconds since 1970 of a time SQLite keeps as text."""
    seconds = f"CAST(strftime('%s', substr({t}, 1, 19)) AS INTEGER)"
    return f"({seconds} * 1000000 + CAST(substr({t}, 21, 6) AS INTEGER))"


MINUTES = {
    "postgresql": "floor(extract(epoch FROM b.ends - b.first) / 60)::integer",
    "sqlite": f"({_micros('b.ends')} - {_micros('b.first')}) / 60000000",
}

#: R10's walk over each tutor's closed sessions in a unit, in start order: a session starts
#: a block unless it starts at or before the latest end before it
FIGURES = """
WITH s AS (
    SELECT id, unit_id, marker_id, start_time AS st, end_time AS en,
           max(end_time) OVER (PARTITION BY unit_id, marker_id
                               ORDER BY start_time, end_time, id
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
    FROM marking_sessions WHERE end_time IS NOT NULL
), numbered AS (
    SELECT *, sum(CASE WHEN st <= before THEN 0 ELSE 1 END)
                  OVER (PARTITION BY unit_id, marker_id ORDER BY st, en, id
                        ROWS UNBOUNDED PRECEDING) AS block,
              row_number() OVER (PARTITION BY unit_id, marker_id ORDER BY st, en, id) AS n
    FROM s
), b AS (
    SELECT id, n, min(st) OVER k AS first, max(st) OVER k AS last, max(en) OVER k AS ends,
           min(n) OVER k AS head
    FROM numbered WINDOW k AS (PARTITION BY unit_id, marker_id, block)
)
UPDATE marking_sessions
SET block_start = b.first, block_last_start = b.last, block_end = b.ends,
    block_minutes = CASE WHEN b.n = b.head THEN {minutes} END,
    assessments = (SELECT count(*) FROM session_activities AS a
                   WHERE a.marking_session_id = marking_sessions.id
                     AND a.action = 'assessing')
FROM b WHERE marking_sessions.id = b.id
"""


def upgrade() -> None:
    with op.batch_alter_table(SESSIONS) as batch:
        batch.add_column(sa.Column("assessments", sa.Integer))
        for name in TIMES:
            batch.add_column(sa.Column(name, UTCDateTime))
        batch.add_column(sa.Column("block_minutes", sa.Integer))
    op.drop_index(UNIT_START, table_name=SESSIONS)
    op.create_index(UNIT_START, SESSIONS, ["unit_id", "start_time"], postgresql_include=COVERED)
    op.create_index(
        UNFIGURED,
        SESSIONS,
        ["unit_id", "start_time"],
        postgresql_where=sa.text("block_start IS NULL"),
        sqlite_where=sa.text("block_start IS NULL"),
    )
    op.create_index(BLOCK_END, SESSIONS, ["unit_id", "marker_id", "block_end"])
    bind = op.get_bind()
    op.execute(FIGURES.format(minutes=MINUTES[bind.dialect.name]))


def downgrade() -> None:
    op.drop_index(BLOCK_END, table_name=SESSIONS)
    op.drop_index(UNFIGURED, table_name=SESSIONS)
    op.drop_index(UNIT_START, table_name=SESSIONS)
    op.create_index(UNIT_START, SESSIONS, ["unit_id", "start_time"])
    with op.batch_alter_table(SESSIONS) as batch:
        for name in ("block_minutes", *reversed(TIMES), "assessments"):
            batch.drop_column(name)
