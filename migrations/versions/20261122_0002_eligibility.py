"""eligibility: critical lists, rankings, appeals, notices

Revision ID: 0002
Revises: 0001
Created: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from core import db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "critical_list",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source_name", sa.String(length=255), nullable=False),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("source_format", sa.String(length=20), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("total_projects", sa.Integer(), nullable=False),
        sa.Column("ranked_projects", sa.Integer(), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("sticky", sa.Boolean(), nullable=False),
        sa.Column("cutoff_rank", sa.Integer(), nullable=False),
        sa.Column("cutoff_downloads", sa.BigInteger(), nullable=True),
        sa.Column("critical_count", sa.Integer(), nullable=False),
        sa.Column("added_count", sa.Integer(), nullable=False),
        sa.Column("removed_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_critical_list")),
    )
    with op.batch_alter_table("critical_list", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_critical_list_source_sha256"), ["source_sha256"], unique=False
        )

    op.create_table(
        "appeal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("maintainer_id", sa.Integer(), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "projects",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("decided_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("decision_reason", sa.String(length=2000), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'granted', 'denied')", name=op.f("ck_appeal_known_status")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["staff.id"], name=op.f("fk_appeal_decided_by_staff")
        ),
        sa.ForeignKeyConstraint(
            ["maintainer_id"], ["maintainer.id"], name=op.f("fk_appeal_maintainer_id_maintainer")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appeal")),
    )
    with op.batch_alter_table("appeal", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_appeal_maintainer_id"), ["maintainer_id"], unique=False
        )
        batch_op.create_index(
            "uq_appeal_open_per_maintainer",
            ["maintainer_id"],
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )

    op.create_table(
        "critical_change",
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("project_name", sa.String(length=200), nullable=False),
        sa.Column("change", sa.String(length=10), nullable=False),
        sa.CheckConstraint(
            "change IN ('added', 'removed')", name=op.f("ck_critical_change_known_change")
        ),
        sa.ForeignKeyConstraint(
            ["list_id"], ["critical_list.id"], name=op.f("fk_critical_change_list_id_critical_list")
        ),
        sa.PrimaryKeyConstraint("list_id", "project_name", name=op.f("pk_critical_change")),
    )
    op.create_table(
        "critical_entry",
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("project_name", sa.String(length=200), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("downloads", sa.BigInteger(), nullable=True),
        sa.Column("sticky", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"], ["critical_list.id"], name=op.f("fk_critical_entry_list_id_critical_list")
        ),
        sa.PrimaryKeyConstraint("list_id", "project_name", name=op.f("pk_critical_entry")),
    )
    with op.batch_alter_table("critical_entry", schema=None) as batch_op:
        batch_op.create_index("ix_critical_entry_project", ["project_name"], unique=False)

    op.create_table(
        "eligibility_notice",
        sa.Column("maintainer_id", sa.Integer(), nullable=False),
        sa.Column("sent_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "projects",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["maintainer_id"],
            ["maintainer.id"],
            name=op.f("fk_eligibility_notice_maintainer_id_maintainer"),
        ),
        sa.PrimaryKeyConstraint("maintainer_id", name=op.f("pk_eligibility_notice")),
    )
    op.create_table(
        "project_ranking",
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("project_name", sa.String(length=200), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("downloads", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["list_id"], ["critical_list.id"], name=op.f("fk_project_ranking_list_id_critical_list")
        ),
        sa.PrimaryKeyConstraint("list_id", "project_name", name=op.f("pk_project_ranking")),
    )
    with op.batch_alter_table("project_role", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ended_at", db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("project_role", schema=None) as batch_op:
        batch_op.drop_column("ended_at")

    op.drop_table("project_ranking")
    op.drop_table("eligibility_notice")
    with op.batch_alter_table("critical_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_critical_entry_project")

    op.drop_table("critical_entry")
    op.drop_table("critical_change")
    with op.batch_alter_table("appeal", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_appeal_open_per_maintainer",
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )
        batch_op.drop_index(batch_op.f("ix_appeal_maintainer_id"))

    op.drop_table("appeal")
    with op.batch_alter_table("critical_list", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_critical_list_source_sha256"))

    op.drop_table("critical_list")
