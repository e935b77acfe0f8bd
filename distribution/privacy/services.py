"""Personal data kept no longer than needed: the retention purge, a maintainer's download of
everything held about them, and erasure on request.

**Retention.** A parcel's recipient names, phone, street address, address lines and tracking
number are needed until the parcel has arrived and the claim has settled. The purge
(``flask --app app claims purge-personal-data``, daily from cron) erases them from every parcel
of a claim whose need ended more than ``KEYS_PERSONAL_DATA_DAYS`` ago:

- activated or delivered: counted from the later of the first activation and the newest
  delivery, so a replacement key restarts the clock. A delivered claim whose keys were never
  registered counts from the delivery: the parcel arrived, and an address is not kept waiting
  for someone who may never come back;
- cancelled or expired: from when the claim closed;
- lost, its replacement declined: from the decision (nothing will be sent any more).

A claim that may still need the address is never touched: a parcel waiting for a label, printed
or on its way; a lost parcel or damaged key whose replacement waits for programme staff (an
approved replacement copies the address); and a parcel returned to sender (the claim is open:
the maintainer is asked to correct that very address). What reports need stays: country,
contents, references, dates, carrier, purpose and the claim's status; the stock ledger is not
touched. Copies go too: the bodies of mails that repeated the address or the tracking number
(kept only until delivered, or in the demo outbox), and label-run PDFs older than the period.

**Access.** A maintainer downloads everything held about them as JSON: profile, project roles,
appeals, claims with their parcels and addresses, security keys, mail sent to them and audit
events about them. Security keys are listed by name, model and dates; their public keys,
credential IDs and attestation blobs are left out: they are the key's own cryptographic
material (certificates of its maker, a COSE key), say nothing about the person that the model
does not, and the credential ID is what signs them in. Mail bodies are left out too: they hold
single-use sign-in links, and what else they said is in the rest of the file. Other people are
not named: an event done by staff shows "staff", not who.

**Erasure on request** erases at once the names, phones and addresses of every parcel not in
flight (a returned parcel included) and the display name. A parcel in flight keeps its address
until its claim ends; the request stays open, programme staff see it, and the next purge
completes it then, without waiting for the retention period. Kept, and why: the PyPI username
and email address, which the programme did not collect but imports from PyPI every day: they
are how it keeps its promise of one claim per maintainer (an account erased today would come
back with tomorrow's import as a new person who could claim again) and how the maintainer
signs in; the claims themselves (status, contents, country, dates), which the reports and the
stock ledger count — with no address they say nothing more about the person; security keys,
which prove activation and sign the maintainer in; and the audit log, which is append-only
and holds no address or phone (events name a parcel by reference and country only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from accounts.models import ErasureRequest, Maintainer, SecurityKey, SignInLink
from core import formats
from core.actors import Actor, ActorKind
from core.audit import AuditEvent, record_event
from core.db import utcnow
from core.mail import OutboxMessage
from core.settings import Settings
from distribution.claims.services import claims_of, items_of, shipments_of
from distribution.models import (
    REPLACEMENT_LIFECYCLE,
    Claim,
    ClaimStatus,
    LabelRun,
    Replacement,
    ReplacementAction,
    Shipment,
    WaitlistEntry,
)
from distribution.shipping.exceptions import exceptions_of
from eligibility.models import Appeal, EligibilityNotice, Project, ProjectRole

# Claims whose parcels may need an address again (see the module's docstring).
_IN_FLIGHT = (ClaimStatus.REDEEMED, ClaimStatus.LABEL_PRINTED, ClaimStatus.SHIPPED)
# Claims whose need for an address can have ended; anything else keeps it.
_SETTLED = (
    ClaimStatus.ACTIVATED,
    ClaimStatus.DELIVERED,
    ClaimStatus.CANCELLED,
    ClaimStatus.EXPIRED,
    ClaimStatus.LOST,
)
# Mails that repeated a parcel's address or tracking number.
_MAILS_WITH_PARCEL_DATA = ("claim_redeemed", "parcel_shipped")


@dataclass(frozen=True)
class PurgeSummary:
    claims: int
    shipments: int
    label_runs: int
    requests_completed: int
    cutoff: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "claims": self.claims,
            "shipments": self.shipments,
            "label_runs": self.label_runs,
            "requests_completed": self.requests_completed,
            "cutoff": self.cutoff.isoformat(),
        }


@dataclass(frozen=True)
class ErasureOutcome:
    """What a request erased at once, and the claims whose parcels keep theirs for now."""

    request: ErasureRequest
    claims_erased: list[int]
    claims_waiting: list[int]


@dataclass(frozen=True)
class ErasureRequestView:
    """A request as programme staff see it."""

    request: ErasureRequest
    username: str
    claims_waiting: list[int]


def purge_personal_data(
    *, session: Session, settings: Settings, actor: Actor, now: datetime | None = None
) -> PurgeSummary:
    """Erase what is no longer needed (see the module's docstring); safe to run repeatedly: a
    parcel erased once is never looked at again."""
    now = now or utcnow()
    cutoff = now - timedelta(days=settings.personal_data_days)
    claims_erased, shipments_erased, completed = 0, 0, 0
    erased_ids: set[int] = set()

    # Requests first: their claims go as soon as they settle, not a retention period later.
    for request in session.exec(
        select(ErasureRequest)
        .where(col(ErasureRequest.completed_at).is_(None))
        .order_by(col(ErasureRequest.id))
        .with_for_update(skip_locked=True)
    ).all():
        maintainer = session.get(Maintainer, request.maintainer_id)
        assert maintainer is not None  # a foreign key guarantees it
        erased, waiting = _erase_what_can_go(session, actor, maintainer, now)
        claims_erased += len(erased)
        shipments_erased += sum(erased.values())
        erased_ids.update(erased)
        if not waiting:
            _complete(session, actor, request, now)
            completed += 1

    candidates = session.exec(
        select(Claim)
        .where(
            col(Claim.status).in_([status.value for status in _SETTLED]),
            sa.exists().where(
                col(Shipment.claim_id) == Claim.id,
                col(Shipment.personal_data_erased_at).is_(None),
            ),
        )
        .order_by(col(Claim.id))
        .with_for_update(skip_locked=True)
    ).all()
    for claim in candidates:
        until = needed_until(session=session, claim=claim)
        if until is None or until > cutoff:
            continue
        erased_now = _erase_claim(session, actor, claim, now, reason="retention", until=until)
        claims_erased += 1
        shipments_erased += erased_now
        erased_ids.add(claim.id or 0)

    runs = _erase_label_pdfs(session, now, claim_ids=erased_ids, finished_before=cutoff)
    session.flush()
    return PurgeSummary(claims_erased, shipments_erased, runs, completed, cutoff)


def needed_until(*, session: Session, claim: Claim) -> datetime | None:
    """When the claim's parcels last needed an address, or None while they may need it again
    (the retention period runs from this moment)."""
    status = ClaimStatus(claim.status)
    if status not in _SETTLED or _replacement_waiting(session, claim):
        return None
    if status in (ClaimStatus.CANCELLED, ClaimStatus.EXPIRED):
        return claim.closed_at or claim.issued_at
    if status == ClaimStatus.LOST:
        decided = [
            e.decided_at
            for e in exceptions_of(session=session, claim=claim)
            if e.replacement == Replacement.DECLINED and e.decided_at is not None
        ]
        return max(decided, default=None)
    delivered = [s.delivered_at for s in shipments_of(session=session, claim=claim)]
    moments = [m for m in [claim.activated_at, *delivered] if m is not None]
    return max(moments, default=None)


def in_flight(*, session: Session, claim: Claim) -> bool:
    """Whether a parcel of the claim is waiting for a label, printed, on its way, or about to
    be replaced: its address cannot go yet, even on request."""
    return ClaimStatus(claim.status) in _IN_FLIGHT or _replacement_waiting(session, claim)


def request_erasure(
    *, session: Session, actor: Actor, maintainer: Maintainer, now: datetime | None = None
) -> ErasureOutcome:
    """Erase at once what can go (see the module's docstring); record the request, left open
    while a parcel is in flight. Asking twice while one is open adds nothing."""
    now = now or utcnow()
    request = open_erasure_request(session=session, maintainer=maintainer)
    if request is None:
        request = ErasureRequest(maintainer_id=maintainer.id, requested_at=now)  # type: ignore[arg-type]
        try:
            with session.begin_nested():
                session.add(request)
                session.flush()
        except sa.exc.IntegrityError:  # a second request of the same person was first
            return request_erasure(session=session, actor=actor, maintainer=maintainer, now=now)
    erased, waiting = _erase_what_can_go(session, actor, maintainer, now)
    _erase_label_pdfs(session, now, claim_ids=set(erased))
    maintainer.display_name = ""
    record_event(
        session=session,
        actor=actor,
        action="personal_data.erasure_requested",
        subject_kind="maintainer",
        subject_id=maintainer.id,
        details={
            "request": request.id,
            "claims_erased": sorted(erased),
            "claims_waiting": waiting,
        },
    )
    if not waiting:
        _complete(session, actor, request, now)
    session.flush()
    return ErasureOutcome(request, sorted(erased), waiting)


def open_erasure_request(*, session: Session, maintainer: Maintainer) -> ErasureRequest | None:
    return session.exec(
        select(ErasureRequest).where(
            ErasureRequest.maintainer_id == maintainer.id,
            col(ErasureRequest.completed_at).is_(None),
        )
    ).first()


def erasure_requests(*, session: Session, done: int = 50) -> list[ErasureRequestView]:
    """Requests for programme staff: every open one, oldest first, then the newest done."""
    query = select(ErasureRequest, Maintainer).join(
        Maintainer, col(Maintainer.id) == ErasureRequest.maintainer_id
    )
    rows = [
        *session.exec(
            query.where(col(ErasureRequest.completed_at).is_(None)).order_by(col(ErasureRequest.id))
        ).all(),
        *session.exec(
            query.where(col(ErasureRequest.completed_at).is_not(None))
            .order_by(col(ErasureRequest.id).desc())
            .limit(done)
        ).all(),
    ]
    return [_view(session, request, maintainer) for request, maintainer in rows]


def pending_erasure(*, session: Session, maintainer: Maintainer) -> ErasureRequestView | None:
    """The maintainer's open request, with the claims it waits for, if they made one."""
    request = open_erasure_request(session=session, maintainer=maintainer)
    return None if request is None else _view(session, request, maintainer)


def _view(session: Session, request: ErasureRequest, maintainer: Maintainer) -> ErasureRequestView:
    waiting = (
        []
        if request.completed_at
        else [
            claim.id or 0
            for claim in reversed(claims_of(session=session, maintainer=maintainer))
            if in_flight(session=session, claim=claim)
        ]
    )
    return ErasureRequestView(request, maintainer.username, waiting)


def export_personal_data(
    *, session: Session, actor: Actor, maintainer: Maintainer
) -> dict[str, Any]:
    """Everything held about the maintainer, as a JSON-ready document (audited)."""
    claims = claims_of(session=session, maintainer=maintainer)
    keys = session.exec(
        select(SecurityKey)
        .where(SecurityKey.maintainer_id == maintainer.id)
        .order_by(col(SecurityKey.id))
    ).all()
    appeals = session.exec(
        select(Appeal).where(Appeal.maintainer_id == maintainer.id).order_by(col(Appeal.id))
    ).all()
    roles = session.exec(
        select(ProjectRole, Project)
        .join(Project, col(Project.id) == ProjectRole.project_id)
        .where(ProjectRole.maintainer_id == maintainer.id)
        .order_by(col(Project.name))
    ).all()
    document: dict[str, Any] = {
        "generated_at": _when(utcnow()),
        "profile": {
            "username": maintainer.username,
            "email": maintainer.email,
            "email_verified_at": _when(maintainer.email_verified_at),
            "display_name": maintainer.display_name,
            "country": maintainer.country,
            "created_at": _when(maintainer.created_at),
        },
        "project_roles": [
            {
                "project": project.display_name,
                "role": role.role,
                "organisation": role.organisation,
                "ended_at": _when(role.ended_at),
            }
            for role, project in roles
        ],
        "appeals": [
            {
                "filed_at": _when(appeal.created_at),
                "text": appeal.text,
                "projects": appeal.projects,
                "status": appeal.status,
                "decided_at": _when(appeal.decided_at),
                "decision_reason": appeal.decision_reason,
            }
            for appeal in appeals
        ],
        "eligibility_notices": [
            {"sent_at": _when(notice.sent_at), "projects": notice.projects}
            for notice in session.exec(
                select(EligibilityNotice).where(EligibilityNotice.maintainer_id == maintainer.id)
            ).all()
        ],
        "waiting_list": [
            {
                "joined_at": _when(entry.joined_at),
                "offered_at": _when(entry.offered_at),
                "claim": entry.claim_id,
            }
            for entry in session.exec(
                select(WaitlistEntry)
                .where(WaitlistEntry.maintainer_id == maintainer.id)
                .order_by(col(WaitlistEntry.id))
            ).all()
        ],
        "claims": [_claim_document(session, claim) for claim in reversed(claims)],
        "security_keys": [
            {
                "name": key.name,
                "model": key.model,
                "aaguid": key.aaguid,
                "outcome": key.outcome,
                "registered_at": _when(key.created_at),
                "last_used_at": _when(key.last_used_at),
                "accepted_at": _when(key.accepted_at),
                "removed_at": _when(key.removed_at),
            }
            for key in keys
        ],
        "sign_in_links": [
            {
                "created_at": _when(link.created_at),
                "expires_at": _when(link.expires_at),
                "used_at": _when(link.used_at),
            }
            for link in session.exec(
                select(SignInLink)
                .where(SignInLink.maintainer_id == maintainer.id)
                .order_by(col(SignInLink.id))
            ).all()
        ],
        "mail": [
            {
                "created_at": _when(message.created_at),
                "sent_at": _when(message.sent_at),
                "purpose": message.purpose,
                "subject": message.subject,
            }
            for message in session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.recipient == maintainer.email)
                .order_by(col(OutboxMessage.id))
            ).all()
        ],
        "erasure_requests": [
            {"requested_at": _when(r.requested_at), "completed_at": _when(r.completed_at)}
            for r in session.exec(
                select(ErasureRequest)
                .where(ErasureRequest.maintainer_id == maintainer.id)
                .order_by(col(ErasureRequest.id))
            ).all()
        ],
        "audit_events": _events_about(
            session,
            maintainer,
            subjects={
                "maintainer": [maintainer.id or 0],
                "claim": [claim.id or 0 for claim in claims],
                "appeal": [appeal.id or 0 for appeal in appeals],
                "security_key": [key.id or 0 for key in keys],
                "project_role": [role.id or 0 for role, _project in roles],
            },
        ),
    }
    record_event(
        session=session,
        actor=actor,
        action="personal_data.downloaded",
        subject_kind="maintainer",
        subject_id=maintainer.id,
    )
    return document


