"""Tallies the tasks report keeps per unit on PostgreSQL, so that a year of a unit's tasks is
counted from a few thousand rows instead of every assessment of the year.

The tasks report gives, per task definition over a range of session starts: assessments,
estimated minutes (each session's minutes shared equally among its assessments), and how
many distinct tasks and markers. Sums add up over days; distinct counts do not. So:

- ``tutor_times_assessed_days``: per (unit, definition, UTC day of the session start), the
  assessments and the minutes' shares, in exact decimals (each share is the session's
  minutes over its assessments as a ``numeric``: adding them in any grouping gives the same
  sum to the last digit, so the days plus the range's edges equal the report's own sum).
- ``tutor_times_assessed``: one row per (session, definition, task) and per (session,
  definition) for its marker — the *occurrences* of each distinct-count key.
- ``tutor_times_assessed_months``: the same per UTC month, so that a long range adds up its
  whole months rather than every day.
- ``tutor_times_assessed_keys``: per key (unit, definition, kind, value) — kind 0 a task,
  1 a marker — its first and last session start and the widest gap between two of its
  consecutive starts.
- ``tutor_times_assessed_totals``: per (unit, definition, kind), how many keys.

Distinct keys with a session in [s, e) are then counted by their complement: the keys whose
first start is before e and last at or after s, less those with none in between. A key has
none in between only if two of its consecutive starts straddle the range, a gap wider than
e − s, so only the few keys whose widest gap is that wide are looked up one by one. When
no key of the unit has a start at or after e, none can straddle the range or start after
it: the keys with a session in it are the unit's totals less those last seen before s, found
by the keys' index of last starts.

Only closed sessions whose stored lists can be read (:data:`KEPT`) are tallied:
the report counts the others (the open ones, a handful) from their activities. A NULL
definition is tallied as 0 (ids are positive).

Triggers on ``marking_sessions`` keep the tables, one statement at a time, whoever
writes (the figures' refresh, a purge, a rebuild, a host's cascading delete or truncate):
the rows a statement stops or starts tallying are taken away and added. Added occurrences
widen their key's first, last and widest gap in place; a key that lost an occurrence is
counted again from its occurrences.

Writers of one unit's tallies take turns: the first statement of a transaction that changes
them takes the unit's lock until the transaction ends (units in ascending order within a
statement). A unit's rows are then never waited for in a cycle, however many
statements a writer spreads its changes over; only a transaction that changes two units in
two statements, in the opposite order of another's, can still deadlock (PostgreSQL then
aborts one). Writers run at READ COMMITTED, PostgreSQL's default: each statement of the
upkeep reads what the unit's earlier writers committed. A statement's changed sessions
reach the upkeep as one array each way: one that rewrites every session at once
(``figures.refresh_all``, a bulk load) holds them in memory for that statement.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa

ASSESSED = "tutor_times_assessed"
KEYS = "tutor_times_assessed_keys"
DAYS = "tutor_times_assessed_days"
MONTHS = "tutor_times_assessed_months"
TOTALS = "tutor_times_assessed_totals"

#: a key's kind
TASK, MARKER = 0, 1
#: what a NULL task definition is tallied as
NO_DEFINITION = 0

#: the key columns of an occurrence and of a key, and what a key keeps
KEY_COLUMNS = ("unit_id", "definition", "kind", "value")
KEY_FIGURES = ("first_start", "last_start", "widest_gap")
KEY = ", ".join(KEY_COLUMNS)
#: the key columns of a day's tally, and what it keeps (a month's alike)
DAY_COLUMNS = ("unit_id", "day", "definition")
DAY_FIGURES = ("assessments", "minutes")
MONTH_COLUMNS = ("unit_id", "month", "definition")
#: a session's UTC day, and the first day of its UTC month
DAY = "CAST({r}start_time AT TIME ZONE 'UTC' AS date)"
#: (``rollups.MONTH`` is the same month: the summary's months and these agree)
MONTH = "CAST(date_trunc('month', {r}start_time AT TIME ZONE 'UTC') AS date)"


def _key_columns() -> list[sa.Column[Any]]:
    """A key's columns (:data:`KEY_COLUMNS`), for one table."""
    kinds = {"kind": sa.SmallInteger}
    return [sa.Column(name, kinds.get(name, sa.BigInteger), nullable=False) for name in KEY_COLUMNS]


