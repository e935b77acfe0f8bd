"""security key removal: a key its owner removed is kept, marked with when

Keys were deleted outright (a staff member's spare key) or never removable (a maintainer's
key registered without its make and model, say). Now a removed key keeps its row and its
attestation; it is no longer listed, offered or accepted for sign-in.

Revision ID: 0009
Revises: 0008
Created: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core import db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a foreign key: both databases add it in place.
    op.add_column("security_key", sa.Column("removed_at", db.UTCDateTime(timezone=True)))


def downgrade() -> None:
    # Removed keys would come back as usable ones: refuse rather than revive them silently.
    removed = op.get_bind().execute(
        sa.text("SELECT COUNT(*) FROM security_key WHERE removed_at IS NOT NULL")
    )
    if removed.scalar():
        raise RuntimeError(
            "Some security keys were removed; downgrading would make them usable again."
        )
    op.drop_column("security_key", "removed_at")
