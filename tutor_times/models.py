"""The two tables, declared on the host's own ``db`` metadata (§5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Dialect

from .accounting import UTC

MARKING_SESSIONS = "marking_sessions"
SESSION_ACTIVITIES = "session_activities"

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


class Models(NamedTuple):
    MarkingSession: Any
    SessionActivity: Any


_built: WeakKeyDictionary[SQLAlchemy, Models] = WeakKeyDictionary()


def build_models(db: SQLAlchemy, *, user_fk: str | None, unit_fk: str | None) -> Models:
    """Declare the tables on ``db`` once, so the host's Flask-Migrate sees them."""
    if db in _built:
        return _built[db]
    if MARKING_SESSIONS in db.metadata.tables:
        raise RuntimeError(
            f"the table {MARKING_SESSIONS!r} is already declared on this db's metadata"
        )

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

        activities = db.relationship(
            "SessionActivity",
            back_populates="marking_session",
            order_by="SessionActivity.created_at",
            lazy="select",
        )

        __table_args__ = (
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
            sa.Index("ix_marking_sessions_unit_start", "unit_id", "start_time"),
            # R4: a closed session has a positive duration and does not end before it starts.
            sa.CheckConstraint(
                "end_time IS NULL OR (duration_minutes > 0 AND end_time >= start_time)",
                name="ck_marking_sessions_closed_duration",
            ),
        )

        @property
        def active(self) -> bool:
            return self.end_time is None

        def __repr__(self) -> str:
            return (
                f"<MarkingSession {self.id} marker={self.marker_id} unit={self.unit_id}"
                f" {self.start_time:%Y-%m-%d %H:%M:%S}..{self.end_time or 'open'}>"
            )

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

        marking_session = db.relationship("MarkingSession", back_populates="activities")

        __table_args__ = (
            # Covering on PostgreSQL: reports count a session's assessments and read their
            # tasks from the index alone.
            sa.Index(
                "ix_session_activities_session_created",
                "marking_session_id",
                "created_at",
                postgresql_include=["action", "task_id", "task_definition_id"],
            ),
        )

        def __repr__(self) -> str:
            return (
                f"<SessionActivity {self.id} {self.action} session={self.marking_session_id}"
                f" at {self.created_at:%Y-%m-%d %H:%M:%S}>"
            )

    models = Models(MarkingSession, SessionActivity)
    _built[db] = models
    return models