def tables(metadata: sa.MetaData, time_type: Any) -> tuple[Any, Any, Any, Any, Any]:
    """The tables, declared on ``metadata`` (on every backend, so that one schema is
    migrated; only PostgreSQL fills them)."""
    assessed = sa.Table(
        ASSESSED,
        metadata,
        sa.Column("session_id", sa.BigInteger, nullable=False, index=True),
        *_key_columns(),
        sa.Column("start_time", time_type, nullable=False),
        # a key's occurrences in start order: a key counted again, a range looked up
        sa.Index("ix_tutor_times_assessed_key_start", *KEY_COLUMNS, "start_time"),
    )
    keys = sa.Table(
        KEYS,
        metadata,
        *_key_columns(),
        sa.Column("first_start", time_type, nullable=False),
        sa.Column("last_start", time_type, nullable=False),
        sa.Column("widest_gap", sa.Interval, nullable=False),
        # a unit's keys read from the index alone, definition by definition
        sa.PrimaryKeyConstraint(*KEY_COLUMNS, postgresql_include=list(KEY_FIGURES)),
        # a unit's keys last seen before a time, and its latest: a range that reaches the
        # unit's last tallied start counts its keys from the totals less those
        sa.Index(
            "ix_tutor_times_assessed_keys_last",
            "unit_id",
            "last_start",
            postgresql_include=["definition", "kind"],
        ),
    )
    # a unit's range of days (or months) read from the index alone
    days, months = (
        sa.Table(
            name,
            metadata,
            sa.Column("unit_id", sa.BigInteger, nullable=False),
            sa.Column(column, sa.Date, nullable=False),
            sa.Column("definition", sa.BigInteger, nullable=False),
            sa.Column("assessments", sa.BigInteger, nullable=False),
            sa.Column("minutes", sa.Numeric, nullable=False),
            sa.PrimaryKeyConstraint(*columns, postgresql_include=list(DAY_FIGURES)),
        )
        for name, column, columns in ((DAYS, "day", DAY_COLUMNS), (MONTHS, "month", MONTH_COLUMNS))
    )
    totals = sa.Table(
        TOTALS,
        metadata,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("definition", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("keys", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("unit_id", "definition", "kind", postgresql_include=["keys"]),
    )
    return assessed, keys, days, months, totals


#: a session tallied: it is closed and its stored lists can be read — both as long as its
#: stored assessments (a writer of an earlier version may have changed one and not the
#: other; a statement that reopens a session leaves its figures to the next). Text on a row
#: named by the prefix ``{r}`` (e.g. ``"o."``): :func:`kept` as SQL, the index of the rest
#: (``models.LISTS_AGREE``), and the triggers' upkeep all read this one rule.
KEPT = (
    "coalesce(cardinality({r}assessed_definitions) = {r}assessments"
    " AND cardinality({r}assessed_tasks) = {r}assessments"
    " AND {r}duration_minutes IS NOT NULL, false)"
)


def kept(sessions: sa.Table) -> Any:
    """SQL, true where a row of ``sessions`` (``marking_sessions`` or an alias of it) is
    tallied (:data:`KEPT`). Never NULL."""
    return sa.literal_column(f"({KEPT.format(r=sessions.name + '.')})", sa.Boolean)


#: a tallied session's rows the upkeep adds or takes away: one without assessments adds
#: nothing (and a sweep closes many)
TALLYING = KEPT + " AND {r}assessments > 0"
#: each of a tallied session's assessments' share of its minutes, in exact decimals (the
#: tasks report divides alike: ``reports._share``)
SHARE = "CAST({r}duration_minutes AS numeric) / CAST({r}assessments AS numeric)"
#: what the tallies read of a session
TALLIED = (
    "ROW({r}unit_id, {r}marker_id, {r}start_time, {r}duration_minutes,"
    " {r}assessed_definitions, {r}assessed_tasks)"
)

#: the occurrences of one session (call it only on a tallied one)
OCCURRENCES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION tutor_times_assessed_of(ms marking_sessions)
RETURNS TABLE (session_id bigint, unit_id bigint, definition bigint, kind smallint,
               value bigint, start_time timestamptz)
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT DISTINCT ms.id, ms.unit_id, coalesce(l.definition, {NO_DEFINITION}), k.kind,
           CASE k.kind WHEN {TASK} THEN l.task ELSE ms.marker_id END, ms.start_time
    FROM unnest(ms.assessed_definitions, ms.assessed_tasks) AS l(definition, task),
         (VALUES (CAST({TASK} AS smallint)), (CAST({MARKER} AS smallint))) AS k(kind)
    WHERE k.kind = {MARKER} OR l.task IS NOT NULL
$fn$
"""


def _same_key(a: str, b: str) -> str:
    """SQL: the rows named ``a`` and ``b`` have the same key."""
    return " AND ".join(f"{a}.{column} = {b}.{column}" for column in KEY_COLUMNS)


def _key_of(a: str) -> str:
    """SQL: the key columns of the row named ``a``."""
    return ", ".join(f"{a}.{column}" for column in KEY_COLUMNS)


#: the occurrences the upkeep takes away and adds (variables of :data:`TALLY_BODY`), as
#: subqueries
GONE = "(SELECT * FROM unnest(removed))"
CAME = "(SELECT * FROM unnest(added))"
#: the occurrences left of the keys that lost one
LEFT = f"(SELECT * FROM {ASSESSED} WHERE ({KEY}) IN (SELECT {KEY} FROM {GONE} AS g))"


def counted_keys(occurrences: str) -> str:
    """SQL: each key's first and last start and widest gap among ``occurrences`` (a table
    or subquery of them)."""
    return f"""SELECT {KEY}, min(start_time) AS first_start, max(start_time) AS last_start,
                 coalesce(max(gap), interval '0') AS widest_gap
          FROM (SELECT o.*, o.start_time - lag(o.start_time) OVER (
                           PARTITION BY {KEY} ORDER BY o.start_time) AS gap
                FROM {occurrences} AS o) AS x
          GROUP BY {KEY}"""


#: the rows of ``gone`` (sign -1) and ``came`` (sign 1) in an upkeep's body, as ``s``
SIGNED = (
    "(SELECT g.*, -1 AS sign FROM unnest(gone) AS g"
    " UNION ALL SELECT c.*, 1 FROM unnest(came) AS c) AS s"
)


def _signed_sums(table: str, column: str, of: str) -> str:
    """SQL of the tallies' upkeep: the assessments and shares of minutes of ``gone`` (taken
    away) and ``came`` (added) per (unit, ``column``, definition) into ``table``,
    ``column`` being ``of`` a session (:data:`DAY`, :data:`MONTH`); rows left at none gone."""
    return f"""    INSERT INTO {table} AS d (unit_id, {column}, definition, assessments, minutes)
    SELECT s.unit_id, {of.format(r="s.")}, coalesce(l.definition, {NO_DEFINITION}),
           sum(s.sign), sum(s.sign * ({SHARE.format(r="s.")}))
    FROM {SIGNED}, unnest(s.assessed_definitions) AS l(definition)
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (unit_id, {column}, definition) DO UPDATE
        SET assessments = d.assessments + excluded.assessments,
            minutes = d.minutes + excluded.minutes;
    DELETE FROM {table} AS d
    USING (SELECT DISTINCT g.unit_id, {of.format(r="g.")} AS {column}
           FROM unnest(gone) AS g) AS t
    WHERE d.unit_id = t.unit_id AND d.{column} = t.{column} AND d.assessments = 0;"""


#: take away what ``gone`` tallied and add what ``came`` does (the body of the tallies'
#: upkeep function, :func:`upkeep_function`)
TALLY_BODY = f"""
    removed := ARRAY(
        SELECT CAST(o AS {ASSESSED}) FROM unnest(gone) AS g, tutor_times_assessed_of(g) AS o);
    added := ARRAY(
        SELECT CAST(o AS {ASSESSED}) FROM unnest(came) AS c, tutor_times_assessed_of(c) AS o);

    -- assessments and shares of minutes per day, and per month: signed differences, added
{_signed_sums(DAYS, "day", DAY)}
{_signed_sums(MONTHS, "month", MONTH)}

    -- occurrences
    DELETE FROM {ASSESSED} WHERE session_id IN (SELECT g.id FROM unnest(gone) AS g);
    INSERT INTO {ASSESSED} (session_id, {KEY}, start_time)
    SELECT * FROM unnest(added);

    -- every key touched, present and locked, in key order: an added key gets its first
    -- start as its whole span; a present one is locked as it is. The keys added are
    -- counted in their unit's totals (a row an upsert inserted has no xmax yet)
    WITH touched AS (
        INSERT INTO {KEYS} AS k ({KEY}, first_start, last_start, widest_gap)
        SELECT DISTINCT ON ({KEY}) {KEY}, start_time, start_time, interval '0'
        FROM (SELECT * FROM {CAME} AS c UNION ALL SELECT * FROM {GONE} AS g) AS o
        ORDER BY {KEY}, start_time
        ON CONFLICT ({KEY}) DO UPDATE SET widest_gap = k.widest_gap
        RETURNING k.unit_id, k.definition, k.kind, k.xmax = 0 AS is_new)
    INSERT INTO {TOTALS} AS t (unit_id, definition, kind, keys)
    SELECT unit_id, definition, kind, count(*) FROM touched WHERE is_new
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (unit_id, definition, kind) DO UPDATE SET keys = t.keys + excluded.keys;

    -- a key that lost an occurrence: counted again from the occurrences left
    UPDATE {KEYS} AS k
    SET first_start = r.first_start, last_start = r.last_start, widest_gap = r.widest_gap
    FROM ({counted_keys(LEFT)}) AS r
    WHERE {_same_key("k", "r")};
    WITH dropped AS (
        DELETE FROM {KEYS} AS k
        WHERE ({KEY}) IN (SELECT {KEY} FROM {GONE} AS g)
          AND NOT EXISTS (SELECT FROM {ASSESSED} AS o WHERE {_same_key("o", "k")})
        RETURNING k.unit_id, k.definition, k.kind)
    UPDATE {TOTALS} AS t SET keys = t.keys - d.n
    FROM (SELECT unit_id, definition, kind, count(*) AS n FROM dropped GROUP BY 1, 2, 3) AS d
    WHERE t.unit_id = d.unit_id AND t.definition = d.definition AND t.kind = d.kind;

    -- a key that only gained: widened by its added starts. Every gap the key now has is
    -- at most its widest gap before, a gap between two added starts, or the gap from its
    -- span to added starts all on one side of it: an upper bound, exact when the starts
    -- come after the key's last (a session closing), and for a key just added
    UPDATE {KEYS} AS k
    SET first_start = least(k.first_start, m.first_start),
        last_start = greatest(k.last_start, m.last_start),
        widest_gap = greatest(k.widest_gap, m.widest_gap, m.first_start - k.last_start,
                              k.first_start - m.last_start)
    FROM ({counted_keys(CAME)}) AS m
    WHERE {_same_key("k", "m")}
      AND ({_key_of("k")}) NOT IN (SELECT {KEY} FROM {GONE} AS g);"""


class Upkeep(NamedTuple):
    """Tables kept from ``marking_sessions`` one statement at a time: the statement's rows
    that were ``counted`` and changed in what is ``read`` of them go to ``function(gone,
    came)`` — the rows as they were, and as they are — which runs ``body`` under the
    units' locks (:func:`upkeep_function`). SQL on a row named by ``{r}``."""

    #: the upkeep's function, and the prefix of its triggers' names
    function: str
    counted: str
    read: str
    #: plpgsql statements on ``gone`` and ``came`` (:data:`SIGNED`: both, signed)
    body: str
    #: the body's variables
    declare: str
    #: the statements that create the functions the body calls, and that drop them
    helpers: tuple[str, ...]
    dropped: tuple[str, ...]
    #: what a truncated ``marking_sessions`` leaves: a statement
    truncate: str


