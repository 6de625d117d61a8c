"""tutor_times: R12's split kept for each tutor's months and blocks in a unit

- ``tutor_times_class_months``: per (unit, UTC month of a block's start, tutor), the version
  of the summary roll-up's row and the fingerprint of the unit's classes the month's
  blocks were split against, and how many of its blocks reach past what that fingerprint
  covers;
- ``tutor_times_class_blocks``: each of those blocks that meets a class: its stored
  minutes, its length and its time inside classes (see ``tutor_times/class_store.py``).

Reports fill them as they split, and use only what still agrees: nothing to fill here, no
trigger.

Revision ID: tt0011
Revises: tt0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "tt0011"
down_revision = "tt0010"
branch_labels = None
depends_on = None

MONTHS = "tutor_times_class_months"
BLOCKS = "tutor_times_class_blocks"


def upgrade() -> None:
    op.create_table(
        MONTHS,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("marker_id", sa.BigInteger, nullable=False),
        sa.Column("seen", sa.BigInteger, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("long_blocks", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint(
            "unit_id",
            "month",
            "marker_id",
            postgresql_include=["seen", "fingerprint", "long_blocks"],
        ),
    )
    op.create_table(
        BLOCKS,
        sa.Column("unit_id", sa.BigInteger, nullable=False),
        sa.Column("block_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("marker_id", sa.BigInteger, nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("block_minutes", sa.BigInteger, nullable=False),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("inside", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "unit_id",
            "block_start",
            "marker_id",
            postgresql_include=["month", "block_minutes", "length", "inside"],
        ),
    )


def downgrade() -> None:
    op.drop_table(BLOCKS)
    op.drop_table(MONTHS)
