"""tutor_times: figures stored for reports at scale

- ``marking_sessions.assessments``: a closed session's assessments, counted when it closes
  or its activities change; NULL while open (reports count those live).
- ``tutor_times_blocks``: R10's merged blocks of each tutor's closed sessions in a unit, so
  a report over years sums blocks instead of merging every session again.
- The (unit_id, start_time) index of sessions covers what reports read (PostgreSQL), and a
  partial one finds a range's open sessions.

Existing data is counted and merged here, in SQL.

Revision ID: tt0006
Revises: tt0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "tt0006"
down_revision = "tt0005"
branch_labels = None
depends_on = None

BLOCKS = "tutor_times_blocks"
UNIT_START = "ix_marking_sessions_unit_start"
OPEN_UNIT_START = "ix_marking_sessions_open_unit_start"
COVERS = ["marker_id", "end_time", "assessments", "id"]

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

COUNT_ASSESSMENTS = """
UPDATE marking_sessions SET assessments = (
    SELECT count(*) FROM session_activities a
    WHERE a.marking_session_id = marking_sessions.id AND a.action = 'assessing')
WHERE end_time IS NOT NULL
"""

MERGE_BLOCKS = """
INSERT INTO tutor_times_blocks
    (unit_id, marker_id, first_start, last_start, end_time, reach_seconds)
SELECT unit_id, marker_id, min(start_time), max(start_time), max(end_time), {reach}
FROM (
    SELECT unit_id, marker_id, start_time, end_time,
           sum(starts) OVER (PARTITION BY unit_id, marker_id
                             ORDER BY start_time, end_time, id ROWS UNBOUNDED PRECEDING) AS block
    FROM (
        SELECT id, unit_id, marker_id, start_time, end_time,
               CASE WHEN start_time <= max(end_time) OVER (
                        PARTITION BY unit_id, marker_id ORDER BY start_time, end_time, id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                    THEN 0 ELSE 1 END AS starts
        FROM marking_sessions WHERE end_time IS NOT NULL
    ) AS flagged
) AS numbered
GROUP BY unit_id, marker_id, block
"""

REACH = {
    "postgresql": "CAST(ceil(extract(epoch FROM max(end_time) - min(start_time))) AS BIGINT)",
    "sqlite": "CAST((julianday(max(end_time)) - julianday(min(start_time))) * 86400 + 1"
    " AS INTEGER)",
}


def upgrade() -> None:
    with op.batch_alter_table("marking_sessions") as batch:
        batch.add_column(sa.Column("assessments", sa.Integer))
    op.create_table(
        BLOCKS,
        sa.Column("id", BigId, primary_key=True),
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("marker_id", sa.BigInteger, nullable=False),
        sa.Column("first_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reach_seconds", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_tutor_times_blocks_unit_first",
        BLOCKS,
        ["unit_id", "first_start"],
        postgresql_include=["marker_id", "last_start", "end_time"],
    )
    op.create_index(
        "ix_tutor_times_blocks_tutor_first", BLOCKS, ["marker_id", "unit_id", "first_start"]
    )
    op.create_index("ix_tutor_times_blocks_reach", BLOCKS, ["reach_seconds"])
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(UNIT_START, table_name="marking_sessions")
        op.create_index(
            UNIT_START, "marking_sessions", ["unit_id", "start_time"], postgresql_include=COVERS
        )
    op.create_index(
        OPEN_UNIT_START,
        "marking_sessions",
        ["unit_id", "start_time"],
        postgresql_where=sa.text("end_time IS NULL"),
        sqlite_where=sa.text("end_time IS NULL"),
    )
    op.execute(COUNT_ASSESSMENTS)
    op.execute(MERGE_BLOCKS.format(reach=REACH.get(op.get_bind().dialect.name, REACH["sqlite"])))


def downgrade() -> None:
    op.drop_index(OPEN_UNIT_START, table_name="marking_sessions")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(UNIT_START, table_name="marking_sessions")
        op.create_index(UNIT_START, "marking_sessions", ["unit_id", "start_time"])
    op.drop_table(BLOCKS)
    with op.batch_alter_table("marking_sessions") as batch:
        batch.drop_column("assessments")
