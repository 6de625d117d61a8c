"""The statements of the stored class-time split (R12) on PostgreSQL: the months and tutors
whose stored split no longer agrees with the roll-up's version or the timetable's
fingerprint, the stored measures summed per bucket and tutor, and a month's blocks to split
again."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from . import rollups
from .class_sql import PACKED, TIME

#: the stored split's tables
MONTHS = "tutor_times_class_months"
BLOCKS = "tutor_times_class_blocks"
CHECKED = "tutor_times_class_checked"


def disagreeing(month: str, fingerprint: str, marker_t: str = "", marker_c: str = "") -> str:
    """SQL: the tutors of one month of the unit ``:unit`` (``month``, whose classes are
    ``fingerprint``: SQL expressions) that do not agree with what is stored — ``rolled``
    when the roll-up has the tutor's row (its blocks are to be split), not when only the
    store has it; ``marker_t`` and ``marker_c`` narrow each side to a tutor's own."""
    return f"""SELECT coalesce(t.marker_id, c.marker_id) AS marker,
       t.marker_id IS NOT NULL AS rolled
FROM (SELECT r.marker_id, CAST(CAST(r.xmin AS text) AS bigint) AS seen
      FROM {rollups.MONTHS} AS r
      WHERE r.unit_id = :unit AND r.month = {month} {marker_t}) AS t
FULL JOIN (SELECT k.marker_id, k.seen, k.fingerprint, k.long_blocks
           FROM {MONTHS} AS k
           WHERE k.unit_id = :unit AND k.month = {month} {marker_c}) AS c
  ON c.marker_id = t.marker_id
WHERE t.marker_id IS NULL OR c.marker_id IS NULL OR c.seen <> t.seen
   OR c.fingerprint IS DISTINCT FROM {fingerprint} OR c.long_blocks > 0"""


def unsure(marker_t: str, marker_c: str) -> str:
    """SQL, two CTEs: ``dirty``, the months of ``:months`` (their classes ``:prints``) not
    known to agree with what is stored — the roll-up's version of the month, or its
    classes, are not those every tutor last agreed at (:data:`CHECKED`); and ``unsure``,
    each of those months with a NULL marker and, in those months alone, each tutor that
    does not agree (:func:`disagreeing`). A month known to agree costs two rows read by
    key."""
    return f"""dirty AS (
  SELECT f.month, f.print
  FROM unnest(CAST(:months AS date[]), CAST(:prints AS text[])) AS f(month, print)
  LEFT JOIN {rollups.VERSIONS} AS v ON v.unit_id = :unit AND v.month = f.month
  LEFT JOIN {CHECKED} AS a ON a.unit_id = :unit AND a.month = f.month
  WHERE NOT coalesce(a.version = v.version AND a.fingerprint = f.print, false)),
unsure AS (
  SELECT d.month, CAST(NULL AS bigint) AS marker, CAST(NULL AS boolean) AS rolled
  FROM dirty AS d
  UNION ALL
  SELECT d.month, x.marker, x.rolled
  FROM dirty AS d
  CROSS JOIN LATERAL ({disagreeing("d.month", "d.print", marker_t, marker_c)}) AS x)"""


#: the bucket of a stored block among a timeline's ``:starts``, as
#: :func:`~tutor_times.reports.figured.bucket_index` gives it: one bucket, the starts in PostgreSQL's binary
#: form (psycopg 3: a timeline of two years by day has 730, and dumping each took longer
#: than the statement), or as an array another driver sends
BUCKETS = {
    "one": "0",
    "packed": "greatest(width_bucket(b.block_start, :starts), 1) - 1",
    "array": "greatest(width_bucket(b.block_start, CAST(:starts AS timestamptz[])), 1) - 1",
}


