"""shipping: carrier, tracking, shipped and delivered times

Existing shipments get empty carrier and tracking number (they have not shipped).

Revision ID: 0004
Revises: 0003
Created: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core import db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("carrier", sa.String(length=40), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("tracking_number", sa.String(length=60), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("shipped_at", db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("delivered_at", db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.drop_column("delivered_at")
        batch_op.drop_column("shipped_at")
        batch_op.drop_column("tracking_number")
        batch_op.drop_column("carrier")