def _claim_document(session: Session, claim: Claim) -> dict[str, Any]:
    return {
        "id": claim.id,
        "status": claim.status,
        "code_ends_with": claim.code_hint,
        "issued_at": _when(claim.issued_at),
        "expires_at": _when(claim.expires_at),
        "redeemed_at": _when(claim.redeemed_at),
        "activated_at": _when(claim.activated_at),
        "closed_at": _when(claim.closed_at),
        "items": items_of(session=session, claim=claim),
        "parcels": [
            {
                "reference": s.reference,
                "purpose": s.purpose,
                "created_at": _when(s.created_at),
                "country": s.country,
                "recipient_name": s.recipient_name,
                "recipient_name_local": s.recipient_name_local,
                "phone": s.phone,
                "address": s.address,
                "address_lines": s.address_lines,
                "items": s.items,
                "carrier": s.carrier,
                "tracking_number": s.tracking_number,
                "shipped_at": _when(s.shipped_at),
                "delivered_at": _when(s.delivered_at),
                "personal_data_erased_at": _when(s.personal_data_erased_at),
            }
            for s in shipments_of(session=session, claim=claim)
        ],
        "problems": [
            {
                "kind": e.kind,
                "reason": e.reason,
                "reported_at": _when(e.reported_at),
                "replacement": e.replacement,
                "decided_at": _when(e.decided_at),
                "decision_note": e.decision_note,
            }
            for e in exceptions_of(session=session, claim=claim)
        ],
    }


