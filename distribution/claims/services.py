"""Claims: issuing codes that reserve keys, redeeming them into parcels, cancelling, expiring,
and offering freed keys to the waiting list.

The guarantees live in the database: a code reserves keys through ``stock.reserve`` (a CHECK
constraint refuses overselling), one active claim per maintainer is a partial unique index, a
code is spent by a conditional UPDATE that only one request can win, and a double-submitted
redemption finds the shipment of the first by its idempotency key. A form sent again answers
as the first did only while that answer is still true: a resent cancel is the same success,
a resent redemption of a claim cancelled since is refused with the reason.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from accounts.models import Maintainer
from adapters.addresses import ShippingAddress
from core import formats
from core.actors import Actor
from core.audit import AuditEvent, record_event
from core.db import utcnow
from core.mail import Mail, Mailer, render
from core.settings import Settings
from distribution.claims import codes
from distribution.claims.decision import ReasonCode, decide
from distribution.errors import (
    AlreadyClaimed,
    ClaimLocked,
    ClaimNotFound,
    CodeExpired,
    CodeTypo,
    CodeUnknown,
    CodeUsed,
    FormSentBefore,
    InvalidChoice,
    NoKeysLeft,
    NotEligible,
)
from distribution.models import (
    CLAIM_LIFECYCLE,
    CLOSED_STATUSES,
    Claim,
    ClaimAction,
    ClaimItem,
    ClaimStatus,
    LabelRun,
    Shipment,
    ShipmentPurpose,
    WaitlistEntry,
)
from distribution.stock import burn_down
from distribution.stock import services as stock


@dataclass(frozen=True)
class IssuedCode:
    claim: Claim
    code: str  # shown once and mailed; never stored


@dataclass(frozen=True)
class Recipient:
    """Who receives a parcel, where, and how the carrier reaches them (all validated)."""

    address: ShippingAddress
    phone: str
    name: str
    name_local: str = ""


@dataclass(frozen=True)
class WaitlistPlace:
    """No keys were free: the maintainer waits, at this position, for freed keys."""

    position: int


def active_claim(*, session: Session, maintainer: Maintainer) -> Claim | None:
    return session.exec(
        select(Claim).where(
            Claim.maintainer_id == maintainer.id, col(Claim.status).not_in(CLOSED_STATUSES)
        )
    ).first()


def claims_of(*, session: Session, maintainer: Maintainer) -> list[Claim]:
    return list(
        session.exec(
            select(Claim).where(Claim.maintainer_id == maintainer.id).order_by(col(Claim.id).desc())
        ).all()
    )


def issue_claim_code(
    *, session: Session, mailer: Mailer, settings: Settings, actor: Actor, maintainer: Maintainer
) -> IssuedCode | WaitlistPlace:
    """Reserve the maintainer's keys and give them a code (mailed, and shown once).

    When the only obstacle is that no keys are left, the maintainer joins the waiting list
    instead (a result, not an error: the place in the list must be saved).
    """
    decision = decide(
        session=session, settings=settings, maintainer=maintainer, country=maintainer.country
    )
    codes_failing = [reason.code for reason in decision.reasons]
    if ReasonCode.ALREADY_CLAIMED in codes_failing:
        raise AlreadyClaimed(
            decision.reasons[codes_failing.index(ReasonCode.ALREADY_CLAIMED)].message
        )
    if codes_failing == [ReasonCode.NO_KEYS_LEFT]:
        return WaitlistPlace(join_waitlist(session=session, actor=actor, maintainer=maintainer))
    if not decision.eligible:
        raise NotEligible(" ".join(reason.message for reason in decision.reasons))
    try:
        stock.reserve(session=session, keys=settings.keys_per_maintainer)
    except NoKeysLeft:  # the last keys went to someone else a moment ago
        return WaitlistPlace(join_waitlist(session=session, actor=actor, maintainer=maintainer))
    return _issue(
        session=session, mailer=mailer, settings=settings, actor=actor, maintainer=maintainer
    )


def _issue(
    *, session: Session, mailer: Mailer, settings: Settings, actor: Actor, maintainer: Maintainer
) -> IssuedCode:
    """Record a code for keys already reserved; the index refuses a second active claim."""
    code = codes.new_code()
    now = utcnow()
    claim = Claim(
        maintainer_id=maintainer.id,  # type: ignore[arg-type]
        code_hash=codes.code_hash(code),
        code_hint=code[-4:],
        keys_reserved=settings.keys_per_maintainer,
        issued_at=now,
        expires_at=now + timedelta(days=settings.claim_code_expiry_days),
    )
    try:
        with session.begin_nested():
            session.add(claim)
            session.flush()
    except sa.exc.IntegrityError:
        # Another request of the same maintainer won: give back what this one reserved.
        stock.release(session=session, reserved=settings.keys_per_maintainer)
        raise AlreadyClaimed("You have a claim already: see My claim.") from None
    record_event(
        session=session,
        actor=actor,
        action="claim.issued",
        subject_kind="claim",
        subject_id=claim.id,
        details={
            "maintainer_id": maintainer.id,
            "keys_reserved": claim.keys_reserved,
            "expires_at": claim.expires_at.isoformat(),
        },
    )
    mailer.send(
        session=session,
        mail=Mail(
            recipient=maintainer.email,
            subject="Your claim code for free security keys",
            body=render(
                "claim_code.txt",
                greeting_name=maintainer.greeting_name,
                keys=claim.keys_reserved,
                code=code,
                expires_at=claim.expires_at,
                base_url=settings.base_url,
            ),
            purpose="claim_code",
        ),
    )
    burn_down.alert_if_low(session=session, mailer=mailer, settings=settings)
    return IssuedCode(claim, code)


def find_claim_by_code(*, session: Session, maintainer: Maintainer, code: str) -> Claim:
    """The maintainer's claim for ``code``, if it can still be redeemed; otherwise the reason.

    A code of someone else is "not valid", like a code that was never issued: nothing is
    revealed about other maintainers.
    """
    digest = _code_digest(code)
    claim = session.exec(select(Claim).where(Claim.code_hash == digest)).first()
    if claim is None or claim.maintainer_id != maintainer.id:
        raise CodeUnknown("That code is not one we gave you. Check it against the email.")
    if claim.status == ClaimStatus.EXPIRED or (
        CLAIM_LIFECYCLE.allows(ClaimAction.EXPIRE, claim.status) and claim.expires_at <= utcnow()
    ):
        raise CodeExpired(
            f"That code expired on {formats.day(claim.expires_at)}. You can ask for a "
            "new one if keys are left."
        )
    if claim.status == ClaimStatus.CANCELLED:  # "already used" would promise a parcel
        raise CodeUsed(
            f"You cancelled the claim of that code{_on(claim.closed_at)}, so it no longer "
            "works. If you asked for a new code since, enter that one."
        )
    if not CLAIM_LIFECYCLE.allows(ClaimAction.REDEEM, claim.status):
        raise CodeUsed(f"That code was already used{_on(claim.redeemed_at)}. See My claim.")
    return claim


def _code_digest(code: str) -> str:
    try:
        return codes.code_hash(code)
    except codes.MalformedCode as problem:
        raise CodeTypo(str(problem)) from None


def _on(moment: datetime | None) -> str:
    return f" on {formats.day(moment)}" if moment else ""


def redeem_claim(
    *,
    session: Session,
    mailer: Mailer,
    settings: Settings,
    actor: Actor,
    maintainer: Maintainer,
    code: str,
    items: Mapping[str, int],
    recipient: Recipient,
    idempotency_key: str,
) -> Shipment:
    """Spend a code: allocate the chosen keys and record where they go."""
    earlier = session.exec(
        select(Shipment).where(Shipment.idempotency_key == idempotency_key)
    ).first()
    if earlier is not None:
        return _sent_again(session=session, maintainer=maintainer, code=code, earlier=earlier)
    claim = find_claim_by_code(session=session, maintainer=maintainer, code=code)
    chosen = {sku: n for sku, n in items.items() if n}
    total = sum(chosen.values())
    if any(n < 0 for n in chosen.values()) or not 1 <= total <= claim.keys_reserved:
        raise InvalidChoice(f"Choose between 1 and {claim.keys_reserved} keys in all.")
    for sku in chosen:
        stock.get_key_model(session=session, sku=sku)
    # The code is spent before keys are allocated, and a refusal undoes both: of two requests
    # redeeming one code at once (a double click reaching two servers), the second stops at
    # the spent code holding no keys, although its page answers and commits like any form's.
    with session.begin_nested():
        transition_claim(session, claim, ClaimAction.REDEEM, actor=actor)
        stock.allocate(session=session, items=chosen, reserved=claim.keys_reserved)
    claim.redeemed_at = utcnow()
    claim.keys_reserved = 0
    for sku, quantity in sorted(chosen.items()):
        session.add(ClaimItem(claim_id=claim.id, sku=sku, quantity=quantity))  # type: ignore[arg-type]
    shipment = Shipment(
        claim_id=claim.id,  # type: ignore[arg-type]
        reference=new_shipment_reference(),
        idempotency_key=idempotency_key,
        created_at=utcnow(),
        country=recipient.address.country_code,
        recipient_name=recipient.name,
        recipient_name_local=recipient.name_local,
        phone=recipient.phone,
        address=dict(recipient.address.fields),
        address_lines=list(recipient.address.lines),
        items=chosen,
    )
    session.add(shipment)
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="shipment.created",
        subject_kind="claim",
        subject_id=claim.id,
        details={
            "items": chosen,
            "country": recipient.address.country_code,
            "shipment": shipment.reference,
        },
    )
    mailer.send(
        session=session,
        mail=Mail(
            recipient=maintainer.email,
            subject="We received your shipping address",
            body=render(
                "claim_redeemed.txt",
                greeting_name=maintainer.greeting_name,
                items=_items_text(chosen),
                address_lines=recipient.address.lines,
                base_url=settings.base_url,
            ),
            purpose="claim_redeemed",
        ),
    )
    return shipment


def _sent_again(
    *, session: Session, maintainer: Maintainer, code: str, earlier: Shipment
) -> Shipment:
    """The answer to a redemption form whose idempotency key made ``earlier`` (a double click,
    a reload, a resend after a lost response).

    The key answers only for the claim it was made for, and only while "your keys will be
    shipped" is still true of it: a maintainer who resends an old form after cancelling that
    claim (or who typed another code into a form already sent) expects that code to be
    redeemed, not a thank-you for a parcel that is not coming. So they are told why nothing
    happened, and the form comes back fresh for the code they mean.
    """
    claim = session.get(Claim, earlier.claim_id)
    assert claim is not None  # a foreign key guarantees it
    if claim.maintainer_id != maintainer.id:
        # Another account's form (its key copied): refused, not a clash of unique keys.
        raise InvalidChoice("This form was sent already. Reload the page, then send it.")
    if claim.code_hash != _code_digest(code):
        raise FormSentBefore(
            "This form was sent already, with another code. To redeem this code, check the "
            "form and send it again."
        )
    if claim.status in CLOSED_STATUSES:  # only cancelling closes a redeemed claim
        raise FormSentBefore(
            f"This form was sent{_on(earlier.created_at)} for a claim you have since "
            "cancelled: no keys will be shipped for it. Enter your new code and send the form "
            "again; if you have none, ask for one on My claim."
        )
    # Its current parcel: after a change of address, the country the keys now go to.
    return shipment_of(session=session, claim=claim) or earlier


def change_address(
    *,
    session: Session,
    actor: Actor,
    maintainer: Maintainer,
    claim_id: int,
    recipient: Recipient,
) -> Shipment:
    """Correct where a parcel goes, until its label is printed; after a parcel came back, send
    it again to the corrected address (a new parcel, back in the queue)."""
    claim = get_claim(session=session, maintainer=maintainer, claim_id=claim_id)
    shipment = shipment_of(session=session, claim=claim)
    to = CLAIM_LIFECYCLE.goes_to(
        ClaimAction.CHANGE_ADDRESS, claim.status, subject=f"claim {claim.id}"
    )
    assert shipment is not None  # a redeemed claim has a parcel
    run = session.get(LabelRun, claim.label_run_id) if claim.label_run_id else None
    if run is not None and run.is_live(utcnow()):
        raise ClaimLocked(
            "Your label is being printed right now. Try again in a few minutes; if the label "
            "was printed by then, write to us at once."
        )
    before = shipment.country
    if to != claim.status:  # it came back: a new parcel, back in the queue
        shipment = _reship(session, claim, shipment, actor=actor)
    shipment.country = recipient.address.country_code
    shipment.address = dict(recipient.address.fields)
    shipment.address_lines = list(recipient.address.lines)
    shipment.phone, shipment.recipient_name = recipient.phone, recipient.name
    shipment.recipient_name_local = recipient.name_local
    session.flush()
    # The audit names the change, not the address: personal data stays out of the log.
    record_event(
        session=session,
        actor=actor,
        action="shipment.address_changed",
        subject_kind="claim",
        subject_id=claim.id,
        details={
            "shipment": shipment.reference,
            "before": {"country": before},
            "after": {"country": shipment.country},
        },
    )
    return shipment


def _reship(session: Session, claim: Claim, returned: Shipment, *, actor: Actor) -> Shipment:
    """A new parcel with the returned one's keys, in the queue again."""
    parcel = follow_up_parcel(
        session=session, after=returned, items=returned.items, purpose=ShipmentPurpose.RESHIP
    )
    transition_claim(session, claim, ClaimAction.CHANGE_ADDRESS, actor=actor)
    return parcel