def upkeep_function(upkeep: Upkeep) -> str:
    """The statement that creates ``upkeep``'s function: nothing to do for no rows, else
    the lock of each unit the rows are in (every upkeep takes the same ones, in ascending
    order, until the transaction ends), then its body."""
    declare = f"DECLARE\n{upkeep.declare}" if upkeep.declare else ""
    return f"""
CREATE OR REPLACE FUNCTION {upkeep.function}(gone marking_sessions[], came marking_sessions[])
RETURNS void LANGUAGE plpgsql AS $fn$
{declare}BEGIN
    IF cardinality(gone) = 0 AND cardinality(came) = 0 THEN
        RETURN;
    END IF;
    -- the units' locks, in order, until the transaction ends
    PERFORM pg_advisory_xact_lock(hashtextextended('tutor_times_tally:' || u.unit_id, 0))
    FROM (SELECT DISTINCT s.unit_id FROM (SELECT g.unit_id FROM unnest(gone) AS g
                                          UNION SELECT c.unit_id FROM unnest(came) AS c) AS s
          ORDER BY s.unit_id) AS u;
{upkeep.body}
END
$fn$
"""


def _changed(upkeep: Upkeep, taken: str, other: str) -> str:
    """SQL: the rows ``taken`` of an UPDATE whose upkeep changes: counted, and either the
    ``other`` side is not or it reads differently."""
    counted, read = upkeep.counted, upkeep.read
    return (
        f"ARRAY(SELECT CAST({taken} AS marking_sessions) FROM tt_old AS o JOIN tt_new AS n"
        f" USING (id) WHERE {counted.format(r=taken + '.')}"
        f" AND (NOT ({counted.format(r=other + '.')})"
        f" OR {read.format(r='o.')} IS DISTINCT FROM {read.format(r='n.')}))"
    )


