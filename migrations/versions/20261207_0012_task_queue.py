"""task queue: the ledger of background tasks, the consumers' check-ins, mail hand-over marks

Background work moved from threads and cron onto a task queue (core.tasks). Each task is a row
committed with the work that caused it; consumers check in; an outbox message records when it
was handed to the relay and when it failed for good. A sign-in request waits in its own table
until a consumer answers it, so the request does the same work for every address.

Revision ID: 0012
Revises: 0011
Created: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core import db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("run_after", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("offered_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("consumer", sa.String(length=80), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("slot", sa.String(length=120), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task")),
        sa.UniqueConstraint("slot", name="uq_task_slot"),
    )
    op.create_index("ix_task_status_run_after", "task", ["status", "run_after"])
    op.create_table(
        "task_consumer",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("checked_in_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_consumer")),
    )
    op.create_index(op.f("ix_task_consumer_checked_in_at"), "task_consumer", ["checked_in_at"])
    with op.batch_alter_table("outbox_message") as batch:
        batch.add_column(sa.Column("handed_over_at", db.UTCDateTime(timezone=True)))
        batch.add_column(sa.Column("failed_at", db.UTCDateTime(timezone=True)))
    op.create_table(
        "sign_in_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("created_at", db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_request")),
    )


def downgrade() -> None:
    op.drop_table("sign_in_request")
    with op.batch_alter_table("outbox_message") as batch:
        batch.drop_column("failed_at")
        batch.drop_column("handed_over_at")
    op.drop_table("task_consumer")
    op.drop_table("task")