def follow_up_parcel(
    *, session: Session, after: Shipment, items: Mapping[str, int], purpose: ShipmentPurpose
) -> Shipment:
    """A new parcel of the same claim to the same person and address as ``after`` (a parcel
    that came back or was lost), under a new reference."""
    parcel = Shipment(
        claim_id=after.claim_id,
        reference=new_shipment_reference(),
        idempotency_key=secrets.token_urlsafe(24),
        created_at=utcnow(),
        country=after.country,
        recipient_name=after.recipient_name,
        recipient_name_local=after.recipient_name_local,
        phone=after.phone,
        address=dict(after.address),
        address_lines=list(after.address_lines),
        items=dict(items),
        purpose=purpose.value,
    )
    session.add(parcel)
    return parcel


def cancel_claim(
    *,
    session: Session,
    mailer: Mailer,
    settings: Settings,
    actor: Actor,
    maintainer: Maintainer,
    claim_id: int,
) -> Claim:
    """Give the keys back (until the parcel ships) and offer them to the waiting list.

    Only its maintainer cancels a claim, so one found cancelled was cancelled by this request
    sent again (a resend after a lost response, a double click): it gets the first one's
    answer, the cancelled claim, and nothing is released or audited twice.
    """
    claim = get_claim(session=session, maintainer=maintainer, claim_id=claim_id)
    if claim.status == ClaimStatus.CANCELLED:
        return claim
    if not cancellable(session=session, claim=claim):
        raise ClaimLocked(
            "The parcel has left, or you received keys from us already: the claim can no "
            "longer be cancelled. Write to us if you no longer need a replacement."
        )
    parcel = shipment_of(session=session, claim=claim)
    allocated = parcel.items if parcel and claim.status != ClaimStatus.ISSUED else {}
    # The claim moves before its keys do: of two requests cancelling it at once, the one that
    # loses the race has given nothing back, and answers like the winner.
    try:
        transition_claim(session, claim, ClaimAction.CANCEL, actor=actor)
    except ClaimLocked:
        session.refresh(claim)
        if claim.status == ClaimStatus.CANCELLED:
            return claim
        raise
    stock.release(session=session, reserved=claim.keys_reserved, allocated=allocated)
    claim.keys_reserved = 0
    claim.closed_at = utcnow()
    session.flush()
    offer_freed_keys(session=session, mailer=mailer, settings=settings)
    return claim