def _events_about(
    session: Session, maintainer: Maintainer, *, subjects: dict[str, list[int]]
) -> list[dict[str, Any]]:
    about = [
        sa.and_(
            col(AuditEvent.subject_kind) == kind,
            col(AuditEvent.subject_id).in_([str(i) for i in ids]),
        )
        for kind, ids in subjects.items()
        if ids
    ]
    by_them = sa.and_(
        col(AuditEvent.actor_kind) == ActorKind.MAINTAINER.value,
        col(AuditEvent.actor_id) == maintainer.id,
    )
    events = session.exec(
        select(AuditEvent).where(sa.or_(by_them, *about)).order_by(col(AuditEvent.id))
    ).all()
    return [
        {
            "occurred_at": _when(event.occurred_at),
            "action": event.action,
            # Not who on the staff: their names and addresses are theirs, not the maintainer's.
            "by": _who(event, maintainer),
            "subject": f"{event.subject_kind} {event.subject_id}".strip(),
            "details": event.details,
        }
        for event in events
    ]


def _who(event: AuditEvent, maintainer: Maintainer) -> str:
    if event.actor_kind == ActorKind.MAINTAINER and event.actor_id == maintainer.id:
        return "you"
    if event.actor_kind == ActorKind.SYSTEM:
        return f"system ({event.actor_label})" if event.actor_label else "system"
    return event.actor_kind


