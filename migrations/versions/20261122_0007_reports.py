"""reports: the day-by-day stock history, low-stock alerts, the time a claim was activated

The history starts with today's figures: earlier days were not recorded.

Revision ID: 0007
Revises: 0006
Created: 2026-11-22
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from core import db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("claim", sa.Column("activated_at", db.UTCDateTime(timezone=True)))
    stock_day = op.create_table(
        "stock_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_stock_day")),
    )
    op.create_table(
        "low_stock_alert",
        sa.Column("threshold", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sent_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("threshold", name=op.f("pk_low_stock_alert")),
    )
    # An activated claim's activation time is that of its move to activated in the audit log.
    op.execute(
        "UPDATE claim SET activated_at = (SELECT max(occurred_at) FROM audit_event"
        " WHERE subject_kind = 'claim' AND subject_id = CAST(claim.id AS VARCHAR(100))"
        " AND action = 'claim.activated') WHERE status = 'activated'"
    )
    total = (
        op.get_bind()
        .execute(sa.text("SELECT on_hand, committed FROM stock_balance WHERE sku = '*'"))
        .first()
    )
    if total is not None:
        op.bulk_insert(
            stock_day,
            [
                {
                    "day": datetime.now(UTC).date(),
                    "on_hand": total.on_hand,
                    "available": total.on_hand - total.committed,
                }
            ],
        )


def downgrade() -> None:
    op.drop_table("low_stock_alert")
    op.drop_table("stock_day")
    op.drop_column("claim", "activated_at")
