"""personal data: when a parcel's names, phone and address (and a label run's PDF) were erased
under the retention policy, and maintainers' requests for erasure

Nothing is erased by the migration itself: `claims purge-personal-data` does that.

Revision ID: 0008
Revises: 0007
Created: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core import db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns without a foreign key: both databases add them in place.
    op.add_column("shipment", sa.Column("personal_data_erased_at", db.UTCDateTime(timezone=True)))
    op.add_column("label_run", sa.Column("pdf_erased_at", db.UTCDateTime(timezone=True)))
    op.create_table(
        "erasure_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("maintainer_id", sa.Integer(), nullable=False),
        sa.Column("requested_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["maintainer_id"], ["maintainer.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_erasure_request_maintainer_id"),
        "erasure_request",
        ["maintainer_id"],
        unique=False,
    )
    op.create_index(
        "uq_erasure_request_open_per_maintainer",
        "erasure_request",
        ["maintainer_id"],
        unique=True,
        sqlite_where=sa.text("completed_at IS NULL"),
        postgresql_where=sa.text("completed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_erasure_request_open_per_maintainer", table_name="erasure_request")
    op.drop_index(op.f("ix_erasure_request_maintainer_id"), table_name="erasure_request")
    op.drop_table("erasure_request")
    op.drop_column("label_run", "pdf_erased_at")
    op.drop_column("shipment", "personal_data_erased_at")