def _erase_what_can_go(
    session: Session, actor: Actor, maintainer: Maintainer, now: datetime
) -> tuple[dict[int, int], list[int]]:
    """Erase the parcels of the maintainer's claims that are not in flight: {claim: parcels
    erased}, and the claims in flight that still hold personal data."""
    erased: dict[int, int] = {}
    waiting: list[int] = []
    for claim in reversed(claims_of(session=session, maintainer=maintainer)):
        if not any(
            s.personal_data_erased_at is None for s in shipments_of(session=session, claim=claim)
        ):
            continue
        if in_flight(session=session, claim=claim):
            waiting.append(claim.id or 0)
            continue
        erased[claim.id or 0] = _erase_claim(
            session, actor, claim, now, reason="request", until=now
        )
    return erased, waiting


def _erase_claim(
    session: Session, actor: Actor, claim: Claim, now: datetime, *, reason: str, until: datetime
) -> int:
    """Erase the personal data of the claim's parcels and of the mails that repeated it; one
    audit event, which names the parcels but holds nothing erased."""
    parcels = [
        s for s in shipments_of(session=session, claim=claim) if s.personal_data_erased_at is None
    ]
    for parcel in parcels:
        parcel.recipient_name = parcel.recipient_name_local = parcel.phone = ""
        parcel.address, parcel.address_lines = {}, []
        # A carrier's tracking page shows where a parcel went, and sometimes who signed for it.
        parcel.tracking_number = ""
        parcel.personal_data_erased_at = now
    maintainer = session.get(Maintainer, claim.maintainer_id)
    assert maintainer is not None  # a foreign key guarantees it
    session.execute(
        sa.update(OutboxMessage)
        .where(
            col(OutboxMessage.recipient) == maintainer.email,
            col(OutboxMessage.purpose).in_(_MAILS_WITH_PARCEL_DATA),
            col(OutboxMessage.created_at) >= claim.issued_at,
            col(OutboxMessage.created_at) <= until,
            col(OutboxMessage.body) != "",
        )
        # Not empty: a message still waiting for the SMTP server would go out blank.
        .values(
            body=f"(Erased on {formats.day(now)} under the retention policy: it held a parcel's "
            "address or tracking number.)"
        )
        .execution_options(synchronize_session=False)
    )
    record_event(
        session=session,
        actor=actor,
        action="personal_data.erased",
        subject_kind="claim",
        subject_id=claim.id,
        details={
            "reason": reason,
            "status": claim.status,
            "parcels": [parcel.reference for parcel in parcels],
        },
    )
    session.flush()
    return len(parcels)


