"""tutor_times: tallies the tasks report keeps per unit

- ``tutor_times_assessed``: each tallied session's distinct (definition, task) and
  (definition, marker) pairs with its start;
- ``tutor_times_assessed_keys``: per pair, its first and last start and widest gap;
- ``tutor_times_assessed_days``: assessments and shares of minutes per unit, definition and
  UTC day (see ``tutor_times/tallies.py``);
- ``ix_marking_sessions_untallied``: the sessions the tallies leave out (the open ones), which
  the tasks report reads itself.

On PostgreSQL the triggers on ``marking_sessions`` that keep them are created, and the
tallies filled from every closed session's stored lists, by statements of this revision's
own, so that later changes to the package never change what this revision did.

Revision ID: tt0008
Revises: tt0007
Create Date: 2026-12-06
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from tutor_times.store.models import UTCDateTime

revision = "tt0008"
down_revision = "tt0007"
branch_labels = None
depends_on = None

SESSIONS = "marking_sessions"
ASSESSED = "tutor_times_assessed"
KEYS = "tutor_times_assessed_keys"
DAYS = "tutor_times_assessed_days"
UNTALLIED = "ix_marking_sessions_untallied"

#: the sessions the tallies leave out, as ``tallies.KEPT`` said at this revision
LISTS_AGREE = "coalesce(cardinality(assessed_definitions) = assessments AND cardinality(assessed_tasks) = assessments AND duration_minutes IS NOT NULL, false)"

#: the functions and triggers that keep the tallies, as ``tutor_times/tallies.py`` declared
#: them at this revision
CREATE = [
    """
CREATE OR REPLACE FUNCTION tutor_times_assessed_of(ms marking_sessions)
RETURNS TABLE (session_id bigint, unit_id bigint, definition bigint, kind smallint,
               value bigint, start_time timestamptz)
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT DISTINCT ms.id, ms.unit_id, coalesce(l.definition, 0), k.kind,
           CASE k.kind WHEN 0 THEN l.task ELSE ms.marker_id END, ms.start_time
    FROM unnest(ms.assessed_definitions, ms.assessed_tasks) AS l(definition, task),
         (VALUES (CAST(0 AS smallint)), (CAST(1 AS smallint))) AS k(kind)
    WHERE k.kind = 1 OR l.task IS NOT NULL
