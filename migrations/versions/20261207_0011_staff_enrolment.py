"""staff enrolment: a staff member's first security key needs a link an admin issued

The first key was registered by whoever knew the password (trust on first use). Now an admin
issues a single-use, expiring enrolment link; this table keeps the hash of its token.

Revision ID: 0011
Revises: 0010
Created: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core import db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staff_enrolment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("replaced_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_staff_enrolment_staff_id_staff")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_enrolment")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_staff_enrolment_token_hash")),
    )
    op.create_index(op.f("ix_staff_enrolment_staff_id"), "staff_enrolment", ["staff_id"])


def downgrade() -> None:
    op.drop_table("staff_enrolment")
