"""foundation: accounts, audit, outbox, projects, stock ledger

Also: case-insensitive unique usernames and emails (expression indexes, which autogenerate
cannot see), the two Titan models of the programme, and triggers that make the audit log and
the stock ledger append-only on both SQLite and PostgreSQL.

Revision ID: 0001
Revises: (none)
Created: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core import db

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("occurred_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_label", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("subject_kind", sa.String(length=50), nullable=False),
        sa.Column("subject_id", sa.String(length=100), nullable=False),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index("ix_audit_event_action", ["action"], unique=False)
        batch_op.create_index("ix_audit_event_occurred_at", ["occurred_at"], unique=False)
        batch_op.create_index(
            "ix_audit_event_subject", ["subject_kind", "subject_id"], unique=False
        )

    op.create_table(
        "key_model",
        sa.Column("sku", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("connector", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_key_model")),
    )
    op.create_table(
        "maintainer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("email_verified_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintainer")),
    )
    op.create_table(
        "outbox_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("purpose", sa.String(length=50), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_message")),
    )
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_message_pending", ["sent_at", "created_at"], unique=False)

    op.create_table(
        "project",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project")),
        sa.UniqueConstraint("name", name=op.f("uq_project_name")),
    )
    op.create_table(
        "staff",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=400), nullable=False),
        sa.Column("session_nonce", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff")),
    )
    op.create_table(
        "project_role",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("maintainer_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("organisation", sa.String(length=200), nullable=True),
        sa.CheckConstraint(
            "role IN ('Owner', 'Maintainer')", name=op.f("ck_project_role_known_role")
        ),
        sa.ForeignKeyConstraint(
            ["maintainer_id"],
            ["maintainer.id"],
            name=op.f("fk_project_role_maintainer_id_maintainer"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_project_role_project_id_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project_role")),
        sa.UniqueConstraint("project_id", "maintainer_id", name="uq_project_role_person"),
    )
    with op.batch_alter_table("project_role", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_project_role_maintainer_id"), ["maintainer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_project_role_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "sign_in_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("maintainer_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["maintainer_id"],
            ["maintainer.id"],
            name=op.f("fk_sign_in_link_maintainer_id_maintainer"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_link")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sign_in_link_token_hash")),
    )
    with op.batch_alter_table("sign_in_link", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sign_in_link_maintainer_id"), ["maintainer_id"], unique=False
        )

    op.create_table(
        "staff_role_grant",
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.CheckConstraint(
            "role IN ('admin', 'shipping', 'programme', 'viewer')",
            name=op.f("ck_staff_role_grant_known_role"),
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_staff_role_grant_staff_id_staff")
        ),
        sa.PrimaryKeyConstraint("staff_id", "role", name=op.f("pk_staff_role_grant")),
    )
    op.create_table(
        "stock_movement",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("occurred_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_label", sa.String(length=200), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=False),
        sa.CheckConstraint(
            "(kind IN ('received', 'returned') AND quantity > 0) OR (kind IN ('shipped', 'written_off') AND quantity < 0) OR (kind = 'adjusted' AND quantity <> 0)",
            name=op.f("ck_stock_movement_signed_quantity"),
        ),
        sa.CheckConstraint(
            "kind IN ('received', 'shipped', 'returned', 'written_off', 'adjusted')",
            name=op.f("ck_stock_movement_known_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["sku"], ["key_model.sku"], name=op.f("fk_stock_movement_sku_key_model")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_movement")),
    )
    with op.batch_alter_table("stock_movement", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stock_movement_sku"), ["sku"], unique=False)
        batch_op.create_index(
            "uq_stock_movement_received_reference",
            ["sku", "reference"],
            unique=True,
            sqlite_where=sa.text("kind = 'received'"),
            postgresql_where=sa.text("kind = 'received'"),
        )

    op.create_index(
        "uq_maintainer_username_lower", "maintainer", [sa.text("lower(username)")], unique=True
    )
    op.create_index(
        "uq_maintainer_email_lower", "maintainer", [sa.text("lower(email)")], unique=True
    )
    op.create_index("uq_staff_email_lower", "staff", [sa.text("lower(email)")], unique=True)

    key_model = sa.table(
        "key_model",
        sa.column("sku", sa.String),
        sa.column("name", sa.String),
        sa.column("connector", sa.String),
    )
    op.bulk_insert(
        key_model,
        [
            {
                "sku": "TITAN-USB-A-NFC",
                "name": "Titan Security Key USB-A/NFC",
                "connector": "USB-A",
            },
            {
                "sku": "TITAN-USB-C-NFC",
                "name": "Titan Security Key USB-C/NFC",
                "connector": "USB-C",
            },
        ],
    )

    for table in APPEND_ONLY:
        _forbid_changes(table)


# Rows of these tables are facts: corrections are new rows, never edits or deletions.
APPEND_ONLY = ("audit_event", "stock_movement")


def _forbid_changes(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION refuse_append_only_change() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
            END $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION refuse_append_only_change()"
        )
        return
    for verb in ("update", "delete"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )


def _allow_changes(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        return
    for verb in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")


def downgrade() -> None:
    for table in APPEND_ONLY:
        _allow_changes(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS refuse_append_only_change()")
    op.drop_index("uq_staff_email_lower", table_name="staff")
    op.drop_index("uq_maintainer_email_lower", table_name="maintainer")
    op.drop_index("uq_maintainer_username_lower", table_name="maintainer")
    with op.batch_alter_table("stock_movement", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_stock_movement_received_reference",
            sqlite_where=sa.text("kind = 'received'"),
            postgresql_where=sa.text("kind = 'received'"),
        )
        batch_op.drop_index(batch_op.f("ix_stock_movement_sku"))

    op.drop_table("stock_movement")
    op.drop_table("staff_role_grant")
    with op.batch_alter_table("sign_in_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sign_in_link_maintainer_id"))

    op.drop_table("sign_in_link")
    with op.batch_alter_table("project_role", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_project_role_project_id"))
        batch_op.drop_index(batch_op.f("ix_project_role_maintainer_id"))

    op.drop_table("project_role")
    op.drop_table("staff")
    op.drop_table("project")
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_message_pending")

    op.drop_table("outbox_message")
    op.drop_table("maintainer")
    op.drop_table("key_model")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_subject")
        batch_op.drop_index("ix_audit_event_occurred_at")
        batch_op.drop_index("ix_audit_event_action")

    op.drop_table("audit_event")