#: no sessions
NONE = "ARRAY[]::marking_sessions[]"


def _triggers(upkeep: Upkeep) -> dict[str, tuple[str, str]]:
    """Per statement kind: the trigger's transition tables, and the (gone, came) it passes."""
    counted = upkeep.counted
    return {
        "INSERT": (
            "REFERENCING NEW TABLE AS tt_new",
            f"{NONE}, ARRAY(SELECT CAST(n AS marking_sessions) FROM tt_new AS n"
            f" WHERE {counted.format(r='n.')})",
        ),
        "UPDATE": (
            "REFERENCING OLD TABLE AS tt_old NEW TABLE AS tt_new",
            f"{_changed(upkeep, 'o', 'n')}, {_changed(upkeep, 'n', 'o')}",
        ),
        "DELETE": (
            "REFERENCING OLD TABLE AS tt_old",
            f"ARRAY(SELECT CAST(o AS marking_sessions) FROM tt_old AS o"
            f" WHERE {counted.format(r='o.')}), {NONE}",
        ),
    }


#: the tasks report's tallies: tallying sessions, as they are tallied
TALLIES = Upkeep(
    function="tutor_times_tally",
    counted=TALLYING,
    read=TALLIED,
    body=TALLY_BODY,
    declare=f"    removed {ASSESSED}[];\n    added {ASSESSED}[];\n",
    helpers=(OCCURRENCES_FUNCTION,),
    dropped=("DROP FUNCTION IF EXISTS tutor_times_assessed_of(marking_sessions)",),
    # a truncated ``marking_sessions`` leaves nothing to tally
    truncate=f"TRUNCATE {ASSESSED}, {KEYS}, {DAYS}, {MONTHS}, {TOTALS}",
)


