"""security keys: WebAuthn credentials, server-side challenges, staff recovery codes

Both Titan models count the Titan Security Key v2's AAGUID as theirs.

Revision ID: 0006
Revises: 0005
Created: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core import db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TITAN_V2 = "42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3"


def upgrade() -> None:
    op.add_column(
        "key_model",
        sa.Column("aaguids", db.JSONType, nullable=False, server_default=sa.text("'[]'")),
    )
    key_model = sa.table("key_model", sa.column("sku"), sa.column("aaguids", db.JSONType))
    op.execute(
        key_model.update()
        .where(key_model.c.sku.in_(["TITAN-USB-A-NFC", "TITAN-USB-C-NFC"]))
        .values(aaguids=[TITAN_V2])
    )
    op.create_table(
        "security_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("maintainer_id", sa.Integer(), nullable=True),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("credential_id", sa.String(length=1400), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("aaguid", sa.String(length=36), nullable=False),
        sa.Column("attestation_format", sa.String(length=20), nullable=False),
        sa.Column("attestation_object", sa.LargeBinary(), nullable=False),
        sa.Column("client_data", sa.LargeBinary(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("accepted_by", sa.String(length=200), nullable=False),
        sa.Column("accepted_reason", sa.String(length=1000), nullable=False),
        sa.CheckConstraint("(maintainer_id IS NULL) <> (staff_id IS NULL)", name="one_owner"),
        sa.CheckConstraint("outcome IN ('titan', 'other', 'withheld')", name="known_outcome"),
        sa.CheckConstraint("sign_count >= 0", name="sign_count_not_negative"),
        sa.ForeignKeyConstraint(["maintainer_id"], ["maintainer.id"]),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("credential_id"),
    )
    op.create_index(
        op.f("ix_security_key_maintainer_id"), "security_key", ["maintainer_id"], unique=False
    )
    op.create_index(op.f("ix_security_key_staff_id"), "security_key", ["staff_id"], unique=False)
    op.create_table(
        "webauthn_challenge",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("ceremony", sa.String(length=40), nullable=False),
        sa.Column("maintainer_id", sa.Integer(), nullable=True),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=4000), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["maintainer_id"], ["maintainer.id"]),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_webauthn_challenge_expires_at"), "webauthn_challenge", ["expires_at"], unique=False
    )
    op.create_table(
        "staff_recovery_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_hash"),
    )
    op.create_index(
        op.f("ix_staff_recovery_code_staff_id"), "staff_recovery_code", ["staff_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_staff_recovery_code_staff_id"), table_name="staff_recovery_code")
    op.drop_table("staff_recovery_code")
    op.drop_index(op.f("ix_webauthn_challenge_expires_at"), table_name="webauthn_challenge")
    op.drop_table("webauthn_challenge")
    op.drop_index(op.f("ix_security_key_staff_id"), table_name="security_key")
    op.drop_index(op.f("ix_security_key_maintainer_id"), table_name="security_key")
    op.drop_table("security_key")
    op.drop_column("key_model", "aaguids")
