"""Audit events: every state change, who made it, when, to which subject, with before/after
details. The log is append-only; each event is also written as a log line once committed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col

from core import logs
from core.actors import Actor
from core.after_commit import on_commit
from core.db import JSONType, UTCDateTime, utcnow


class AuditEvent(SQLModel, table=True):
    """One state change: who, what, when, to which subject, with before/after details."""

    __tablename__ = "audit_event"
    __table_args__ = (
        sa.Index("ix_audit_event_subject", "subject_kind", "subject_id"),
        sa.Index("ix_audit_event_occurred_at", "occurred_at"),
        sa.Index("ix_audit_event_action", "action"),
    )

    id: int | None = Field(default=None, primary_key=True)
    occurred_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    actor_kind: str = Field(max_length=20)
    actor_id: int | None = None
    actor_label: str = Field(default="", max_length=200)
    action: str = Field(max_length=100)
    subject_kind: str = Field(default="", max_length=50)
    subject_id: str = Field(default="", max_length=100)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, nullable=False)


def record_event(
    *,
    session: Session,
    actor: Actor,
    action: str,
    subject_kind: str = "",
    subject_id: object = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event in the caller's transaction: it lands exactly when the change does."""
    audit_event = AuditEvent(
        occurred_at=utcnow(),
        actor_kind=actor.kind.value,
        actor_id=actor.id,
        actor_label=actor.label[:200],
        action=action,
        subject_kind=subject_kind,
        subject_id="" if subject_id is None else str(subject_id),
        details=details or {},
    )
    session.add(audit_event)
    # Logged once the change is committed (a rolled-back change did not happen), without the
    # details: they may hold addresses.
    line = {
        "action": action,
        "subject_kind": subject_kind,
        "subject_id": audit_event.subject_id,
        "actor_kind": actor.kind.value,
        "actor_id": actor.id,
        "request_id": logs.current_request_id(),
    }
    on_commit(session, partial(logs.write, logs.state_change_log, "state_change", **line))
    return audit_event


@dataclass(frozen=True)
class AuditFilter:
    """What the audit log page narrows by; empty fields match everything."""

    action: str = ""
    actor_kind: str = ""
    actor_id: int | None = None
    subject_kind: str = ""
    subject_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


def search_audit_events(
    *, session: Session, audit_filter: AuditFilter, before_id: int | None = None, limit: int = 50
) -> list[AuditEvent]:
    """Newest events first, matching the filter; page with ``before_id`` (the last id seen).

    ``action`` matches a prefix, so ``sign_in`` finds every sign-in event.
    """
    f = audit_filter
    query = sa.select(AuditEvent)
    if f.action:
        query = query.where(col(AuditEvent.action).startswith(f.action, autoescape=True))
    if f.actor_kind:
        query = query.where(col(AuditEvent.actor_kind) == f.actor_kind)
    if f.actor_id is not None:
        query = query.where(col(AuditEvent.actor_id) == f.actor_id)
    if f.subject_kind:
        query = query.where(col(AuditEvent.subject_kind) == f.subject_kind)
    if f.subject_id:
        query = query.where(col(AuditEvent.subject_id) == f.subject_id)
    if f.since is not None:
        query = query.where(col(AuditEvent.occurred_at) >= f.since)
    if f.until is not None:
        query = query.where(col(AuditEvent.occurred_at) < f.until)
    if before_id is not None:
        query = query.where(col(AuditEvent.id) < before_id)
    query = query.order_by(col(AuditEvent.id).desc()).limit(limit)
    return list(session.execute(query).scalars().all())
