"""Appeals: a maintainer who disagrees with a decision asks staff to look again; a granted
appeal is an override that counts them as a critical-project maintainer."""

from __future__ import annotations

from sqlmodel import Session, col, select

from accounts.models import Maintainer
from core.actors import Actor
from core.audit import record_event
from core.db import utcnow
from core.mail import Mail, Mailer, render
from eligibility.errors import AppealNotAllowed, AppealNotFound
from eligibility.models import APPEAL_LIFECYCLE, Appeal, AppealAction, AppealStatus

MAX_APPEAL_PROJECTS = 20


def file_appeal(
    *, session: Session, actor: Actor, maintainer: Maintainer, text: str, projects: list[str]
) -> Appeal:
    """Open an appeal; one may be open at a time, and none is needed after a grant."""
    if granted_override(session=session, maintainer=maintainer) is not None:
        raise AppealNotAllowed("Your appeal was already granted: you count as eligible.")
    if open_appeal(session=session, maintainer=maintainer) is not None:
        raise AppealNotAllowed("You have an appeal under review already; we will email you.")
    appeal = Appeal(
        maintainer_id=maintainer.id,  # type: ignore[arg-type]
        created_at=utcnow(),
        text=text.strip(),
        projects=projects[:MAX_APPEAL_PROJECTS],
    )
    session.add(appeal)
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="appeal.filed",
        subject_kind="appeal",
        subject_id=appeal.id,
        details={"maintainer_id": maintainer.id, "projects": appeal.projects},
    )
    return appeal


def decide_appeal(
    *,
    session: Session,
    mailer: Mailer,
    actor: Actor,
    appeal_id: int,
    grant: bool,
    reason: str,
    base_url: str,
) -> Appeal:
    """Grant or deny an open appeal with a reason the maintainer will read."""
    appeal = get_appeal(session=session, appeal_id=appeal_id)
    action = AppealAction.GRANT if grant else AppealAction.DENY
    appeal.status = APPEAL_LIFECYCLE.goes_to(action, appeal.status, subject="this appeal").value
    appeal.decided_at = utcnow()
    appeal.decided_by = actor.id
    appeal.decision_reason = reason.strip()
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action=f"appeal.{appeal.status}",
        subject_kind="appeal",
        subject_id=appeal.id,
        details={
            "maintainer_id": appeal.maintainer_id,
            "before": {"status": "open"},
            "after": {"status": appeal.status},
            "reason": appeal.decision_reason,
        },
    )
    maintainer = session.get(Maintainer, appeal.maintainer_id)
    assert maintainer is not None
    mailer.send(
        session=session,
        mail=Mail(
            recipient=maintainer.email,
            subject=f"Your security key appeal was {appeal.status}",
            body=render(
                "appeal_decided.txt",
                greeting_name=maintainer.greeting_name,
                granted=grant,
                reason=appeal.decision_reason,
                base_url=base_url,
            ),
            purpose="appeal_decided",
        ),
    )
    return appeal


def get_appeal(*, session: Session, appeal_id: int) -> Appeal:
    appeal = session.get(Appeal, appeal_id)
    if appeal is None:
        raise AppealNotFound(f"There is no appeal {appeal_id}.")
    return appeal


def get_appeal_and_appellant(*, session: Session, appeal_id: int) -> tuple[Appeal, Maintainer]:
    appeal = get_appeal(session=session, appeal_id=appeal_id)
    maintainer = session.get(Maintainer, appeal.maintainer_id)
    assert maintainer is not None  # a foreign key guarantees it
    return appeal, maintainer


# Appeals waiting for programme staff.
_OPEN = APPEAL_LIFECYCLE.statuses_allowing(AppealAction.GRANT)


def open_appeal(*, session: Session, maintainer: Maintainer) -> Appeal | None:
    return session.exec(
        select(Appeal).where(Appeal.maintainer_id == maintainer.id, col(Appeal.status).in_(_OPEN))
    ).first()


def granted_override(*, session: Session, maintainer: Maintainer) -> Appeal | None:
    return session.exec(
        select(Appeal)
        .where(Appeal.maintainer_id == maintainer.id, Appeal.status == AppealStatus.GRANTED.value)
        .order_by(col(Appeal.decided_at).desc())
    ).first()


def appeals_of(*, session: Session, maintainer: Maintainer) -> list[Appeal]:
    return list(
        session.exec(
            select(Appeal)
            .where(Appeal.maintainer_id == maintainer.id)
            .order_by(col(Appeal.id).desc())
        ).all()
    )


def appeal_queue(*, session: Session) -> list[tuple[Appeal, Maintainer]]:
    """Open appeals, oldest first, with who filed them."""
    rows = session.exec(
        select(Appeal, Maintainer)
        .join(Maintainer, col(Maintainer.id) == Appeal.maintainer_id)
        .where(col(Appeal.status).in_(_OPEN))
        .order_by(col(Appeal.created_at))
    ).all()
    return [(appeal, maintainer) for appeal, maintainer in rows]
