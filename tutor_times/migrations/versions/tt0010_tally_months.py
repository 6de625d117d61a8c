"""tutor_times: the tasks report's tallies per month, each unit's number of keys

- ``tutor_times_assessed_months``: assessments and shares of minutes per unit, definition and
  UTC month (a year of the tasks report adds up twelve rows per definition, not 365);
- ``tutor_times_assessed_totals``: each unit's number of distinct tasks and tutors per
  definition, and an index of the keys by their last start: a range that reaches the unit's
  latest tallied session counts its keys as the totals less those last seen before it;
- an index of the summary's months by their longest block.

On PostgreSQL the tallies' function is replaced by one that keeps these too, and they are
filled from the sessions' lists and the keys, by statements of this revision's own.

Revision ID: tt0010
Revises: tt0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from tutor_times.migrations import functions_as_made_by

revision = "tt0010"
down_revision = "tt0009"
branch_labels = None
depends_on = None

MONTHS = "tutor_times_assessed_months"
TOTALS = "tutor_times_assessed_totals"
KEYS = "tutor_times_assessed_keys"
LAST = "ix_tutor_times_assessed_keys_last"
LONGEST = "ix_tutor_times_tutor_months_longest"

#: the tallies' functions as ``tutor_times/tallies.py`` declared them at this revision
CREATE = [
    """
CREATE OR REPLACE FUNCTION tutor_times_tally(gone marking_sessions[], came marking_sessions[])
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    removed tutor_times_assessed[];
    added tutor_times_assessed[];
