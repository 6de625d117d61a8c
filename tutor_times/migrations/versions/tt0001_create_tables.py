"""tutor_times: marking_sessions and session_activities

Revision ID: tt0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "tt0001"
down_revision = None
branch_labels = ("tutor_times",)
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def _fk(column: str, default: str) -> tuple[sa.ForeignKey, ...]:
    """The foreign key the host's models declare for ``column``, if its table exists yet.

    The host names its targets (``TutorTimes(user_fk=..., unit_fk=...)``) on the metadata
    its env.py gives Alembic. In a new project this branch runs before the host's first
    revision has created users and units; that revision's autogenerate then adds the keys.
    """
    target = default
    metadata = op.get_context().opts.get("target_metadata")
    declared = metadata.tables.get("marking_sessions") if metadata is not None else None
    if declared is not None:
        keys = list(declared.c[column].foreign_keys)
        if not keys:
            return ()
        target = keys[0].target_fullname
    table = target.rsplit(".", 1)[0]
    return (sa.ForeignKey(target),) if sa.inspect(op.get_bind()).has_table(table) else ()


def upgrade() -> None:
    op.create_table(
        "marking_sessions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("marker_id", sa.BigInteger, *_fk("marker_id", "users.id"), nullable=False),
        sa.Column("unit_id", sa.BigInteger, *_fk("unit_id", "units.id"), nullable=False),
        sa.Column("ip_address", sa.String(64), nullable=False),
        sa.Column("start_time", Time, nullable=False),
        sa.Column("end_time", Time),
        sa.Column("duration_minutes", sa.Integer),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.CheckConstraint(
            "end_time IS NULL OR (duration_minutes > 0 AND end_time >= start_time)",
            name="ck_marking_sessions_closed_duration",
        ),
    )
    op.create_index(
        "ix_marking_sessions_key_updated_at",
        "marking_sessions",
        ["marker_id", "unit_id", "ip_address", "updated_at"],
    )
    op.create_index(
        "uq_marking_sessions_open_key",
        "marking_sessions",
        ["marker_id", "unit_id", "ip_address"],
        unique=True,
        postgresql_where=sa.text("end_time IS NULL"),
        sqlite_where=sa.text("end_time IS NULL"),
    )
    op.create_index("ix_marking_sessions_unit_start", "marking_sessions", ["unit_id", "start_time"])
    op.create_table(
        "session_activities",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "marking_session_id",
            sa.BigInteger,
            sa.ForeignKey("marking_sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("project_id", sa.BigInteger),
        sa.Column("task_id", sa.BigInteger),
        sa.Column("task_definition_id", sa.BigInteger),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
    )
    op.create_index("ix_session_activities_action", "session_activities", ["action"])
    op.create_index("ix_session_activities_task_id", "session_activities", ["task_id"])
    op.create_index("ix_session_activities_created_at", "session_activities", ["created_at"])
    op.create_index(
        "ix_session_activities_session_created",
        "session_activities",
        ["marking_session_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_table("session_activities")
    op.drop_table("marking_sessions")
