"""claims: stock balances, claims, items, shipments, waiting list

The stock_balance rows are filled from the ledger, so an existing programme keeps its stock.

Revision ID: 0003
Revises: 0002
Created: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core import db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stock_balance",
        sa.Column("sku", sa.String(length=40), nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("committed", sa.Integer(), nullable=False),
        sa.CheckConstraint("committed <= on_hand", name=op.f("ck_stock_balance_never_oversold")),
        sa.CheckConstraint("committed >= 0", name=op.f("ck_stock_balance_committed_not_negative")),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_stock_balance")),
    )
    op.create_table(
        "claim",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("maintainer_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("code_hint", sa.String(length=8), nullable=False),
        sa.Column("keys_reserved", sa.Integer(), nullable=False),
        sa.Column("issued_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('issued', 'redeemed', 'label_printed', 'shipped', 'delivered', 'activated', 'expired', 'cancelled', 'returned', 'lost')",
            name=op.f("ck_claim_known_status"),
        ),
        sa.CheckConstraint("keys_reserved >= 0", name=op.f("ck_claim_reserved_not_negative")),
        sa.ForeignKeyConstraint(
            ["maintainer_id"], ["maintainer.id"], name=op.f("fk_claim_maintainer_id_maintainer")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_claim")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_claim_code_hash")),
    )
    with op.batch_alter_table("claim", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_claim_maintainer_id"), ["maintainer_id"], unique=False)
        batch_op.create_index("ix_claim_status_expires", ["status", "expires_at"], unique=False)
        batch_op.create_index(
            "uq_claim_active_per_maintainer",
            ["maintainer_id"],
            unique=True,
            sqlite_where=sa.text("status NOT IN ('expired', 'cancelled')"),
            postgresql_where=sa.text("status NOT IN ('expired', 'cancelled')"),
        )

    op.create_table(
        "claim_item",
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=40), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_claim_item_positive_quantity")),
        sa.ForeignKeyConstraint(
            ["claim_id"], ["claim.id"], name=op.f("fk_claim_item_claim_id_claim")
        ),
        sa.ForeignKeyConstraint(
            ["sku"], ["key_model.sku"], name=op.f("fk_claim_item_sku_key_model")
        ),
        sa.PrimaryKeyConstraint("claim_id", "sku", name=op.f("pk_claim_item")),
    )
    op.create_table(
        "shipment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=20), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("recipient_name", sa.String(length=100), nullable=False),
        sa.Column("recipient_name_local", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column(
            "address",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "address_lines",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["claim_id"], ["claim.id"], name=op.f("fk_shipment_claim_id_claim")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipment")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_shipment_idempotency_key")),
        sa.UniqueConstraint("reference", name=op.f("uq_shipment_reference")),
    )
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shipment_claim_id"), ["claim_id"], unique=False)

    op.create_table(
        "waitlist_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("maintainer_id", sa.Integer(), nullable=False),
        sa.Column("joined_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("offered_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claim_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["claim_id"], ["claim.id"], name=op.f("fk_waitlist_entry_claim_id_claim")
        ),
        sa.ForeignKeyConstraint(
            ["maintainer_id"],
            ["maintainer.id"],
            name=op.f("fk_waitlist_entry_maintainer_id_maintainer"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_waitlist_entry")),
    )
    with op.batch_alter_table("waitlist_entry", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_waitlist_entry_maintainer_id"), ["maintainer_id"], unique=False
        )
        batch_op.create_index(
            "uq_waitlist_waiting_maintainer",
            ["maintainer_id"],
            unique=True,
            sqlite_where=sa.text("offered_at IS NULL"),
            postgresql_where=sa.text("offered_at IS NULL"),
        )

    # The balances start from the ledger as it stands: one row per model and one in total.
    op.execute(
        """
        INSERT INTO stock_balance (sku, on_hand, committed)
        SELECT key_model.sku, COALESCE(SUM(stock_movement.quantity), 0), 0
        FROM key_model LEFT JOIN stock_movement ON stock_movement.sku = key_model.sku
        GROUP BY key_model.sku
        """
    )
    op.execute(
        "INSERT INTO stock_balance (sku, on_hand, committed) "
        "SELECT '*', COALESCE(SUM(quantity), 0), 0 FROM stock_movement"
    )


def downgrade() -> None:
    with op.batch_alter_table("waitlist_entry", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_waitlist_waiting_maintainer",
            sqlite_where=sa.text("offered_at IS NULL"),
            postgresql_where=sa.text("offered_at IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_waitlist_entry_maintainer_id"))

    op.drop_table("waitlist_entry")
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipment_claim_id"))

    op.drop_table("shipment")
    op.drop_table("claim_item")
    with op.batch_alter_table("claim", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_claim_active_per_maintainer",
            sqlite_where=sa.text("status NOT IN ('expired', 'cancelled')"),
            postgresql_where=sa.text("status NOT IN ('expired', 'cancelled')"),
        )
        batch_op.drop_index("ix_claim_status_expires")
        batch_op.drop_index(batch_op.f("ix_claim_maintainer_id"))

    op.drop_table("claim")
    op.drop_table("stock_balance")