def cancellable(*, session: Session, claim: Claim) -> bool:
    """Until its parcel ships (or while a returned one waits), unless keys reached the
    maintainer before (a replacement for a damaged key is not given up by cancelling)."""
    return CLAIM_LIFECYCLE.allows(ClaimAction.CANCEL, claim.status) and not any(
        parcel.delivered_at for parcel in shipments_of(session=session, claim=claim)
    )


def expire_claims(
    *, session: Session, mailer: Mailer, settings: Settings, now: datetime | None = None
) -> int:
    """Expire unredeemed codes past their date and free their keys; safe to run repeatedly."""
    now = now or utcnow()
    due = session.exec(
        select(Claim)
        .where(
            col(Claim.status).in_(CLAIM_LIFECYCLE.statuses_allowing(ClaimAction.EXPIRE)),
            Claim.expires_at <= now,
        )
        .with_for_update(skip_locked=True)
    ).all()
    for claim in due:
        stock.release(session=session, reserved=claim.keys_reserved)
        transition_claim(session, claim, ClaimAction.EXPIRE, actor=Actor.system("expire"))
        claim.keys_reserved = 0
        claim.closed_at = now
    session.flush()
    if due:
        offer_freed_keys(session=session, mailer=mailer, settings=settings)
    return len(due)


