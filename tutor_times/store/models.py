"""The tables (sessions, activities, and those of operations), declared on the host's own ``db``
metadata."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from ..core.accounting import UTC
from . import class_store, rollups, tallies

MARKING_SESSIONS = "marking_sessions"
SESSION_ACTIVITIES = "session_activities"
IDEMPOTENCY_KEYS = "tutor_times_idempotency_keys"
JOBS = "tutor_times_jobs"

#: the sources of an activity (R11): tracked by the server, or reported by a client
SERVER, CLIENT = "server", "client"
SOURCES = (SERVER, CLIENT)

#: an imported activity's source key, unique among activities (NULL for live ones)
IMPORT_KEY_LENGTH = 200
IMPORT_KEY_INDEX = "uq_session_activities_import_key"

CLOSED_DURATION_CHECK = (
    "(end_time IS NULL AND duration_minutes IS NULL)"
    " OR (end_time IS NOT NULL AND duration_minutes IS NOT NULL"
    " AND duration_minutes > 0 AND end_time >= start_time)"
)

#: what triggers on ``marking_sessions`` keep on PostgreSQL: the tasks report's tallies and
#: the summary's months
UPKEEPS = (
    tallies.TALLIES,
    tallies.Upkeep(
        function=rollups.FUNCTION,
        counted=rollups.ROLLED,
        read=rollups.READ,
        body=rollups.roll_body(tallies.SIGNED),
        declare="",
        helpers=rollups.HELPERS,
        dropped=rollups.DROPPED,
        truncate=rollups.TRUNCATE,
    ),
)
#: PostgreSQL: a session is tallied (:data:`.tallies.KEPT`), as an index predicate
LISTS_AGREE = tallies.KEPT.format(r="")

#: what a report reads of each session of its range, besides unit and start
REPORTED = (
    "id",
    "marker_id",
    "assessments",
    "block_start",
    "block_last_start",
    "block_end",
    "block_minutes",
)

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL keeps it as ``timestamptz``; SQLite, which has no time zones, keeps the
    naive UTC wall time. Naive datetimes are refused so no local time slips in.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: tutor_times stores aware UTC times")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class IdList(sa.types.TypeDecorator[list[int | None]]):
    """A list of ids (None allowed): a ``bigint[]`` on PostgreSQL, JSON text elsewhere."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(sa.BigInteger()))
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: list[int | None] | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return json.dumps(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> list[int | None] | None:
        if value is None:
            return None
        return list(value) if dialect.name == "postgresql" else list(json.loads(value))


class Models(NamedTuple):
    MarkingSession: Any
    SessionActivity: Any
    #: the answers of requests that carried an idempotency key (a Core table)
    IdempotencyKeys: Any = None
    #: one row per recurring job: the worker's heartbeat, the daily retention (a Core table)
    Jobs: Any = None
    #: the tasks report's tallies (:mod:`.tallies`; Core tables, kept on PostgreSQL only):
    #: occurrences of tasks and markers, their keys, and the assessments per day
    Assessed: Any = None
    AssessedKeys: Any = None
    AssessedDays: Any = None
    #: ... the assessments per month, and each unit's number of keys per definition and kind
    AssessedMonths: Any = None
    AssessedTotals: Any = None
    #: the summary's roll-up of each tutor's months (:mod:`.rollups`; PostgreSQL only)
    TutorMonths: Any = None
    #: R12's split of each tutor's months and blocks, and what it was split against
    #: (:mod:`.class_store`; PostgreSQL only)
    ClassMonths: Any = None
    ClassBlocks: Any = None
    #: each (unit, month)'s version, new whenever its roll-up rows change (:mod:`.rollups`),
    #: and the months whose every tutor's stored split agreed at one (:mod:`.class_store`)
    MonthVersions: Any = None
    ClassChecked: Any = None


_built: WeakKeyDictionary[SQLAlchemy, Models] = WeakKeyDictionary()


def build_models(db: SQLAlchemy, *, user_fk: str | None, unit_fk: str | None) -> Models:
    """Declare the tables on ``db`` once, so the host's Flask-Migrate sees them."""
    if db in _built:
        return _built[db]
    if MARKING_SESSIONS in db.metadata.tables:
        raise RuntimeError(
            f"the table {MARKING_SESSIONS!r} is already declared on this db's metadata"
        )

    MarkingSession = _session_model(db, user_fk=user_fk, unit_fk=unit_fk)
    SessionActivity = _activity_model(db)
    _listen_for_upkeeps(db.metadata, MarkingSession.__table__)
    models = Models(
        MarkingSession,
        SessionActivity,
        *_operations_tables(db.metadata),
        *tallies.tables(db.metadata, UTCDateTime),
        rollups.table(db.metadata),
        *class_store.tables(db.metadata, UTCDateTime),
        rollups.versions_table(db.metadata),
        class_store.checked_table(db.metadata),
    )
    _built[db] = models
    return models


def _session_model(db: SQLAlchemy, *, user_fk: str | None, unit_fk: str | None) -> Any:
    """The marking sessions' model: a key's sitting, and a closed one's stored figures."""

    def fk(target: str | None) -> tuple[Any, ...]:
        return (sa.ForeignKey(target),) if target else ()

    class MarkingSession(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = MARKING_SESSIONS

        id = sa.Column(BigId, primary_key=True)
        marker_id = sa.Column(sa.BigInteger, *fk(user_fk), nullable=False)
        unit_id = sa.Column(sa.BigInteger, *fk(unit_fk), nullable=False)
        ip_address = sa.Column(sa.String(64), nullable=False)
        start_time = sa.Column(UTCDateTime, nullable=False)
        end_time = sa.Column(UTCDateTime)
        duration_minutes = sa.Column(sa.Integer)
        created_at = sa.Column(UTCDateTime, nullable=False)
        updated_at = sa.Column(UTCDateTime, nullable=False)
        # Figures of a closed session, kept by figures.py (NULL while open): its assessing
        # activities, and the R10 block of its tutor's closed sessions in the unit that it
        # belongs to — first start, last session start, end — with the block's whole
        # minutes (before R4's minimum) on the block's first session only.
        assessments = sa.Column(sa.Integer)
        block_start = sa.Column(UTCDateTime)
        block_last_start = sa.Column(UTCDateTime)
        block_end = sa.Column(UTCDateTime)
        block_minutes = sa.Column(sa.Integer)
        # the task definition and task of each assessing activity, in the order they came
        # (the tasks report counts them without reading the activities)
        assessed_definitions = sa.Column(IdList)
        assessed_tasks = sa.Column(IdList)

        activities = db.relationship(
            "SessionActivity",
            back_populates="marking_session",
            order_by="SessionActivity.created_at",
            lazy="select",
        )

        __table_args__ = (
            *_session_indexes(),
            # R4: a closed session has a positive duration and does not end before it
            # starts; an open one has no duration yet. Spelt without a bare comparison on a
            # nullable column, since a CHECK that evaluates to NULL passes.
            sa.CheckConstraint(CLOSED_DURATION_CHECK, name="ck_marking_sessions_closed_duration"),
        )

        @property
        def active(self) -> bool:
            return self.end_time is None

        def __repr__(self) -> str:
            return (
                f"<MarkingSession {self.id} marker={self.marker_id} unit={self.unit_id}"
                f" {self.start_time:%Y-%m-%d %H:%M:%S}..{self.end_time or 'open'}>"
            )

    return MarkingSession


def _session_indexes() -> tuple[sa.Index, ...]:
    """The marking sessions' indexes, each with what it serves."""
    return (
        sa.Index(
            "ix_marking_sessions_key_updated_at",
            "marker_id",
            "unit_id",
            "ip_address",
            "updated_at",
        ),
        # R5: at most one open session per key, whatever the code does.
        sa.Index(
            "uq_marking_sessions_open_key",
            "marker_id",
            "unit_id",
            "ip_address",
            unique=True,
            postgresql_where=sa.text("end_time IS NULL"),
            sqlite_where=sa.text("end_time IS NULL"),
        ),
        # Reports add up a range's stored figures from this index alone on PostgreSQL.
        sa.Index(
            "ix_marking_sessions_unit_start",
            "unit_id",
            "start_time",
            postgresql_include=list(REPORTED),
        ),
        # A report finds the sessions of its range that have no figures (the open ones).
        sa.Index(
            "ix_marking_sessions_unfigured",
            "unit_id",
            "start_time",
            postgresql_where=sa.text("block_start IS NULL"),
            sqlite_where=sa.text("block_start IS NULL"),
        ),
        # The tasks report finds the sessions of a range that are not tallied (the open
        # ones, and any whose lists a writer of an earlier version left unset or short);
        # SQLite keeps no tallies (an index of the open sessions, as small).
        sa.Index(
            "ix_marking_sessions_untallied",
            "unit_id",
            "start_time",
            postgresql_where=sa.text(f"NOT {LISTS_AGREE}"),
            sqlite_where=sa.text("assessments IS NULL"),
        ),
        # Keeping the figures finds a tutor's blocks that reach a time by their end.
        sa.Index("ix_marking_sessions_tutor_block_end", "unit_id", "marker_id", "block_end"),
        # Placing a late or historical activity looks for the key's neighbouring sessions
        # by start time.
        sa.Index(
            "ix_marking_sessions_key_start",
            "marker_id",
            "unit_id",
            "ip_address",
            "start_time",
        ),
    )


def _activity_model(db: SQLAlchemy) -> Any:
    """The session activities' model: one tracked, posted or imported action."""

    class SessionActivity(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = SESSION_ACTIVITIES

        id = sa.Column(BigId, primary_key=True)
        marking_session_id = sa.Column(
            sa.BigInteger,
            sa.ForeignKey(f"{MARKING_SESSIONS}.id", ondelete="CASCADE"),
            nullable=False,
        )
        action = sa.Column(sa.String(64), nullable=False, index=True)
        project_id = sa.Column(sa.BigInteger)
        task_id = sa.Column(sa.BigInteger, index=True)
        task_definition_id = sa.Column(sa.BigInteger)
        created_at = sa.Column(UTCDateTime, nullable=False, index=True)
        updated_at = sa.Column(UTCDateTime, nullable=False)
        #: who reported it: "server" (a tracked host endpoint or record_activity) or
        #: "client" (POST /activities, e.g. a reading heartbeat) — R11
        source = sa.Column(sa.String(16), nullable=False, default=SERVER, server_default=SERVER)
        #: where an imported activity came from: its source and what the row says (a digest
        #: of its fields and its place among identical rows), or a key column of the source.
        #: Importing the same rows again adds nothing. NULL for live activities.
        import_key = sa.Column(sa.String(IMPORT_KEY_LENGTH))

        marking_session = db.relationship("MarkingSession", back_populates="activities")

        __table_args__ = (
            # Covering on PostgreSQL: reports count an open session's assessments and read
            # their tasks from the index alone (a closed session keeps both).
            sa.Index(
                "ix_session_activities_session_created",
                "marking_session_id",
                "created_at",
                postgresql_include=["action", "task_id", "task_definition_id"],
            ),
            sa.Index(IMPORT_KEY_INDEX, "import_key", unique=True),
        )

        def __repr__(self) -> str:
            return (
                f"<SessionActivity {self.id} {self.action} session={self.marking_session_id}"
                f" at {self.created_at:%Y-%m-%d %H:%M:%S}>"
            )

    return SessionActivity


def _listen_for_upkeeps(metadata: sa.MetaData, sessions: sa.Table) -> None:
    """Create the upkeeps' functions and triggers with the tables, and drop them first."""
    # each upkeep's functions and triggers (the tallies', the summary months') once every
    # table is there (the functions name the tables' row types), and gone before the
    # sessions' table is
    for target, event, statements in (
        (metadata, "after_create", [s for u in UPKEEPS for s in tallies.create_statements(u)]),
        (
            sessions,
            "before_drop",
            [s for u in UPKEEPS for s in tallies.drop_statements(u)],
        ),
    ):
        for statement in statements:
            ddl = sa.DDL(statement)  # type: ignore[no-untyped-call]
            sa.event.listen(target, event, ddl.execute_if(dialect="postgresql"))


def _operations_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The tables of operations: idempotency keys, and the worker's jobs."""
    keys = sa.Table(
        IDEMPOTENCY_KEYS,
        metadata,
        # what the key was given to: "activities" (POST /activities) or "track" (@track)
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("user_id", sa.BigInteger, primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        # a hash of the request the key was first used with: another request is refused
        sa.Column("fingerprint", sa.String(64), nullable=False),
        # NULL while the first request is in progress
        sa.Column("status", sa.Integer),
        sa.Column("body", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False, index=True),
    )
    jobs = sa.Table(
        JOBS,
        metadata,
        sa.Column("name", sa.String(64), primary_key=True),
        # the heartbeat's time, or when the job last started (its lease)
        sa.Column("ran_at", UTCDateTime, nullable=False),
        sa.Column("holder", sa.String(128)),
    )
    return keys, jobs
