"""fulfilment: label runs in the background, parcel contents, returns, losses and damage

Existing shipments get their claim's keys as contents and the purpose "first".

Revision ID: 0005
Revises: 0004
Created: 2026-11-22
"""

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core import db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "label_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reprint", sa.Boolean(), nullable=False),
        sa.Column("layout", sa.String(length=10), nullable=False),
        sa.Column("claim_ids", db.JSONType, nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("pages_done", sa.Integer(), nullable=False),
        sa.Column("pages_total", sa.Integer(), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_label", sa.String(length=200), nullable=False),
        sa.Column("printed", sa.Integer(), nullable=False),
        sa.Column("skipped", db.JSONType, nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint(
            "status IN ('rendering', 'done', 'failed')", name="known_label_run_status"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    # Not a batch: rebuilding claim would reflect maintainer's expression index. SQLite adds a
    # nullable column with its REFERENCES clause in place; PostgreSQL adds a named constraint.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE claim ADD COLUMN label_run_id INTEGER REFERENCES label_run (id)")
    else:
        op.add_column(
            "claim",
            sa.Column(
                "label_run_id",
                sa.Integer(),
                sa.ForeignKey("label_run.id", name="fk_claim_label_run_id_label_run"),
                nullable=True,
            ),
        )
    op.add_column(
        "shipment",
        sa.Column("items", db.JSONType, nullable=False, server_default=sa.text("'{}'")),
    )
    op.add_column(
        "shipment",
        sa.Column("purpose", sa.String(length=20), nullable=False, server_default="first"),
    )
    _fill_shipment_items()
    op.create_table(
        "parcel_exception",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("shipment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("sku", sa.String(length=40), nullable=True),
        sa.Column("reported_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reported_by", sa.String(length=200), nullable=False),
        sa.Column("replacement", sa.String(length=20), nullable=False),
        sa.Column("decided_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        sa.Column("decision_note", sa.String(length=1000), nullable=False),
        sa.Column("replacement_shipment_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("kind IN ('returned', 'lost', 'damaged')", name="known_exception_kind"),
        sa.CheckConstraint(
            "replacement IN ('not_needed', 'requested', 'approved', 'declined')",
            name="known_replacement",
        ),
        sa.ForeignKeyConstraint(["claim_id"], ["claim.id"]),
        sa.ForeignKeyConstraint(["shipment_id"], ["shipment.id"]),
        sa.ForeignKeyConstraint(["sku"], ["key_model.sku"]),
        sa.ForeignKeyConstraint(["replacement_shipment_id"], ["shipment.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_parcel_exception_claim_id"), "parcel_exception", ["claim_id"], unique=False
    )


def _fill_shipment_items() -> None:
    connection = op.get_bind()
    items: dict[int, dict[str, int]] = defaultdict(dict)
    for claim_id, sku, quantity in connection.execute(
        sa.text("SELECT claim_id, sku, quantity FROM claim_item")
    ):
        items[claim_id][sku] = quantity
    shipment = sa.table("shipment", sa.column("id"), sa.column("items", db.JSONType))
    for shipment_id, claim_id in connection.execute(sa.text("SELECT id, claim_id FROM shipment")):
        connection.execute(
            shipment.update()
            .where(shipment.c.id == shipment_id)
            .values(items=items.get(claim_id, {}))
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_parcel_exception_claim_id"), table_name="parcel_exception")
    op.drop_table("parcel_exception")
    op.drop_column("shipment", "purpose")
    op.drop_column("shipment", "items")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_claim_label_run_id_label_run", "claim", type_="foreignkey")
    op.drop_column("claim", "label_run_id")
    op.drop_table("label_run")
