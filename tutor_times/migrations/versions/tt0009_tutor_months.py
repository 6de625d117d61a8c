"""tutor_times: the summary's roll-up of each tutor's months in a unit

- ``tutor_times_tutor_months``: per (unit, UTC month of the session start, tutor), the
  sessions with figures, their assessments (and those not stored), the minutes of the R10
  blocks that start there under each minimum up to ten, and an upper bound on how long
  those blocks last (see ``tutor_times/rollups.py``).

On PostgreSQL the triggers on ``marking_sessions`` that keep it are created, and the rows
filled from every session's stored figures, by statements of this revision's own, so that
later changes to the package never change what this revision did.

Revision ID: tt0009
Revises: tt0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "tt0009"
down_revision = "tt0008"
branch_labels = None
depends_on = None

MONTHS = "tutor_times_tutor_months"

#: the functions and triggers that keep the rows, as ``tutor_times/rollups.py`` declared
#: them at this revision
CREATE = [
    """
CREATE OR REPLACE FUNCTION tutor_times_added(a bigint[], b bigint[])
RETURNS bigint[] LANGUAGE sql IMMUTABLE AS $fn$
    SELECT array_agg(x + y ORDER BY i) FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$fn$
""",
    """
CREATE OR REPLACE FUNCTION tutor_times_roll(gone marking_sessions[], came marking_sessions[])
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF cardinality(gone) = 0 AND cardinality(came) = 0 THEN
        RETURN;
    END IF;
    -- the units' locks, in order, until the transaction ends
    PERFORM pg_advisory_xact_lock(hashtextextended('tutor_times_tally:' || u.unit_id, 0))
    FROM (SELECT DISTINCT s.unit_id FROM (SELECT g.unit_id FROM unnest(gone) AS g
                                          UNION SELECT c.unit_id FROM unnest(came) AS c) AS s
          ORDER BY s.unit_id) AS u;

    INSERT INTO tutor_times_tutor_months AS m (unit_id, month, marker_id, sessions, assessments, uncounted, credited, longest)
    SELECT s.unit_id, CAST(date_trunc('month', s.start_time AT TIME ZONE 'UTC') AS date), s.marker_id, sum(s.sign),
           coalesce(sum(s.sign * s.assessments), 0),
           coalesce(sum(s.sign) FILTER (WHERE s.assessments IS NULL), 0),
           ARRAY[coalesce(sum(s.sign * greatest(s.block_minutes, 1)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(s.sign * greatest(s.block_minutes, 2)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(s.sign * greatest(s.block_minutes, 3)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(s.sign * greatest(s.block_minutes, 4)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(s.sign * greatest(s.block_minutes, 5)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(s.sign * greatest(s.block_minutes, 6)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(s.sign * greatest(s.block_minutes, 7)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(s.sign * greatest(s.block_minutes, 8)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(s.sign * greatest(s.block_minutes, 9)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(s.sign * greatest(s.block_minutes, 10)) FILTER (WHERE s.block_minutes IS NOT NULL), 0)],
           max(s.block_end - s.block_start) FILTER (WHERE s.block_minutes IS NOT NULL)
    FROM (SELECT g.*, -1 AS sign FROM unnest(gone) AS g UNION ALL SELECT c.*, 1 FROM unnest(came) AS c) AS s
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (unit_id, month, marker_id) DO UPDATE
        SET sessions = m.sessions + excluded.sessions,
            assessments = m.assessments + excluded.assessments,
            uncounted = m.uncounted + excluded.uncounted,
            credited = tutor_times_added(m.credited, excluded.credited),
            -- an upper bound: a block taken away leaves it as it was
            longest = greatest(m.longest, excluded.longest);
    DELETE FROM tutor_times_tutor_months AS m
    USING (SELECT DISTINCT g.unit_id, CAST(date_trunc('month', g.start_time AT TIME ZONE 'UTC') AS date) AS month, g.marker_id
           FROM unnest(gone) AS g) AS t
    WHERE m.unit_id = t.unit_id AND m.month = t.month AND m.marker_id = t.marker_id
      AND m.sessions = 0;
END
$fn$
""",
    """
CREATE OR REPLACE FUNCTION tutor_times_roll_insert() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN PERFORM tutor_times_roll(ARRAY[]::marking_sessions[], ARRAY(SELECT CAST(n AS marking_sessions) FROM tt_new AS n WHERE n.block_start IS NOT NULL)); RETURN NULL; END $fn$
""",
    """
DROP TRIGGER IF EXISTS tutor_times_roll_insert ON marking_sessions
""",
    """
CREATE TRIGGER tutor_times_roll_insert AFTER INSERT ON marking_sessions REFERENCING NEW TABLE AS tt_new FOR EACH STATEMENT EXECUTE FUNCTION tutor_times_roll_insert()
""",
    """
CREATE OR REPLACE FUNCTION tutor_times_roll_update() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN PERFORM tutor_times_roll(ARRAY(SELECT CAST(o AS marking_sessions) FROM tt_old AS o JOIN tt_new AS n USING (id) WHERE o.block_start IS NOT NULL AND (NOT (n.block_start IS NOT NULL) OR ROW(o.unit_id, o.marker_id, o.start_time, o.assessments, o.block_start, o.block_end, o.block_minutes) IS DISTINCT FROM ROW(n.unit_id, n.marker_id, n.start_time, n.assessments, n.block_start, n.block_end, n.block_minutes))), ARRAY(SELECT CAST(n AS marking_sessions) FROM tt_old AS o JOIN tt_new AS n USING (id) WHERE n.block_start IS NOT NULL AND (NOT (o.block_start IS NOT NULL) OR ROW(o.unit_id, o.marker_id, o.start_time, o.assessments, o.block_start, o.block_end, o.block_minutes) IS DISTINCT FROM ROW(n.unit_id, n.marker_id, n.start_time, n.assessments, n.block_start, n.block_end, n.block_minutes)))); RETURN NULL; END $fn$
""",
    """
DROP TRIGGER IF EXISTS tutor_times_roll_update ON marking_sessions
""",
    """
CREATE TRIGGER tutor_times_roll_update AFTER UPDATE ON marking_sessions REFERENCING OLD TABLE AS tt_old NEW TABLE AS tt_new FOR EACH STATEMENT EXECUTE FUNCTION tutor_times_roll_update()
""",
    """
CREATE OR REPLACE FUNCTION tutor_times_roll_delete() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN PERFORM tutor_times_roll(ARRAY(SELECT CAST(o AS marking_sessions) FROM tt_old AS o WHERE o.block_start IS NOT NULL), ARRAY[]::marking_sessions[]); RETURN NULL; END $fn$
""",
    """
DROP TRIGGER IF EXISTS tutor_times_roll_delete ON marking_sessions
""",
    """
CREATE TRIGGER tutor_times_roll_delete AFTER DELETE ON marking_sessions REFERENCING OLD TABLE AS tt_old FOR EACH STATEMENT EXECUTE FUNCTION tutor_times_roll_delete()
""",
    """
CREATE OR REPLACE FUNCTION tutor_times_roll_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN TRUNCATE tutor_times_tutor_months; RETURN NULL; END $fn$
""",
    """
DROP TRIGGER IF EXISTS tutor_times_roll_truncate ON marking_sessions
""",
    """
CREATE TRIGGER tutor_times_roll_truncate AFTER TRUNCATE ON marking_sessions  FOR EACH STATEMENT EXECUTE FUNCTION tutor_times_roll_truncate()
""",
]

#: every session's rows from its stored figures
FILL = [
    """
INSERT INTO tutor_times_tutor_months (unit_id, month, marker_id, sessions, assessments, uncounted, credited, longest)
    SELECT s.unit_id, CAST(date_trunc('month', s.start_time AT TIME ZONE 'UTC') AS date), s.marker_id, sum(1),
           coalesce(sum(1 * s.assessments), 0),
           coalesce(sum(1) FILTER (WHERE s.assessments IS NULL), 0),
           ARRAY[coalesce(sum(1 * greatest(s.block_minutes, 1)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(1 * greatest(s.block_minutes, 2)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(1 * greatest(s.block_minutes, 3)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(1 * greatest(s.block_minutes, 4)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(1 * greatest(s.block_minutes, 5)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(1 * greatest(s.block_minutes, 6)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(1 * greatest(s.block_minutes, 7)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(1 * greatest(s.block_minutes, 8)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(1 * greatest(s.block_minutes, 9)) FILTER (WHERE s.block_minutes IS NOT NULL), 0), coalesce(sum(1 * greatest(s.block_minutes, 10)) FILTER (WHERE s.block_minutes IS NOT NULL), 0)],
           max(s.block_end - s.block_start) FILTER (WHERE s.block_minutes IS NOT NULL)
    FROM marking_sessions AS s WHERE s.block_start IS NOT NULL
    GROUP BY 1, 2, 3
""",
]

DROP = [
    "DROP TRIGGER IF EXISTS tutor_times_roll_insert ON marking_sessions",
    "DROP FUNCTION IF EXISTS tutor_times_roll_insert()",
    "DROP TRIGGER IF EXISTS tutor_times_roll_update ON marking_sessions",
    "DROP FUNCTION IF EXISTS tutor_times_roll_update()",
    "DROP TRIGGER IF EXISTS tutor_times_roll_delete ON marking_sessions",
    "DROP FUNCTION IF EXISTS tutor_times_roll_delete()",
    "DROP TRIGGER IF EXISTS tutor_times_roll_truncate ON marking_sessions",
    "DROP FUNCTION IF EXISTS tutor_times_roll_truncate()",
    "DROP FUNCTION IF EXISTS tutor_times_roll(marking_sessions[], marking_sessions[])",
    "DROP FUNCTION IF EXISTS tutor_times_added(bigint[], bigint[])",
]


def upgrade() -> None:
    op.create_table(
        MONTHS,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("marker_id", sa.BigInteger, nullable=False),
        sa.Column("sessions", sa.BigInteger, nullable=False),
        sa.Column("assessments", sa.BigInteger, nullable=False),
        sa.Column("uncounted", sa.BigInteger, nullable=False),
        sa.Column(
            "credited", sa.ARRAY(sa.BigInteger).with_variant(sa.Text, "sqlite"), nullable=False
        ),
        sa.Column("longest", sa.Interval),
        sa.PrimaryKeyConstraint(
            "unit_id",
            "month",
            "marker_id",
            postgresql_include=["sessions", "assessments", "uncounted", "credited", "longest"],
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in CREATE + FILL:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in DROP:
            op.execute(statement)
    op.drop_table(MONTHS)
