"""Enrolment links: a staff member registers their first security key only with a link an admin
issued, never with the password alone (a stolen password must not let a stranger register
their own key and keep the owner out).

A link is single-use and expires after ``KEYS_STAFF_ENROLMENT_HOURS``; issuing a new one
replaces those before it. Only the SHA-256 of its token is kept. An admin on the web has it
emailed to the staff member (their mailbox is the proof, the password the other half); the
operator's ``flask --app app staff create`` and ``reset-keys`` show it once on the terminal, as
the first admin has nobody to email it for them.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from accounts.errors import (
    EnrolmentLinkExpired,
    EnrolmentLinkInvalid,
    EnrolmentLinkReplaced,
    EnrolmentLinkUsed,
)
from accounts.models import Staff, StaffEnrolment
from accounts.services import actor_for, hash_token
from core.actors import Actor
from core.audit import record_event
from core.db import utcnow
from core.mail import Mail, Mailer, render

_TOKEN_BYTES = 32
_ASK_AGAIN = "Ask an administrator to send you a new one."


def link(base_url: str, token: str) -> str:
    return f"{base_url}/staff/enrol/{token}"


def issue_link(
    *,
    session: Session,
    actor: Actor,
    staff: Staff,
    valid_for: timedelta,
    mailer: Mailer | None = None,
    base_url: str = "",
) -> str:
    """A new enrolment link's token for ``staff``, replacing any earlier one not yet used;
    emailed to them when a ``mailer`` is given."""
    now = utcnow()
    session.execute(
        sa.update(StaffEnrolment)
        .where(
            col(StaffEnrolment.staff_id) == staff.id,
            col(StaffEnrolment.used_at).is_(None),
            col(StaffEnrolment.replaced_at).is_(None),
        )
        .values(replaced_at=now)
        .execution_options(synchronize_session=False)
    )
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    enrolment = StaffEnrolment(
        staff_id=staff.id,  # type: ignore[arg-type]
        token_hash=hash_token(token),
        created_at=now,
        expires_at=now + valid_for,
    )
    session.add(enrolment)
    session.flush()
    hours = int(valid_for.total_seconds() // 3600)
    if mailer is not None:
        mailer.send(
            session=session,
            mail=Mail(
                recipient=staff.email,
                subject="Register your security key for the Security Key Giveaway",
                body=render(
                    "staff_enrolment.txt",
                    greeting_name=staff.greeting_name,
                    link=link(base_url, token),
                    hours=hours,
                    issued_by=actor.label,
                ),
                purpose="staff_enrolment",
            ),
        )
    record_event(
        session=session,
        actor=actor,
        action="staff.enrolment_issued",
        subject_kind="staff",
        subject_id=staff.id,
        details={
            "enrolment_id": enrolment.id,
            "expires_at": enrolment.expires_at.isoformat(),
            "emailed": mailer is not None,
        },
    )
    return token


def check_link(*, session: Session, token: str) -> Staff:
    """The staff member a link enrols, or why it cannot (it is not used up here)."""
    enrolment = _usable(session, token)
    staff = session.get(Staff, enrolment.staff_id)
    assert staff is not None  # a foreign key guarantees it
    return staff


def spend_link(*, session: Session, token: str, staff: Staff) -> None:
    """Use up ``staff``'s link, as their first key is registered with it. The conditional
    update is the guarantee: of two registrations racing with one link, one spends it."""
    enrolment = _usable(session, token)
    spent = session.execute(
        sa.update(StaffEnrolment)
        .where(
            col(StaffEnrolment.id) == enrolment.id,
            col(StaffEnrolment.staff_id) == staff.id,
            col(StaffEnrolment.used_at).is_(None),
            col(StaffEnrolment.replaced_at).is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise EnrolmentLinkUsed(f"This enrolment link was used already. {_ASK_AGAIN}")
    record_event(
        session=session,
        actor=actor_for(staff),
        action="staff.enrolment_used",
        subject_kind="staff",
        subject_id=staff.id,
        details={"enrolment_id": enrolment.id},
    )


def _usable(session: Session, token: str) -> StaffEnrolment:
    enrolment = None
    if 20 <= len(token) <= 100:
        enrolment = session.exec(
            select(StaffEnrolment).where(StaffEnrolment.token_hash == hash_token(token))
        ).first()
    if enrolment is None:
        raise EnrolmentLinkInvalid(
            "This link is not one we sent, or it was copied incompletely. Open it again from "
            f"the email, whole. {_ASK_AGAIN}"
        )
    if enrolment.used_at is not None:
        raise EnrolmentLinkUsed(
            "This enrolment link was used already: a key was registered with it. If that was "
            "you, sign in with your password and that key. If it was not, tell an "
            "administrator at once: they can remove that key and send you a new link."
        )
    if enrolment.replaced_at is not None:
        raise EnrolmentLinkReplaced(
            f"An administrator issued a newer enrolment link: use the latest email. {_ASK_AGAIN}"
        )
    if enrolment.expires_at <= utcnow():
        raise EnrolmentLinkExpired(f"Enrolment links work for a few days only. {_ASK_AGAIN}")
    return enrolment
