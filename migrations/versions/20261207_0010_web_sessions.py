"""web sessions: sign-in sessions kept on the server, so signing out ends them

Sessions lived only in Flask's signed cookie: a cookie copied before sign-out still worked
after it. The cookie now holds a random id; this table keeps its hash, the session's data, its
owner and when it ends.

Revision ID: 0010
Revises: 0009
Created: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core import db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_session",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner_kind", sa.String(length=20), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("user_agent", sa.String(length=200), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_session")),
    )
    op.create_index("ix_web_session_owner", "web_session", ["owner_kind", "owner_id"])
    op.create_index(op.f("ix_web_session_expires_at"), "web_session", ["expires_at"])


def downgrade() -> None:
    op.drop_table("web_session")