BEGIN
    IF cardinality(gone) = 0 AND cardinality(came) = 0 THEN
        RETURN;
    END IF;
    -- the units' locks, in order, until the transaction ends
    PERFORM pg_advisory_xact_lock(hashtextextended('tutor_times_tally:' || u.unit_id, 0))
    FROM (SELECT DISTINCT s.unit_id FROM (SELECT g.unit_id FROM unnest(gone) AS g
                                          UNION SELECT c.unit_id FROM unnest(came) AS c) AS s
          ORDER BY s.unit_id) AS u;

    removed := ARRAY(
        SELECT CAST(o AS tutor_times_assessed) FROM unnest(gone) AS g, tutor_times_assessed_of(g) AS o);
    added := ARRAY(
        SELECT CAST(o AS tutor_times_assessed) FROM unnest(came) AS c, tutor_times_assessed_of(c) AS o);

    -- assessments and shares of minutes per day, and per month: signed differences, added
    INSERT INTO tutor_times_assessed_days AS d (unit_id, day, definition, assessments, minutes)
    SELECT s.unit_id, CAST(s.start_time AT TIME ZONE 'UTC' AS date), coalesce(l.definition, 0),
           sum(s.sign), sum(s.sign * (CAST(s.duration_minutes AS numeric) / CAST(s.assessments AS numeric)))
    FROM (SELECT g.*, -1 AS sign FROM unnest(gone) AS g UNION ALL SELECT c.*, 1 FROM unnest(came) AS c) AS s, unnest(s.assessed_definitions) AS l(definition)
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (unit_id, day, definition) DO UPDATE
        SET assessments = d.assessments + excluded.assessments,
            minutes = d.minutes + excluded.minutes;
    DELETE FROM tutor_times_assessed_days AS d
    USING (SELECT DISTINCT g.unit_id, CAST(g.start_time AT TIME ZONE 'UTC' AS date) AS day
           FROM unnest(gone) AS g) AS t
    WHERE d.unit_id = t.unit_id AND d.day = t.day AND d.assessments = 0;
    INSERT INTO tutor_times_assessed_months AS d (unit_id, month, definition, assessments, minutes)
    SELECT s.unit_id, CAST(date_trunc('month', s.start_time AT TIME ZONE 'UTC') AS date), coalesce(l.definition, 0),
           sum(s.sign), sum(s.sign * (CAST(s.duration_minutes AS numeric) / CAST(s.assessments AS numeric)))
    FROM (SELECT g.*, -1 AS sign FROM unnest(gone) AS g UNION ALL SELECT c.*, 1 FROM unnest(came) AS c) AS s, unnest(s.assessed_definitions) AS l(definition)
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (unit_id, month, definition) DO UPDATE
        SET assessments = d.assessments + excluded.assessments,
            minutes = d.minutes + excluded.minutes;
    DELETE FROM tutor_times_assessed_months AS d
    USING (SELECT DISTINCT g.unit_id, CAST(date_trunc('month', g.start_time AT TIME ZONE 'UTC') AS date) AS month
           FROM unnest(gone) AS g) AS t
    WHERE d.unit_id = t.unit_id AND d.month = t.month AND d.assessments = 0;

    -- occurrences
    DELETE FROM tutor_times_assessed WHERE session_id IN (SELECT g.id FROM unnest(gone) AS g);
    INSERT INTO tutor_times_assessed (session_id, unit_id, definition, kind, value, start_time)
    SELECT * FROM unnest(added);

    -- every key touched, present and locked, in key order: an added key gets its first
    -- start as its whole span; a present one is locked as it is. The keys added are
    -- counted in their unit's totals (a row an upsert inserted has no xmax yet)
    WITH touched AS (
        INSERT INTO tutor_times_assessed_keys AS k (unit_id, definition, kind, value, first_start, last_start, widest_gap)
        SELECT DISTINCT ON (unit_id, definition, kind, value) unit_id, definition, kind, value, start_time, start_time, interval '0'
        FROM (SELECT * FROM (SELECT * FROM unnest(added)) AS c UNION ALL SELECT * FROM (SELECT * FROM unnest(removed)) AS g) AS o
        ORDER BY unit_id, definition, kind, value, start_time
        ON CONFLICT (unit_id, definition, kind, value) DO UPDATE SET widest_gap = k.widest_gap
        RETURNING k.unit_id, k.definition, k.kind, k.xmax = 0 AS is_new)
    INSERT INTO tutor_times_assessed_totals AS t (unit_id, definition, kind, keys)
    SELECT unit_id, definition, kind, count(*) FROM touched WHERE is_new
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (unit_id, definition, kind) DO UPDATE SET keys = t.keys + excluded.keys;

    -- a key that lost an occurrence: counted again from the occurrences left
    UPDATE tutor_times_assessed_keys AS k
    SET first_start = r.first_start, last_start = r.last_start, widest_gap = r.widest_gap
    FROM (SELECT unit_id, definition, kind, value, min(start_time) AS first_start, max(start_time) AS last_start,
                 coalesce(max(gap), interval '0') AS widest_gap
          FROM (SELECT o.*, o.start_time - lag(o.start_time) OVER (
                           PARTITION BY unit_id, definition, kind, value ORDER BY o.start_time) AS gap
                FROM (SELECT * FROM tutor_times_assessed WHERE (unit_id, definition, kind, value) IN (SELECT unit_id, definition, kind, value FROM (SELECT * FROM unnest(removed)) AS g)) AS o) AS x
          GROUP BY unit_id, definition, kind, value) AS r
    WHERE k.unit_id = r.unit_id AND k.definition = r.definition AND k.kind = r.kind AND k.value = r.value;
    WITH dropped AS (
        DELETE FROM tutor_times_assessed_keys AS k
        WHERE (unit_id, definition, kind, value) IN (SELECT unit_id, definition, kind, value FROM (SELECT * FROM unnest(removed)) AS g)
          AND NOT EXISTS (SELECT FROM tutor_times_assessed AS o WHERE o.unit_id = k.unit_id AND o.definition = k.definition AND o.kind = k.kind AND o.value = k.value)
        RETURNING k.unit_id, k.definition, k.kind)
    UPDATE tutor_times_assessed_totals AS t SET keys = t.keys - d.n
    FROM (SELECT unit_id, definition, kind, count(*) AS n FROM dropped GROUP BY 1, 2, 3) AS d
    WHERE t.unit_id = d.unit_id AND t.definition = d.definition AND t.kind = d.kind;

    -- a key that only gained: widened by its added starts. Every gap the key now has is
    -- at most its widest gap before, a gap between two added starts, or the gap from its
    -- span to added starts all on one side of it: an upper bound, exact when the starts
    -- come after the key's last (a session closing), and for a key just added
    UPDATE tutor_times_assessed_keys AS k
    SET first_start = least(k.first_start, m.first_start),
        last_start = greatest(k.last_start, m.last_start),
        widest_gap = greatest(k.widest_gap, m.widest_gap, m.first_start - k.last_start,
                              k.first_start - m.last_start)
    FROM (SELECT unit_id, definition, kind, value, min(start_time) AS first_start, max(start_time) AS last_start,
                 coalesce(max(gap), interval '0') AS widest_gap
          FROM (SELECT o.*, o.start_time - lag(o.start_time) OVER (
                           PARTITION BY unit_id, definition, kind, value ORDER BY o.start_time) AS gap
                FROM (SELECT * FROM unnest(added)) AS o) AS x
          GROUP BY unit_id, definition, kind, value) AS m
    WHERE k.unit_id = m.unit_id AND k.definition = m.definition AND k.kind = m.kind AND k.value = m.value
      AND (k.unit_id, k.definition, k.kind, k.value) NOT IN (SELECT unit_id, definition, kind, value FROM (SELECT * FROM unnest(removed)) AS g);
