"""R12 in SQL: the statements that split each block of a report by the classes of its key
(:meth:`~tutor_times.store.class_times.Timetable.split_blocks`), over integer microseconds or,
on psycopg 3, over real instants, and how a statement is made of them; and the arrays
psycopg 3 sends in PostgreSQL's binary form (its dumper is registered by
:func:`~tutor_times.store.bulk.binary_arrays`)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

#: SQL types made once: a type object made afresh would be inspected again for SQLAlchemy's
#: statement cache key on every report
BIGINT = sa.BigInteger()
TEXT = sa.Text()
BIG_ARRAY = postgresql.ARRAY(BIGINT)
#: R12 per block in PostgreSQL, layer by layer over the CTEs tt_blocks and tt_timetable:
#: the key's slot, the block's ends on its line, the intervals they fall in, the split
SPLIT_SQL = """
SELECT x.bucket, x.marker, x.m AS minutes,
  CASE WHEN x.b <= x.a THEN CASE WHEN x.a < x.ea THEN x.m ELSE 0 END
  ELSE CAST(div(2 * x.m * ((x.bb + greatest(0, least(x.b, x.eb) - x.sb))
                 - (x.ba + greatest(0, least(x.a, x.ea) - x.sa))) + (x.b - x.a),
                2 * (x.b - x.a)) AS BIGINT) END AS during
FROM (
  SELECT k.bucket, k.marker, k.m, k.a, k.b,
    (SELECT class_starts FROM tt_timetable)[k.ia] AS sa,
    (SELECT class_ends FROM tt_timetable)[k.ia] AS ea,
    (SELECT class_before FROM tt_timetable)[k.ia] AS ba,
    (SELECT class_starts FROM tt_timetable)[k.ib] AS sb,
    (SELECT class_ends FROM tt_timetable)[k.ib] AS eb,
    (SELECT class_before FROM tt_timetable)[k.ib] AS bb
  FROM (
    SELECT j.bucket, j.marker, j.m, j.a, j.b,
      width_bucket(j.a, (SELECT class_starts FROM tt_timetable)) AS ia,
      width_bucket(j.b, (SELECT class_starts FROM tt_timetable)) AS ib
    FROM (
      SELECT o.bucket, o.marker, o.m,
        o.slot * {window} + least(greatest(
          CAST(extract(epoch FROM o.first) * 1000000 AS BIGINT) - ({base}), 0), {last}) AS a,
        o.slot * {window} + least(greatest(
          CAST(extract(epoch FROM o.last) * 1000000 AS BIGINT) - ({base}), 0), {last}) AS b
      FROM (
        SELECT g.bucket, g.marker, g.first, g.last, g.m,
          CAST(CASE WHEN (SELECT class_owners FROM tt_timetable)[g.at] = g.key
               THEN g.at - 1 ELSE 0 END AS BIGINT) AS slot
        FROM (
          SELECT tt_blocks.bucket, tt_blocks.marker, tt_blocks.first, tt_blocks.last,
            CAST(tt_blocks.minutes AS BIGINT) AS m,
            CAST(tt_blocks.{key} AS BIGINT) AS key,
            width_bucket(CAST(tt_blocks.{key} AS BIGINT),
                         (SELECT class_owners FROM tt_timetable)) AS at
          FROM tt_blocks OFFSET 0) AS g OFFSET 0) AS o OFFSET 0) AS j OFFSET 0) AS k OFFSET 0
) AS x
"""


#: R12 per block in PostgreSQL over real instants (psycopg 3: :meth:`Timetable.time_arrays`),
#: over the CTEs tt_blocks and tt_timetable. Each tutor's (or unit's) line of classes is cut
#: out of the arrays once, in a hash join on its key, not once a block; a block outside the
#: span of every class sent gets no line. Then, layer by layer: the classes the block's ends
#: fall in (binary search of its line, as timestamps), and the split: a block in a gap
#: between two classes (most blocks) is 0 without arithmetic, the rest count their
#: microseconds in and out of class exactly, as :meth:`Timetable.during` does.
SPLIT_BY_TIME_SQL = """
SELECT y.bucket, y.marker, y.m AS minutes,
  CASE WHEN y.ia IS NULL THEN 0
    WHEN y.ia = y.ib AND y.first >= (SELECT class_ends FROM tt_timetable)[y.ia] THEN 0
    WHEN y.last <= y.first THEN y.m
    ELSE CAST(div(
      2 * y.m * (
        (SELECT class_before FROM tt_timetable)[y.ib]
        + CAST(1000000 * extract(epoch FROM greatest(interval '0',
            least(y.last, (SELECT class_ends FROM tt_timetable)[y.ib])
            - (SELECT class_starts FROM tt_timetable)[y.ib])) AS BIGINT)
        - (SELECT class_before FROM tt_timetable)[y.ia]
        - CAST(1000000 * extract(epoch FROM greatest(interval '0',
            least(y.first, (SELECT class_ends FROM tt_timetable)[y.ia])
            - (SELECT class_starts FROM tt_timetable)[y.ia])) AS BIGINT))
      + CAST(1000000 * extract(epoch FROM y.last - y.first) AS BIGINT),
      2 * CAST(1000000 * extract(epoch FROM y.last - y.first) AS BIGINT)) AS BIGINT)
  END AS during