def create_statements(upkeep: Upkeep = TALLIES) -> list[str]:
    """The functions and triggers of ``upkeep``, as SQL statements."""
    out = [*upkeep.helpers, upkeep_function(upkeep)]
    for event, (referencing, passed) in {**_triggers(upkeep), "TRUNCATE": ("", "")}.items():
        name = f"{upkeep.function}_{event.lower()}"
        body = f"PERFORM {upkeep.function}({passed})" if passed else upkeep.truncate
        out.append(
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger"
            f" LANGUAGE plpgsql AS $fn$ BEGIN {body}; RETURN NULL; END $fn$"
        )
        # every create_all runs these: a trigger already there is made again
        out.append(f"DROP TRIGGER IF EXISTS {name} ON marking_sessions")
        out.append(
            f"CREATE TRIGGER {name} AFTER {event} ON marking_sessions {referencing}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )
    return out


def drop_statements(upkeep: Upkeep = TALLIES) -> list[str]:
    """What :func:`create_statements` made, taken away (the tables stay)."""
    out = []
    for event in (*_triggers(upkeep), "TRUNCATE"):
        name = f"{upkeep.function}_{event.lower()}"
        out.append(f"DROP TRIGGER IF EXISTS {name} ON marking_sessions")
        out.append(f"DROP FUNCTION IF EXISTS {name}()")
    function = f"{upkeep.function}(marking_sessions[], marking_sessions[])"
    return [*out, f"DROP FUNCTION IF EXISTS {function}", *upkeep.dropped]


#: every tallied session's tallies from scratch, into empty tables: a bulk load
FILL = [
    f"""INSERT INTO {ASSESSED} (session_id, {KEY}, start_time)
    SELECT o.* FROM marking_sessions AS s, tutor_times_assessed_of(s) AS o
    WHERE {TALLYING.format(r="s.")}""",
    f"""INSERT INTO {KEYS} ({KEY}, first_start, last_start, widest_gap)
    {counted_keys(ASSESSED)}""",
    *(
        f"""INSERT INTO {table} (unit_id, {column}, definition, assessments, minutes)
    SELECT s.unit_id, {of.format(r="s.")},
           coalesce(l.definition, {NO_DEFINITION}), count(*), sum({SHARE.format(r="s.")})
    FROM marking_sessions AS s, unnest(s.assessed_definitions) AS l(definition)
    WHERE {TALLYING.format(r="s.")}
    GROUP BY 1, 2, 3"""
        for table, column, of in ((DAYS, "day", DAY), (MONTHS, "month", MONTH))
    ),
    f"""INSERT INTO {TOTALS} (unit_id, definition, kind, keys)
    SELECT unit_id, definition, kind, count(*) FROM {KEYS} GROUP BY 1, 2, 3""",
]
