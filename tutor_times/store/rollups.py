"""Each tutor's month in a unit, rolled up on PostgreSQL, so that a year of a unit's summary
is added up from a few thousand rows instead of every session of the year.

The summary gives, per tutor over a range of session starts: sessions, assessments and
minutes, each stored R10 block's minutes counted where it starts unless the range cuts it
(:func:`.reports.figured_by`). Sessions and assessments add up over any split of the range;
so do the minutes of the blocks the range does not cut. So
``tutor_times_tutor_months`` keeps, per (unit, UTC month of the session start, tutor), of
the sessions with figures (:data:`ROLLED`):

- ``sessions`` and ``assessments``, and ``uncounted``: the sessions whose assessments are
  not stored (a writer of an earlier version may have left them; a report counts theirs
  from their activities, so a month that has any is read session by session);
- ``credited``: the minutes of the blocks that start there, counted under each minimum a
  host may set up to :data:`MAX_MINIMUM` (R4: a block counts at least the minimum) — element
  k is the sum of max(block minutes, k);
- ``longest``: an upper bound on how long any of those blocks lasts, from its first start
  to its end.

A report over [s, e) with its first open session at f (or none) cuts only blocks that reach
over s, reach e, or end at or after f, and every session of such a block starts within the
unit's longest block of s, of e or of f. So the months that lie wholly between s plus the
longest block and the earlier of e and f less it hold no session of a cut block: their rows
are added up, and the range's ends are read session by session as before.

Triggers on ``marking_sessions`` keep the rows one statement at a time, whoever writes,
taking what a statement's changed rows rolled up away and adding what they roll up now,
under the unit's lock the tasks report's tallies take (:mod:`.tallies`), in key order.

The same statement gives each (unit, month) whose rows it changes a new ``version`` in
``tutor_times_month_versions`` (the next value of a sequence: never one given before, even
after a truncate). A reader that kept something computed from a month's rows at one version
knows, from one row, whether any of them changed since (:mod:`.class_store`).
"""

from __future__ import annotations

import sqlalchemy as sa

MONTHS = "tutor_times_tutor_months"
#: the greatest minimum (TUTOR_TIMES_MIN_SESSION_MINUTES) the rows keep minutes for; a host
#: that sets a greater one has its summaries counted from the sessions
MAX_MINIMUM = 10

#: a session rolled up: it has figures (it is closed and merged into its block)
ROLLED = "{r}block_start IS NOT NULL"
#: what the rows read of a session
READ = (
    "ROW({r}unit_id, {r}marker_id, {r}start_time, {r}assessments, {r}block_start,"
    " {r}block_end, {r}block_minutes)"
)
#: a session's month: the first day of its start's UTC month (``tallies.MONTH`` is the same)
MONTH = "CAST(date_trunc('month', {r}start_time AT TIME ZONE 'UTC') AS date)"

MONTH_COLUMNS = ("unit_id", "month", "marker_id")
MONTH_FIGURES = ("sessions", "assessments", "uncounted", "credited", "longest")
#: each (unit, month)'s version, and the sequence the versions are drawn from
VERSIONS = "tutor_times_month_versions"
VERSION_SEQUENCE = "tutor_times_month_version"


def table(metadata: sa.MetaData) -> sa.Table:
    """The table, declared on ``metadata`` (on every backend, so that one schema is
    migrated; only PostgreSQL fills it)."""
    return sa.Table(
        MONTHS,
        metadata,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("marker_id", sa.BigInteger, nullable=False),
        sa.Column("sessions", sa.BigInteger, nullable=False),
        sa.Column("assessments", sa.BigInteger, nullable=False),
        sa.Column("uncounted", sa.BigInteger, nullable=False),
        # an array on PostgreSQL, the only backend that fills the table
        sa.Column(
            "credited", sa.ARRAY(sa.BigInteger).with_variant(sa.Text, "sqlite"), nullable=False
        ),
        sa.Column("longest", sa.Interval),
        # a unit's range of months read from the index alone
        sa.PrimaryKeyConstraint(*MONTH_COLUMNS, postgresql_include=list(MONTH_FIGURES)),
        # the unit's longest block, found at once
        sa.Index("ix_tutor_times_tutor_months_longest", "unit_id", "longest"),
    )


def versions_table(metadata: sa.MetaData) -> sa.Table:
    """The months' versions and their sequence, declared on ``metadata`` (the table on every
    backend, so that one schema is migrated; only PostgreSQL fills it, and has the
    sequence)."""
    sa.Sequence(VERSION_SEQUENCE, metadata=metadata)
    return sa.Table(
        VERSIONS,
        metadata,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        # a unit's months' versions read from the index alone
        sa.PrimaryKeyConstraint("unit_id", "month", postgresql_include=["version"]),
    )