def summed(marker: bool, buckets: str) -> str:
    """SQL: the stored measures of what agrees in a range of the unit (a tutor's own with
    ``marker``) summed per bucket (:data:`BUCKETS`) and tutor, each block's during-class
    minutes as :meth:`.Timetable.during` gives them (kind 1); and in the same statement the
    rows of ``unsure`` (kind 0): the months not known to agree, and their tutors that do
    not."""
    marker_t, marker_c, marker_b = (
        ("AND r.marker_id = :marker", "AND k.marker_id = :marker", "AND b.marker_id = :marker")
        if marker
        else ("", "", "")
    )
    value = BUCKETS[buckets]
    grouped = "b.marker_id" if buckets == "one" else f"{value}, b.marker_id"
    least = "greatest(b.block_minutes, :least)"
    return f"""WITH {unsure(marker_t, marker_c)}
SELECT 1 AS kind, {value} AS bucket, b.marker_id AS marker,
       CAST(sum(CASE WHEN b.length = 0 THEN {least} * b.inside
                ELSE div(2 * {least} * b.inside + b.length, 2 * b.length) END) AS bigint)
         AS during,
       CAST(NULL AS date) AS month, CAST(NULL AS boolean) AS rolled
FROM {BLOCKS} AS b
WHERE b.unit_id = :unit AND b.block_start >= :since AND b.block_start < :until
  AND b.month = ANY(CAST(:months AS date[])) {marker_b}
  AND NOT EXISTS (SELECT FROM unsure AS u WHERE u.month = b.month AND u.marker = b.marker_id)
GROUP BY {grouped}
UNION ALL
SELECT 0, NULL, u.marker, NULL, u.month, u.rolled FROM unsure AS u"""


@functools.cache
def summed_statement(marker: bool, buckets: str) -> sa.TextualSelect:
    """:func:`summed` as a statement made once (its compiled form and the driver's
    prepared one are then reused: made on each report, building and keying it took more
    than the statement)."""
    starts: list[Any] = []
    if buckets == "packed":
        starts = [sa.bindparam("starts", type_=PACKED)]
    elif buckets == "array":
        starts = [sa.bindparam("starts", type_=postgresql.ARRAY(TIME))]
    return (
        sa.text(summed(marker, buckets))
        .bindparams(
            sa.bindparam("unit", type_=sa.BigInteger),
            sa.bindparam("months", type_=postgresql.ARRAY(sa.Date)),
            sa.bindparam("prints", type_=postgresql.ARRAY(sa.Text)),
            sa.bindparam("least", type_=sa.BigInteger),
            sa.bindparam("since", type_=TIME),
            sa.bindparam("until", type_=TIME),
            *([sa.bindparam("marker", type_=sa.BigInteger)] if marker else []),
            *starts,
        )
        .columns(
            sa.column("kind", sa.Integer),
            sa.column("bucket", sa.Integer),
            sa.column("marker", sa.BigInteger),
            sa.column("during", sa.BigInteger),
            sa.column("month", sa.Date),
            sa.column("rolled", sa.Boolean),
        )
    )


@functools.cache
def summed_compiled(marker: bool, buckets: str) -> dict[str, str]:
    """:func:`summed_statement`'s text as each dialect compiles it, kept once made (for
    :func:`~tutor_times.store.drivers.rows_on_generic_plan`)."""
    return {}


#: each month of ``:months`` (its classes ``:prints``) of the unit: the roll-up's version of
#: it, and whether every tutor's stored split of it agrees (one snapshot). Each month's
#: tutors are compared beside it (LATERAL): as a correlated NOT EXISTS, PostgreSQL read the
#: whole roll-up table for each month
VERIFIED = f"""
SELECT f.month, v.version, count(x.marker) = 0 AS agrees
FROM unnest(CAST(:months AS date[]), CAST(:prints AS text[])) AS f(month, print)
LEFT JOIN {rollups.VERSIONS} AS v ON v.unit_id = :unit AND v.month = f.month
LEFT JOIN LATERAL ({disagreeing("f.month", "f.print")}) AS x ON true
GROUP BY f.month, v.version
"""
#: the blocks of some (month, tutor) of a unit, with the version of each one's roll-up row,
#: read in one statement (one snapshot whatever the isolation)
BLOCKS_OF = """
WITH p AS (
  SELECT r.month, r.marker_id, CAST(CAST(r.xmin AS text) AS bigint) AS seen
  FROM tutor_times_tutor_months AS r
  JOIN unnest(CAST(:months AS date[]), CAST(:markers AS bigint[])) AS q(month, marker)
    ON r.month = q.month AND r.marker_id = q.marker
  WHERE r.unit_id = :unit)
SELECT p.month, p.marker_id, p.seen, s.start_time, s.block_end, s.block_minutes
FROM p LEFT JOIN (
  SELECT ms.marker_id, ms.start_time, ms.block_end, ms.block_minutes,
         CAST(date_trunc('month', ms.start_time AT TIME ZONE 'UTC') AS date) AS month
  FROM marking_sessions AS ms
  WHERE ms.unit_id = :unit AND ms.start_time >= :since AND ms.start_time < :until
    AND ms.block_minutes IS NOT NULL) AS s
  ON s.month = p.month AND s.marker_id = p.marker_id
"""