END
$fn$
""",
    """
CREATE OR REPLACE FUNCTION tutor_times_tally_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN TRUNCATE tutor_times_assessed, tutor_times_assessed_keys, tutor_times_assessed_days, tutor_times_assessed_months, tutor_times_assessed_totals; RETURN NULL; END $fn$
""",
]

#: the new tallies from the sessions' lists and the keys
FILL = [
    """
INSERT INTO tutor_times_assessed_months (unit_id, month, definition, assessments, minutes)
    SELECT s.unit_id, CAST(date_trunc('month', s.start_time AT TIME ZONE 'UTC') AS date),
           coalesce(l.definition, 0), count(*), sum(CAST(s.duration_minutes AS numeric) / CAST(s.assessments AS numeric))
    FROM marking_sessions AS s, unnest(s.assessed_definitions) AS l(definition)
    WHERE coalesce(cardinality(s.assessed_definitions) = s.assessments AND cardinality(s.assessed_tasks) = s.assessments AND s.duration_minutes IS NOT NULL, false) AND s.assessments > 0
    GROUP BY 1, 2, 3
""",
    """
INSERT INTO tutor_times_assessed_totals (unit_id, definition, kind, keys)
    SELECT unit_id, definition, kind, count(*) FROM tutor_times_assessed_keys GROUP BY 1, 2, 3
""",
]


def _as_tt0008_made_them() -> list[str]:
    """The two functions this revision replaces, as tt0008 created them: a downgrade puts
    them back (read from tt0008's own frozen statements, not written out again)."""
    return functions_as_made_by(
        "tt0008_task_tallies.py", ("tutor_times_tally", "tutor_times_tally_truncate")
    )


def upgrade() -> None:
    op.create_table(
        MONTHS,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("definition", sa.BigInteger, nullable=False),
        sa.Column("assessments", sa.BigInteger, nullable=False),
        sa.Column("minutes", sa.Numeric, nullable=False),
        sa.PrimaryKeyConstraint(
            "unit_id", "month", "definition", postgresql_include=["assessments", "minutes"]
        ),
    )
    op.create_table(
        TOTALS,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("definition", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("keys", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("unit_id", "definition", "kind", postgresql_include=["keys"]),
    )
    op.create_index(
        LAST, KEYS, ["unit_id", "last_start"], postgresql_include=["definition", "kind"]
    )
    op.create_index(LONGEST, "tutor_times_tutor_months", ["unit_id", "longest"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in CREATE + FILL:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _as_tt0008_made_them():
            op.execute(statement)
    op.drop_index(LONGEST, table_name="tutor_times_tutor_months")
    op.drop_index(LAST, table_name=KEYS)
    op.drop_table(TOTALS)
    op.drop_table(MONTHS)
