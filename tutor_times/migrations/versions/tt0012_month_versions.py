"""tutor_times: a version of each unit's month, and the months known to agree

- ``tutor_times_month_versions``: per (unit, UTC month), a version the summary's roll-up
  gives the month whenever a statement changes its rows (the next value of the sequence
  ``tutor_times_month_version``: never one given before);
- ``tutor_times_class_checked``: per (unit, month), the version at which every tutor's
  stored R12 split of the month agreed, and the fingerprint of the classes it agreed with
  (see ``tutor_times/class_store.py``): a report checks a month from these two rows rather
  than from each tutor's.

On PostgreSQL the roll-up's function is replaced by one that keeps the versions too (and
its truncate by one that empties them), and each month the roll-up has gets a version, by
statements of this revision's own.

Revision ID: tt0012
Revises: tt0011
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

from tutor_times.migrations import functions_as_made_by

revision = "tt0012"
down_revision = "tt0011"
branch_labels = None
depends_on = None

VERSIONS = "tutor_times_month_versions"
CHECKED = "tutor_times_class_checked"
SEQUENCE = "tutor_times_month_version"

#: the roll-up's functions as ``tutor_times/rollups.py`` declared them at this revision
CREATE = [
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
    -- every (unit, month) whose rows this statement changed: a version never given before
    INSERT INTO tutor_times_month_versions AS v (unit_id, month, version)
    SELECT t.unit_id, t.month, nextval('tutor_times_month_version')
    FROM (SELECT DISTINCT s.unit_id, CAST(date_trunc('month', s.start_time AT TIME ZONE 'UTC') AS date) AS month FROM (SELECT g.*, -1 AS sign FROM unnest(gone) AS g UNION ALL SELECT c.*, 1 FROM unnest(came) AS c) AS s) AS t
    ORDER BY 1, 2
    ON CONFLICT (unit_id, month) DO UPDATE SET version = excluded.version;
END
$fn$
""",
    """
CREATE OR REPLACE FUNCTION tutor_times_roll_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN TRUNCATE tutor_times_tutor_months, tutor_times_month_versions; RETURN NULL; END $fn$
""",
]

#: a version for each month the roll-up has
FILL = [
    """
INSERT INTO tutor_times_month_versions (unit_id, month, version)
    SELECT t.unit_id, t.month, nextval('tutor_times_month_version')
    FROM (SELECT DISTINCT unit_id, month FROM tutor_times_tutor_months) AS t
""",
]


def _as_tt0009_made_them() -> list[str]:
    """The two functions this revision replaces, as tt0009 created them: a downgrade puts
    them back (read from tt0009's own frozen statements, not written out again)."""
    return functions_as_made_by(
        "tt0009_tutor_months.py", ("tutor_times_roll", "tutor_times_roll_truncate")
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(f"CREATE SEQUENCE {SEQUENCE}")
    op.create_table(
        VERSIONS,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("unit_id", "month", postgresql_include=["version"]),
    )
    op.create_table(
        CHECKED,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("version", sa.BigInteger),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("unit_id", "month", postgresql_include=["version", "fingerprint"]),
    )
    if postgres:
        for statement in CREATE + FILL:
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        for statement in _as_tt0009_made_them():
            op.execute(statement)
    op.drop_table(CHECKED)
    op.drop_table(VERSIONS)
    if postgres:
        op.execute(f"DROP SEQUENCE {SEQUENCE}")