def _credited(r: str, sign: str) -> str:
    """SQL: the ``credited`` array of the rows named ``r`` (summed, times ``sign``)."""
    return (
        "ARRAY["
        + ", ".join(
            f"coalesce(sum({sign} * greatest({r}block_minutes, {k}))"
            f" FILTER (WHERE {r}block_minutes IS NOT NULL), 0)"
            for k in range(1, MAX_MINIMUM + 1)
        )
        + "]"
    )


def _rolled_up(rows: str, sign: str) -> str:
    """SQL: ``rows`` (a FROM item named ``s``, of rolled sessions) rolled up by month."""
    return f"""SELECT s.unit_id, {MONTH.format(r="s.")}, s.marker_id, sum({sign}),
           coalesce(sum({sign} * s.assessments), 0),
           coalesce(sum({sign}) FILTER (WHERE s.assessments IS NULL), 0),
           {_credited("s.", sign)},
           max(s.block_end - s.block_start) FILTER (WHERE s.block_minutes IS NOT NULL)
    FROM {rows}
    GROUP BY 1, 2, 3"""


#: two ``credited`` arrays added element by element
ADD_FUNCTION = """
CREATE OR REPLACE FUNCTION tutor_times_added(a bigint[], b bigint[])
RETURNS bigint[] LANGUAGE sql IMMUTABLE AS $fn$
    SELECT array_agg(x + y ORDER BY i) FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$fn$
"""


def roll_body(signed: str) -> str:
    """Take away what ``gone`` rolled up and add what ``came`` does: the body of the
    upkeep's function, given its ``signed`` rows (``tallies.SIGNED``)."""
    return f"""
    INSERT INTO {MONTHS} AS m (unit_id, month, marker_id, {", ".join(MONTH_FIGURES)})
    {_rolled_up(signed, "s.sign")}
    ORDER BY 1, 2, 3
    ON CONFLICT (unit_id, month, marker_id) DO UPDATE
        SET sessions = m.sessions + excluded.sessions,
            assessments = m.assessments + excluded.assessments,
            uncounted = m.uncounted + excluded.uncounted,
            credited = tutor_times_added(m.credited, excluded.credited),
            -- an upper bound: a block taken away leaves it as it was
            longest = greatest(m.longest, excluded.longest);
    DELETE FROM {MONTHS} AS m
    USING (SELECT DISTINCT g.unit_id, {MONTH.format(r="g.")} AS month, g.marker_id
           FROM unnest(gone) AS g) AS t
    WHERE m.unit_id = t.unit_id AND m.month = t.month AND m.marker_id = t.marker_id
      AND m.sessions = 0;
    -- every (unit, month) whose rows this statement changed: a version never given before
    INSERT INTO {VERSIONS} AS v (unit_id, month, version)
    SELECT t.unit_id, t.month, nextval('{VERSION_SEQUENCE}')
    FROM (SELECT DISTINCT s.unit_id, {MONTH.format(r="s.")} AS month FROM {signed}) AS t
    ORDER BY 1, 2
    ON CONFLICT (unit_id, month) DO UPDATE SET version = excluded.version;"""


#: what keeps the table, made into triggers by :func:`.tallies.create_statements`: the
#: upkeep's function, the function its body calls and how to drop it, and what a truncated
#: ``marking_sessions`` leaves
FUNCTION = "tutor_times_roll"
HELPERS = (ADD_FUNCTION,)
DROPPED = ("DROP FUNCTION IF EXISTS tutor_times_added(bigint[], bigint[])",)
TRUNCATE = f"TRUNCATE {MONTHS}, {VERSIONS}"


#: every rolled session's rows from scratch, into an empty table: a bulk load; and a version
#: for each month of them that has none
FILL = [
    f"""INSERT INTO {MONTHS} (unit_id, month, marker_id, {", ".join(MONTH_FIGURES)})
    {_rolled_up(f"marking_sessions AS s WHERE {ROLLED.format(r='s.')}", "1")}""",
    f"""INSERT INTO {VERSIONS} (unit_id, month, version)
    SELECT t.unit_id, t.month, nextval('{VERSION_SEQUENCE}')
    FROM (SELECT DISTINCT unit_id, month FROM {MONTHS}) AS t
    ON CONFLICT (unit_id, month) DO NOTHING""",
]
