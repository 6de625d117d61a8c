"""tutorials and tutorial_enrolments: the demo's weekly timetable and who is in each class

Revision ID: demo0003
Revises: demo0002
Create Date: 2026-11-26

"""

import sqlalchemy as sa
from alembic import op

revision = "demo0003"
down_revision = "demo0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tutorials",
        sa.Column("id", Id, nullable=False),
        sa.Column("unit_id", sa.BigInteger(), nullable=False),
        sa.Column("tutor_id", sa.BigInteger(), nullable=True),
        sa.Column("abbreviation", sa.String(length=20), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.Time(), nullable=False),
        sa.Column("ends_at", sa.Time(), nullable=False),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="ck_tutorials_weekday"),
        sa.CheckConstraint("ends_at > starts_at", name="ck_tutorials_order"),
        sa.ForeignKeyConstraint(["tutor_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("unit_id", "abbreviation"),
    )
    op.create_table(
        "tutorial_enrolments",
        sa.Column("id", Id, nullable=False),
        sa.Column("tutorial_id", sa.BigInteger(), nullable=False),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["tutorial_id"], ["tutorials.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tutorial_id", "project_id"),
    )


def downgrade() -> None:
    op.drop_table("tutorial_enrolments")
    op.drop_table("tutorials")