def join_waitlist(*, session: Session, actor: Actor, maintainer: Maintainer) -> int:
    """Put the maintainer on the waiting list (once); their position in it."""
    entry = session.exec(
        select(WaitlistEntry).where(
            WaitlistEntry.maintainer_id == maintainer.id, col(WaitlistEntry.offered_at).is_(None)
        )
    ).first()
    if entry is None:
        entry = WaitlistEntry(maintainer_id=maintainer.id, joined_at=utcnow())  # type: ignore[arg-type]
        try:
            with session.begin_nested():
                session.add(entry)
                session.flush()
        except sa.exc.IntegrityError:  # a second request of the same person joined first
            return join_waitlist(session=session, actor=actor, maintainer=maintainer)
        record_event(
            session=session,
            actor=actor,
            action="waitlist.joined",
            subject_kind="maintainer",
            subject_id=maintainer.id,
        )
    return _position(session, entry)


def offer_freed_keys(*, session: Session, mailer: Mailer, settings: Settings) -> int:
    """Issue codes to the waiting list, first come first served, while keys are free."""
    offered = 0
    waiting = session.exec(
        select(WaitlistEntry)
        .where(col(WaitlistEntry.offered_at).is_(None))
        .order_by(col(WaitlistEntry.id))
    ).all()
    for entry in waiting:
        maintainer = session.get(Maintainer, entry.maintainer_id)
        assert maintainer is not None  # a foreign key guarantees it
        decision = decide(
            session=session, settings=settings, maintainer=maintainer, country=maintainer.country
        )
        if any(r.code is not ReasonCode.NO_KEYS_LEFT for r in decision.reasons):
            # No longer eligible (or served already): their turn passes.
            entry.offered_at = utcnow()
            continue
        try:
            stock.reserve(session=session, keys=settings.keys_per_maintainer)
        except NoKeysLeft:
            break
        issued = _issue(
            session=session,
            mailer=mailer,
            settings=settings,
            actor=Actor.system("waitlist"),
            maintainer=maintainer,
        )
        entry.offered_at, entry.claim_id = utcnow(), issued.claim.id
        offered += 1
    session.flush()
    return offered