$fn$
""",
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
    removed := ARRAY(
        SELECT CAST(o AS tutor_times_assessed) FROM unnest(gone) AS g, tutor_times_assessed_of(g) AS o);
    added := ARRAY(
        SELECT CAST(o AS tutor_times_assessed) FROM unnest(came) AS c, tutor_times_assessed_of(c) AS o);

    -- the units' locks, in order, until the transaction ends
    PERFORM pg_advisory_xact_lock(hashtextextended('tutor_times_tally:' || u.unit_id, 0))
    FROM (SELECT DISTINCT s.unit_id FROM (SELECT g.unit_id FROM unnest(gone) AS g
                                          UNION SELECT c.unit_id FROM unnest(came) AS c) AS s
          ORDER BY s.unit_id) AS u;

    -- assessments and shares of minutes per day: signed differences, added
    INSERT INTO tutor_times_assessed_days AS d (unit_id, day, definition, assessments, minutes)
    SELECT s.unit_id, CAST(s.start_time AT TIME ZONE 'UTC' AS date),
           coalesce(l.definition, 0), sum(s.sign),
           sum(s.sign * (CAST(s.duration_minutes AS numeric) / CAST(s.assessments AS numeric)))
    FROM (SELECT g.*, -1 AS sign FROM unnest(gone) AS g
          UNION ALL SELECT c.*, 1 FROM unnest(came) AS c) AS s,
         unnest(s.assessed_definitions) AS l(definition)
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (unit_id, day, definition) DO UPDATE
        SET assessments = d.assessments + excluded.assessments,
            minutes = d.minutes + excluded.minutes;
    DELETE FROM tutor_times_assessed_days AS d
    USING (SELECT DISTINCT g.unit_id, CAST(g.start_time AT TIME ZONE 'UTC' AS date) AS day
           FROM unnest(gone) AS g) AS t
    WHERE d.unit_id = t.unit_id AND d.day = t.day AND d.assessments = 0;

    -- occurrences
    DELETE FROM tutor_times_assessed WHERE session_id IN (SELECT g.id FROM unnest(gone) AS g);
    INSERT INTO tutor_times_assessed (session_id, unit_id, definition, kind, value, start_time)
    SELECT * FROM unnest(added);

    -- every key touched, present and locked, in key order: an added key gets its first
    -- start as its whole span; a present one is locked as it is
    INSERT INTO tutor_times_assessed_keys AS k (unit_id, definition, kind, value, first_start, last_start, widest_gap)
    SELECT DISTINCT ON (unit_id, definition, kind, value) unit_id, definition, kind, value, start_time, start_time, interval '0'
    FROM (SELECT * FROM (SELECT * FROM unnest(added)) AS c UNION ALL SELECT * FROM (SELECT * FROM unnest(removed)) AS g) AS o
    ORDER BY unit_id, definition, kind, value, start_time
    ON CONFLICT (unit_id, definition, kind, value) DO UPDATE SET widest_gap = k.widest_gap;

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
    DELETE FROM tutor_times_assessed_keys AS k
    WHERE (unit_id, definition, kind, value) IN (SELECT unit_id, definition, kind, value FROM (SELECT * FROM unnest(removed)) AS g)
      AND NOT EXISTS (SELECT FROM tutor_times_assessed AS o WHERE o.unit_id = k.unit_id AND o.definition = k.definition AND o.kind = k.kind AND o.value = k.value);

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
CREATE OR REPLACE FUNCTION tutor_times_tally_insert() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN PERFORM tutor_times_tally(ARRAY[]::marking_sessions[], ARRAY(SELECT CAST(n AS marking_sessions) FROM tt_new AS n WHERE coalesce(cardinality(n.assessed_definitions) = n.assessments AND cardinality(n.assessed_tasks) = n.assessments AND n.duration_minutes IS NOT NULL, false) AND n.assessments > 0)); RETURN NULL; END $fn$
""",
    """
DROP TRIGGER IF EXISTS tutor_times_tally_insert ON marking_sessions
""",
    """
CREATE TRIGGER tutor_times_tally_insert AFTER INSERT ON marking_sessions REFERENCING NEW TABLE AS tt_new FOR EACH STATEMENT EXECUTE FUNCTION tutor_times_tally_insert()
""",
    """
CREATE OR REPLACE FUNCTION tutor_times_tally_update() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN PERFORM tutor_times_tally(ARRAY(SELECT CAST(o AS marking_sessions) FROM tt_old AS o JOIN tt_new AS n USING (id) WHERE coalesce(cardinality(o.assessed_definitions) = o.assessments AND cardinality(o.assessed_tasks) = o.assessments AND o.duration_minutes IS NOT NULL, false) AND o.assessments > 0 AND (NOT (coalesce(cardinality(n.assessed_definitions) = n.assessments AND cardinality(n.assessed_tasks) = n.assessments AND n.duration_minutes IS NOT NULL, false) AND n.assessments > 0) OR ROW(o.unit_id, o.marker_id, o.start_time, o.duration_minutes, o.assessed_definitions, o.assessed_tasks) IS DISTINCT FROM ROW(n.unit_id, n.marker_id, n.start_time, n.duration_minutes, n.assessed_definitions, n.assessed_tasks))), ARRAY(SELECT CAST(n AS marking_sessions) FROM tt_old AS o JOIN tt_new AS n USING (id) WHERE coalesce(cardinality(n.assessed_definitions) = n.assessments AND cardinality(n.assessed_tasks) = n.assessments AND n.duration_minutes IS NOT NULL, false) AND n.assessments > 0 AND (NOT (coalesce(cardinality(o.assessed_definitions) = o.assessments AND cardinality(o.assessed_tasks) = o.assessments AND o.duration_minutes IS NOT NULL, false) AND o.assessments > 0) OR ROW(o.unit_id, o.marker_id, o.start_time, o.duration_minutes, o.assessed_definitions, o.assessed_tasks) IS DISTINCT FROM ROW(n.unit_id, n.marker_id, n.start_time, n.duration_minutes, n.assessed_definitions, n.assessed_tasks)))); RETURN NULL; END $fn$
""",
    """
DROP TRIGGER IF EXISTS tutor_times_tally_update ON marking_sessions
""",
    """
CREATE TRIGGER tutor_times_tally_update AFTER UPDATE ON marking_sessions REFERENCING OLD TABLE AS tt_old NEW TABLE AS tt_new FOR EACH STATEMENT EXECUTE FUNCTION tutor_times_tally_update()
""",
    """
CREATE OR REPLACE FUNCTION tutor_times_tally_delete() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN PERFORM tutor_times_tally(ARRAY(SELECT CAST(o AS marking_sessions) FROM tt_old AS o WHERE coalesce(cardinality(o.assessed_definitions) = o.assessments AND cardinality(o.assessed_tasks) = o.assessments AND o.duration_minutes IS NOT NULL, false) AND o.assessments > 0), ARRAY[]::marking_sessions[]); RETURN NULL; END $fn$
""",
    """
DROP TRIGGER IF EXISTS tutor_times_tally_delete ON marking_sessions
""",
    """
CREATE TRIGGER tutor_times_tally_delete AFTER DELETE ON marking_sessions REFERENCING OLD TABLE AS tt_old FOR EACH STATEMENT EXECUTE FUNCTION tutor_times_tally_delete()
""",
    """
CREATE OR REPLACE FUNCTION tutor_times_tally_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN TRUNCATE tutor_times_assessed, tutor_times_assessed_keys, tutor_times_assessed_days; RETURN NULL; END $fn$
""",
    """
DROP TRIGGER IF EXISTS tutor_times_tally_truncate ON marking_sessions
""",
    """
CREATE TRIGGER tutor_times_tally_truncate AFTER TRUNCATE ON marking_sessions  FOR EACH STATEMENT EXECUTE FUNCTION tutor_times_tally_truncate()
""",
]