def _erase_label_pdfs(
    session: Session,
    now: datetime,
    *,
    claim_ids: set[int],
    finished_before: datetime | None = None,
) -> int:
    """Drop the PDFs of label runs that printed an erased parcel or finished before
    ``finished_before``: each page is an address. Staff reprint a label still needed."""
    held = session.exec(
        select(LabelRun.id, LabelRun.claim_ids, LabelRun.finished_at).where(
            col(LabelRun.pdf).is_not(None)
        )
    ).all()
    due = [
        run_id
        for run_id, run_claims, finished_at in held
        if claim_ids.intersection(run_claims)
        or (
            finished_before is not None
            and finished_at is not None
            and finished_at <= finished_before
        )
    ]
    if due:
        session.execute(
            sa.update(LabelRun)
            .where(col(LabelRun.id).in_(due))
            .values(pdf=None, pdf_erased_at=now)
            .execution_options(synchronize_session=False)
        )
    return len(due)


def _complete(session: Session, actor: Actor, request: ErasureRequest, now: datetime) -> None:
    request.completed_at = now
    record_event(
        session=session,
        actor=actor,
        action="personal_data.erasure_completed",
        subject_kind="maintainer",
        subject_id=request.maintainer_id,
        details={"request": request.id},
    )


def _replacement_waiting(session: Session, claim: Claim) -> bool:
    return any(
        REPLACEMENT_LIFECYCLE.allows(ReplacementAction.APPROVE, e.replacement)
        for e in exceptions_of(session=session, claim=claim)
    )


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