def get_claim(*, session: Session, maintainer: Maintainer, claim_id: int) -> Claim:
    """One of the maintainer's own claims (another maintainer's is simply not found)."""
    claim = session.get(Claim, claim_id)
    if claim is None or claim.maintainer_id != maintainer.id:
        raise ClaimNotFound("There is no such claim.")
    return claim


def items_of(*, session: Session, claim: Claim) -> dict[str, int]:
    return {
        item.sku: item.quantity
        for item in session.exec(select(ClaimItem).where(ClaimItem.claim_id == claim.id)).all()
    }


def shipment_of(*, session: Session, claim: Claim) -> Shipment | None:
    """The claim's current parcel: its newest shipment."""
    return session.exec(
        select(Shipment).where(Shipment.claim_id == claim.id).order_by(col(Shipment.id).desc())
    ).first()


def shipments_of(*, session: Session, claim: Claim) -> list[Shipment]:
    """Every parcel of the claim, oldest first."""
    return list(
        session.exec(
            select(Shipment).where(Shipment.claim_id == claim.id).order_by(col(Shipment.id))
        ).all()
    )


def transition_claim(
    session: Session, claim: Claim, action: ClaimAction, *, actor: Actor, subject: str = ""
) -> None:
    """Apply ``action`` to a claim (``CLAIM_LIFECYCLE``): refused in the table's words when its
    status does not allow it; of two racing requests only one moves it, and the other is told
    what happened. ``subject`` names the claim in those sentences ("parcel SK…")."""
    subject = subject or f"claim {claim.id}"
    before = ClaimStatus(claim.status)
    to = CLAIM_LIFECYCLE.goes_to(action, before, subject=subject)
    if to == before:
        return
    # Reports time activation from the first time, not from a re-activation after a replacement.
    activated_at = utcnow() if to == ClaimStatus.ACTIVATED else None
    activated_at = claim.activated_at or activated_at
    moved = session.execute(
        sa.update(Claim)
        .where(col(Claim.id) == claim.id, col(Claim.status) == before.value)
        .values(status=to.value, activated_at=activated_at)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        now = session.exec(select(Claim.status).where(Claim.id == claim.id)).one()
        raise CLAIM_LIFECYCLE.lost_race(action, now, subject=subject)
    claim.status = to.value
    claim.activated_at = activated_at
    record_event(
        session=session,
        actor=actor,
        action=f"claim.{to.value}",
        subject_kind="claim",
        subject_id=claim.id,
        details={"before": before.value, "after": to.value},
    )


def new_shipment_reference() -> str:
    """A short, unique, readable parcel reference (the label's barcode carries it)."""
    return "SK" + "".join(secrets.choice(codes.ALPHABET) for _ in range(10))


def _items_text(items: Mapping[str, int]) -> str:
    return ", ".join(f"{n} × {sku}" for sku, n in sorted(items.items()))


@dataclass(frozen=True)
class TimelineStep:
    label: str
    at: datetime | None
    state: str  # "done", "current" or "upcoming"


_TIMELINE = (
    (ClaimStatus.ISSUED, "Code issued"),
    (ClaimStatus.REDEEMED, "Address received"),
    (ClaimStatus.LABEL_PRINTED, "Label printed"),
    (ClaimStatus.SHIPPED, "Shipped"),
    (ClaimStatus.DELIVERED, "Delivered"),
    (ClaimStatus.ACTIVATED, "Keys registered"),
)
_TIMELINE_STAND_IN = {
    ClaimStatus.RETURNED: ClaimStatus.SHIPPED,
    ClaimStatus.LOST: ClaimStatus.SHIPPED,
}


def timeline(*, session: Session, claim: Claim) -> list[TimelineStep]:
    """The claim's progress, each step with the time the audit log saw it happen."""
    events = session.exec(
        select(AuditEvent)
        .where(
            AuditEvent.subject_kind == "claim",
            AuditEvent.subject_id == str(claim.id),
            col(AuditEvent.action).startswith("claim."),
        )
        .order_by(col(AuditEvent.id))
    ).all()
    seen = {event.action.removeprefix("claim."): event.occurred_at for event in events}
    order = [status for status, _label in _TIMELINE]
    # A returned or lost parcel had been shipped; its exception is told beside the timeline.
    status = _TIMELINE_STAND_IN.get(ClaimStatus(claim.status), ClaimStatus(claim.status))
    reached = order.index(status) if status in order else -1

    # While a parcel is back or lost, nothing is under way: the exception says what comes next.
    stalled = ClaimStatus(claim.status) in _TIMELINE_STAND_IN

    def state(index: int) -> str:
        if index <= reached:
            return "done"
        return "current" if index == reached + 1 and not stalled else "upcoming"

    return [
        TimelineStep(label, seen.get(status.value), state(index))
        for index, (status, label) in enumerate(_TIMELINE)
    ]


def waitlist_position(*, session: Session, maintainer: Maintainer) -> int | None:
    """The maintainer's place on the waiting list, if they are on it."""
    entry = session.exec(
        select(WaitlistEntry).where(
            WaitlistEntry.maintainer_id == maintainer.id, col(WaitlistEntry.offered_at).is_(None)
        )
    ).first()
    return None if entry is None else _position(session, entry)


def _position(session: Session, entry: WaitlistEntry) -> int:
    ahead = session.exec(
        select(sa.func.count())
        .select_from(WaitlistEntry)
        .where(col(WaitlistEntry.offered_at).is_(None), col(WaitlistEntry.id) < entry.id)
    ).one()
    return int(ahead) + 1