#: the tallies of every session stored, into the new (empty) tables
FILL = [
    """
INSERT INTO tutor_times_assessed (session_id, unit_id, definition, kind, value, start_time)
    SELECT o.* FROM marking_sessions AS s, tutor_times_assessed_of(s) AS o
    WHERE coalesce(cardinality(s.assessed_definitions) = s.assessments AND cardinality(s.assessed_tasks) = s.assessments AND s.duration_minutes IS NOT NULL, false) AND s.assessments > 0
""",
    """
INSERT INTO tutor_times_assessed_keys (unit_id, definition, kind, value, first_start, last_start, widest_gap)
    SELECT unit_id, definition, kind, value, min(start_time) AS first_start, max(start_time) AS last_start,
                 coalesce(max(gap), interval '0') AS widest_gap
          FROM (SELECT o.*, o.start_time - lag(o.start_time) OVER (
                           PARTITION BY unit_id, definition, kind, value ORDER BY o.start_time) AS gap
                FROM tutor_times_assessed AS o) AS x
          GROUP BY unit_id, definition, kind, value
""",
    """
INSERT INTO tutor_times_assessed_days (unit_id, day, definition, assessments, minutes)
    SELECT s.unit_id, CAST(s.start_time AT TIME ZONE 'UTC' AS date),
           coalesce(l.definition, 0), count(*), sum(CAST(s.duration_minutes AS numeric) / CAST(s.assessments AS numeric))
    FROM marking_sessions AS s, unnest(s.assessed_definitions) AS l(definition)
    WHERE coalesce(cardinality(s.assessed_definitions) = s.assessments AND cardinality(s.assessed_tasks) = s.assessments AND s.duration_minutes IS NOT NULL, false) AND s.assessments > 0
    GROUP BY 1, 2, 3
""",
]

DROP = [
    "DROP TRIGGER IF EXISTS tutor_times_tally_insert ON marking_sessions",
    "DROP FUNCTION IF EXISTS tutor_times_tally_insert()",
    "DROP TRIGGER IF EXISTS tutor_times_tally_update ON marking_sessions",
    "DROP FUNCTION IF EXISTS tutor_times_tally_update()",
    "DROP TRIGGER IF EXISTS tutor_times_tally_delete ON marking_sessions",
    "DROP FUNCTION IF EXISTS tutor_times_tally_delete()",
    "DROP TRIGGER IF EXISTS tutor_times_tally_truncate ON marking_sessions",
    "DROP FUNCTION IF EXISTS tutor_times_tally_truncate()",
    "DROP FUNCTION IF EXISTS tutor_times_tally(marking_sessions[], marking_sessions[])",
    "DROP FUNCTION IF EXISTS tutor_times_assessed_of(marking_sessions)",
]


#: an occurrence's and a key's key columns
KEY = ("unit_id", "definition", "kind", "value")


def key_columns() -> list[sa.Column[Any]]:
    """The key columns, for one table."""
    return [
        sa.Column(name, sa.SmallInteger if name == "kind" else sa.BigInteger, nullable=False)
        for name in KEY
    ]


def upgrade() -> None:
    op.create_table(
        ASSESSED,
        sa.Column("session_id", sa.BigInteger, nullable=False),
        *key_columns(),
        sa.Column("start_time", UTCDateTime, nullable=False),
    )
    op.create_index(f"ix_{ASSESSED}_session_id", ASSESSED, ["session_id"], unique=False)
    op.create_index("ix_tutor_times_assessed_key_start", ASSESSED, [*KEY, "start_time"])
    op.create_table(
        KEYS,
        *key_columns(),
        sa.Column("first_start", UTCDateTime, nullable=False),
        sa.Column("last_start", UTCDateTime, nullable=False),
        sa.Column("widest_gap", sa.Interval, nullable=False),
        sa.PrimaryKeyConstraint(
            *KEY, postgresql_include=["first_start", "last_start", "widest_gap"]
        ),
    )
    op.create_table(
        DAYS,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("definition", sa.BigInteger, nullable=False),
        sa.Column("assessments", sa.BigInteger, nullable=False),
        sa.Column("minutes", sa.Numeric, nullable=False),
        sa.PrimaryKeyConstraint(
            "unit_id", "day", "definition", postgresql_include=["assessments", "minutes"]
        ),
    )
    op.create_index(
        UNTALLIED,
        SESSIONS,
        ["unit_id", "start_time"],
        postgresql_where=sa.text(f"NOT {LISTS_AGREE}"),
        sqlite_where=sa.text("assessments IS NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in CREATE + FILL:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in DROP:
            op.execute(statement)
    op.drop_index(UNTALLIED, table_name=SESSIONS)
    for table in (DAYS, KEYS, ASSESSED):
        op.drop_table(table)
