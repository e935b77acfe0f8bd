"""Tables of the distribution package: key models and the stock ledger."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from db import UTCDateTime


class MovementKind(enum.StrEnum):
    """Why stock moved; the sign of the quantity follows from it (adjustments go either way)."""

    RECEIVED = "received"
    SHIPPED = "shipped"
    RETURNED = "returned"
    WRITTEN_OFF = "written_off"
    ADJUSTED = "adjusted"


class KeyModel(SQLModel, table=True):
    """A model of security key the programme hands out."""

    __tablename__ = "key_model"

    sku: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=100)
    connector: str = Field(max_length=20)


class StockMovement(SQLModel, table=True):
    """One row of the ledger; on-hand stock is the sum of quantities, never edited in place."""

    __tablename__ = "stock_movement"
    __table_args__ = (
        sa.CheckConstraint(
            "kind IN ('received', 'shipped', 'returned', 'written_off', 'adjusted')",
            name="known_kind",
        ),
        sa.CheckConstraint(
            "(kind IN ('received', 'returned') AND quantity > 0)"
            " OR (kind IN ('shipped', 'written_off') AND quantity < 0)"
            " OR (kind = 'adjusted' AND quantity <> 0)",
            name="signed_quantity",
        ),
        # A delivery note is received once per model, however often a script is re-run.
        sa.Index(
            "uq_stock_movement_received_reference",
            "sku",
            "reference",
            unique=True,
            sqlite_where=sa.text("kind = 'received'"),
            postgresql_where=sa.text("kind = 'received'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    sku: str = Field(foreign_key="key_model.sku", index=True, max_length=40)
    kind: str = Field(max_length=20)
    quantity: int
    occurred_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    actor_kind: str = Field(max_length=20)
    actor_id: int | None = None
    actor_label: str = Field(default="", max_length=200)
    reference: str = Field(max_length=100)
    note: str = Field(default="", max_length=1000)