FROM (
  SELECT z.bucket, z.marker, z.m, z.first, z.last,
    z.lo - 1 + width_bucket(z.first, z.line) AS ia,
    z.lo - 1 + width_bucket(z.last, z.line) AS ib
  FROM (
    SELECT b.bucket, b.marker, b.first, b.last, CAST(b.minutes AS BIGINT) AS m,
      CASE WHEN b.last < (SELECT span_lo FROM tt_timetable)
             OR b.first >= (SELECT span_hi FROM tt_timetable) THEN NULL
        ELSE coalesce(l.lo, 1) END AS lo,
      coalesce(l.line, (SELECT default_line FROM tt_timetable)) AS line
    FROM tt_blocks AS b LEFT JOIN (
      SELECT u.key, u.lo, (SELECT class_starts FROM tt_timetable)[u.lo:u.hi] AS line
      FROM unnest((SELECT class_owners FROM tt_timetable), (SELECT line_lo FROM tt_timetable),
                  (SELECT line_hi FROM tt_timetable)) AS u(key, lo, hi)
    ) AS l ON l.key = b.{key}
    OFFSET 0) AS z OFFSET 0) AS y
"""


@lru_cache(maxsize=8)
def _squeezed(sql: str) -> sa.TextClause:
    """``sql`` without its layout, as a text clause made once (reading a text clause's
    bind parameters out of it is a regular-expression pass over its whole text)."""
    return sa.text(" ".join(sql.split()))


def split_statement(sql: str, blocks: sa.CTE, arrays: sa.CTE) -> sa.Subquery:
    """A split statement's rows, (bucket, marker, minutes, during), over its ``blocks`` and
    the timetable's ``arrays``. Its text is sent with the layout squeezed out: psycopg
    keeps a statement's parsed form only while it is at most 4 KB, and a report's statement
    with the split is just over that with it."""
    return (
        _squeezed(sql)
        .columns(
            sa.column("bucket", sa.Integer()),
            sa.column("marker", BIGINT),
            sa.column("minutes", BIGINT),
            sa.column("during", BIGINT),
        )
        .add_cte(blocks, arrays)
        .subquery("split")
    )


#: PostgreSQL's binary form of a one-dimensional array of 8-byte values without NULLs: ndim,
#: has-null, element type, length, lower bound; then each element as its byte length and value
INT8_OID = 20
TIMESTAMPTZ_OID = 1184
INT8_ARRAY_OID = 1016
TIMESTAMPTZ_ARRAY_OID = 1185
ARRAY_HEADER = struct.Struct("!iiIii")


@dataclass(frozen=True, slots=True)
class PackedArray:
    """An array in PostgreSQL's binary form, as psycopg 3 sends it with :class:`PACKED`."""

    data: bytes

    #: the type of the elements
    element_oid = INT8_OID

    @classmethod
    def of(cls, values: Sequence[int]) -> PackedArray:
        """``values`` as 8-byte integers (int8, or timestamptz in microseconds)."""
        n = len(values)
        body = struct.pack(f"!{n * 'iq'}", *[x for v in values for x in (8, v)])
        return cls(ARRAY_HEADER.pack(1, 0, cls.element_oid, n, 1) + body)


class PackedInts(PackedArray):
    """An int8[]."""


class PackedTimes(PackedArray):
    """A timestamptz[] (microseconds after 2000-01-01 UTC)."""

    element_oid = TIMESTAMPTZ_OID


class PackedType(sa.types.UserDefinedType[PackedArray]):
    """A bound :class:`PackedArray`: handed to the driver as it is (no processing), bound
    without a cast (its dumper names its type to PostgreSQL)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "ANYARRAY"


PACKED = PackedType()
TIME = sa.DateTime(timezone=True)
