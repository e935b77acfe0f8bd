"""When a shipped parcel goes wrong: returned to sender, lost in transit, a key arrived damaged.

- Returned: the keys are on hand again (a ``returned`` ledger row) and held for the same claim;
  the maintainer is asked to correct the address, which sends a new parcel through the queue.
- Lost: the parcel's keys left the ledger when it shipped, so nothing moves; the loss is written
  off with its reason, and a replacement waits for ``programme`` staff.
- Damaged: keys of a delivered parcel arrived broken. A report names the parcel they came in
  (any delivered parcel of the claim, not only the newest), the model and how many, up to that
  parcel's keys of that model not reported already; each key is one exception. A replacement of
  those keys waits for ``programme`` staff.
An approved replacement draws new stock (refused, with the reason, when there is none) and goes
through the queue like any parcel, to the claim's newest address. What waits for a decision on one
claim (a lost parcel, or every damaged key reported since the last decision) is decided at once
and travels in one parcel. Every step is audited and shown on the maintainer's claim.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import Session, col, select

from accounts.models import Maintainer
from core import formats
from core.actors import Actor
from core.audit import record_event
from core.db import utcnow
from core.mail import Mail, Mailer, render
from core.settings import Settings
from distribution.claims.services import follow_up_parcel, shipment_of, transition_claim
from distribution.errors import ClaimLocked, InvalidShipping, NoKeysLeft, ParcelNotFound
from distribution.models import (
    CLAIM_LIFECYCLE,
    REPLACEMENT_LIFECYCLE,
    Claim,
    ClaimAction,
    ExceptionKind,
    ParcelException,
    Replacement,
    ReplacementAction,
    Shipment,
    ShipmentPurpose,
)
from distribution.shipping.fulfilment import current_shipments, find_current_parcel, find_parcel
from distribution.stock import burn_down
from distribution.stock import services as stock


@dataclass(frozen=True)
class OpenReplacement:
    """A claim's replacement waiting for programme staff, with what they need to decide: the
    reports it answers (each with the parcel it concerns) and the parcel whose address it
    goes to."""

    claim: Claim
    reports: list[tuple[ParcelException, Shipment]]
    destination: Shipment

    @property
    def exception(self) -> ParcelException:
        """The first report; a decision sent about it decides the others too."""
        return self.reports[0][0]

    @property
    def items(self) -> dict[str, int]:
        return _together(replacement_items(e, shipment) for e, shipment in self.reports)


def mark_returned(
    *,
    session: Session,
    mailer: Mailer,
    settings: Settings,
    actor: Actor,
    reference: str,
    note: str = "",
) -> ParcelException:
    """The carrier brought the parcel back: keys on hand again, held for the claim, and the
    maintainer asked to correct the address."""
    claim, shipment = _shipped_parcel(session, actor, reference, ClaimAction.MARK_RETURNED)
    stock.take_back(
        session=session, actor=actor, items=shipment.items, reference=shipment.reference
    )
    [exception] = _record(
        session,
        actor,
        claim,
        shipment,
        kind=ExceptionKind.RETURNED,
        reason=note.strip() or "Returned to sender",
        replacement=Replacement.NOT_NEEDED,
    )
    _tell(
        session,
        mailer,
        claim,
        subject="Your parcel came back to us: please check your address",
        template="parcel_exception_returned.txt",
        reference=shipment.reference,
        note=note.strip(),
        claim_id=claim.id,
        base_url=settings.base_url,
    )
    return exception


def mark_lost(
    *, session: Session, mailer: Mailer, actor: Actor, reference: str, reason: str
) -> ParcelException:
    """The parcel is lost in transit: written off with the reason, a replacement requested."""
    reason = _reason(reason, "Say why the parcel counts as lost (the carrier's answer, say).")
    claim, shipment = _shipped_parcel(session, actor, reference, ClaimAction.MARK_LOST)
    [exception] = _record(
        session,
        actor,
        claim,
        shipment,
        kind=ExceptionKind.LOST,
        reason=reason,
        replacement=Replacement.REQUESTED,
    )
    _tell(
        session,
        mailer,
        claim,
        subject="Your parcel is lost: we are arranging a replacement",
        template="parcel_exception_lost.txt",
        reference=shipment.reference,
    )
    return exception


def report_damaged(
    *, session: Session, actor: Actor, reference: str, sku: str, reason: str, quantity: int = 1
) -> list[ParcelException]:
    """Keys of one model in a delivered parcel arrived broken: a replacement of each is
    requested (one exception a key). The parcel may be any delivered parcel of the claim; keys
    reported already (their replacement requested or approved) cannot be reported again."""
    reason = _reason(reason, "Describe the damage (a few words).")
    claim, shipment = find_parcel(session=session, reference=reference)
    # Two reports about the same keys wait for each other (a row lock on PostgreSQL).
    session.exec(
        select(Claim).where(Claim.id == claim.id).with_for_update(),
        execution_options={"populate_existing": True},
    ).one()
    CLAIM_LIFECYCLE.goes_to(ClaimAction.REPORT_DAMAGED, claim.status, subject=f"claim {claim.id}")
    if shipment.delivered_at is None:
        raise ClaimLocked(
            f"Parcel {shipment.reference} was never delivered: report a damaged key on the "
            "parcel it came in."
        )
    if sku not in shipment.items:
        held = ", ".join(sorted(shipment.items)) or "no keys"
        raise InvalidShipping(f"Parcel {shipment.reference} held {held}, not {sku}.")
    left = keys_not_replaced(session=session, shipment=shipment).get(sku, 0)
    if not left:
        raise ClaimLocked(
            f"Every {sku} key of parcel {shipment.reference} was reported damaged already: its "
            "replacement is requested or approved."
        )
    if not 1 <= quantity <= left:
        raise InvalidShipping(
            f"Parcel {shipment.reference} has {left} {sku} key(s) not reported damaged yet: "
            f"report between 1 and {left}."
        )
    _refuse_erased(_newest(session, claim))
    return _record(
        session,
        actor,
        claim,
        shipment,
        kind=ExceptionKind.DAMAGED,
        reason=reason,
        replacement=Replacement.REQUESTED,
        sku=sku,
        quantity=quantity,
    )


def keys_not_replaced(*, session: Session, shipment: Shipment) -> dict[str, int]:
    """The keys of a parcel, by model, that no damage report covers yet (a declined report
    covers nothing: the key may be reported again)."""
    reported = Counter(
        session.exec(
            select(ParcelException.sku).where(
                ParcelException.shipment_id == shipment.id,
                ParcelException.kind == ExceptionKind.DAMAGED.value,
                col(ParcelException.replacement).in_(
                    (Replacement.REQUESTED.value, Replacement.APPROVED.value)
                ),
            )
        ).all()
    )
    return {sku: n - reported[sku] for sku, n in shipment.items.items() if n > reported[sku]}


def damage_reportable(*, session: Session, claim: Claim, shipment: Shipment) -> dict[str, int]:
    """The keys of this parcel that can be reported damaged now, by model: none unless the
    parcel was delivered, the claim has nothing on its way, and an address is left to send a
    replacement to."""
    if (
        not CLAIM_LIFECYCLE.allows(ClaimAction.REPORT_DAMAGED, claim.status)
        or shipment.delivered_at is None
        or _newest(session, claim).personal_data_erased_at is not None
    ):
        return {}
    return keys_not_replaced(session=session, shipment=shipment)


def approve_replacement(
    *,
    session: Session,
    mailer: Mailer,
    settings: Settings,
    actor: Actor,
    exception_id: int,
    note: str = "",
) -> Shipment:
    """Programme staff approve a replacement: new stock is allocated and a new parcel joins the
    queue, to the claim's newest address. Every report of the claim waiting for a decision is
    approved with it, and its keys travel in that parcel."""
    reports, claim = _requested(session, exception_id, ReplacementAction.APPROVE)
    lost = _newest(session, claim)
    _refuse_erased(lost)
    items = _together(replacement_items(e, shipment) for e, shipment in reports)
    try:
        stock.allocate(session=session, items=items, reserved=0)
    except NoKeysLeft:
        wanted = ", ".join(f"{n} × {sku}" for sku, n in sorted(items.items()))
        raise NoKeysLeft(
            f"There are not enough keys available for the replacement ({wanted}). Receive "
            "stock, or wait until keys come free, then approve again."
        ) from None
    parcel = follow_up_parcel(
        session=session, after=lost, items=items, purpose=ShipmentPurpose.REPLACEMENT
    )
    session.flush()
    transition_claim(session, claim, ClaimAction.SEND_REPLACEMENT, actor=actor)
    for exception, _shipment in reports:
        exception.replacement_shipment_id = parcel.id
        _decide(session, actor, exception, ReplacementAction.APPROVE, note)
    burn_down.alert_if_low(session=session, mailer=mailer, settings=settings)
    _tell(
        session,
        mailer,
        claim,
        subject="Your replacement keys are approved",
        template="parcel_exception_replacement_approved.txt",
        reference=parcel.reference,
        items=", ".join(f"{n} × {sku}" for sku, n in sorted(items.items())),
    )
    return parcel


def decline_replacement(
    *, session: Session, mailer: Mailer, actor: Actor, exception_id: int, note: str
) -> ParcelException:
    """Programme staff decline a replacement (every report of the claim waiting for a
    decision), with the reason the maintainer is told."""
    note = _reason(note, "Say why the replacement is declined: the maintainer is told.")
    reports, claim = _requested(session, exception_id, ReplacementAction.DECLINE)
    for exception, _shipment in reports:
        _decide(session, actor, exception, ReplacementAction.DECLINE, note)
    _tell(
        session,
        mailer,
        claim,
        subject="About your replacement keys",
        template="parcel_exception_replacement_declined.txt",
        reason=note,
    )
    return reports[0][0]


def replacement_items(exception: ParcelException, shipment: Shipment) -> dict[str, int]:
    """A lost parcel is replaced whole; a damaged key one for one."""
    if exception.kind == ExceptionKind.DAMAGED and exception.sku:
        return {exception.sku: 1}
    return dict(shipment.items)


def _together(items: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for each in items:
        total.update(each)
    return dict(total)


def open_replacements(*, session: Session) -> list[OpenReplacement]:
    """Replacements waiting for programme staff, one per claim, oldest first."""
    rows = session.exec(
        select(ParcelException, Claim, Shipment)
        .join(Claim, col(Claim.id) == ParcelException.claim_id)
        .join(Shipment, col(Shipment.id) == ParcelException.shipment_id)
        .where(col(ParcelException.replacement).in_(_UNDECIDED))
        .order_by(col(ParcelException.id))
    ).all()
    claims: dict[int, Claim] = {}
    reports: dict[int, list[tuple[ParcelException, Shipment]]] = {}
    for exception, claim, shipment in rows:
        claims[exception.claim_id] = claim
        reports.setdefault(exception.claim_id, []).append((exception, shipment))
    newest = {
        shipment.claim_id: shipment
        for shipment in session.exec(
            select(Shipment).where(
                col(Shipment.claim_id).in_(list(claims)),
                col(Shipment.id).in_(current_shipments()),
            )
        ).all()
    }
    return [OpenReplacement(claims[i], reports[i], newest[i]) for i in reports]


def exceptions_of(*, session: Session, claim: Claim) -> list[ParcelException]:
    """What went wrong with the claim's parcels, oldest first (for its timeline)."""
    return list(
        session.exec(
            select(ParcelException)
            .where(ParcelException.claim_id == claim.id)
            .order_by(col(ParcelException.id))
        ).all()
    )


def _shipped_parcel(
    session: Session, actor: Actor, reference: str, action: ClaimAction
) -> tuple[Claim, Shipment]:
    """The parcel on its way, moved by ``action`` (returned or lost)."""
    claim, shipment = find_current_parcel(session=session, reference=reference)
    transition_claim(session, claim, action, actor=actor, subject=f"parcel {shipment.reference}")
    return claim, shipment


def _refuse_erased(shipment: Shipment) -> None:
    """A replacement goes to the parcel's address; once erased, there is none to copy."""
    if shipment.personal_data_erased_at is not None:
        raise ClaimLocked(
            f"The address of parcel {shipment.reference} was erased on "
            f"{formats.day(shipment.personal_data_erased_at)} under the retention policy, so no "
            "replacement can be sent to it."
        )


def _newest(session: Session, claim: Claim) -> Shipment:
    shipment = shipment_of(session=session, claim=claim)
    assert shipment is not None  # a claim with a parcel exception has parcels
    return shipment


# Replacements waiting for programme staff's decision.
_UNDECIDED = REPLACEMENT_LIFECYCLE.statuses_allowing(ReplacementAction.APPROVE)


def _requested(
    session: Session, exception_id: int, action: ReplacementAction
) -> tuple[list[tuple[ParcelException, Shipment]], Claim]:
    """The reports of the claim that wait for a decision (the given one among them)."""
    exception = session.get(ParcelException, exception_id)
    if exception is None:
        raise ParcelNotFound("There is no such replacement request.")
    REPLACEMENT_LIFECYCLE.goes_to(action, exception.replacement, subject="this replacement")
    claim = session.get(Claim, exception.claim_id)
    assert claim is not None  # a foreign key guarantees it
    reports = session.exec(
        select(ParcelException, Shipment)
        .join(Shipment, col(Shipment.id) == ParcelException.shipment_id)
        .where(
            ParcelException.claim_id == claim.id,
            col(ParcelException.replacement).in_(_UNDECIDED),
        )
        .order_by(col(ParcelException.id))
    ).all()
    return [(e, shipment) for e, shipment in reports], claim


def _record(
    session: Session,
    actor: Actor,
    claim: Claim,
    shipment: Shipment,
    *,
    kind: ExceptionKind,
    reason: str,
    replacement: Replacement,
    sku: str | None = None,
    quantity: int = 1,
) -> list[ParcelException]:
    """The exceptions of one report (one a damaged key; one for a whole parcel), audited once."""
    now = utcnow()
    reported = [
        ParcelException(
            claim_id=claim.id,  # type: ignore[arg-type]
            shipment_id=shipment.id,  # type: ignore[arg-type]
            kind=kind.value,
            reason=reason[:1000],
            sku=sku,
            reported_at=now,
            reported_by=actor.label,
            replacement=replacement.value,
        )
        for _ in range(quantity)
    ]
    session.add_all(reported)
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action=f"parcel.{kind.value}",
        subject_kind="claim",
        subject_id=claim.id,
        details={
            "shipment": shipment.reference,
            "reason": reason[:1000],
            "sku": sku,
            "replacement": replacement.value,
            **({"quantity": quantity} if sku else {}),
            "exceptions": [exception.id for exception in reported],
        },
    )
    return reported


def _decide(
    session: Session,
    actor: Actor,
    exception: ParcelException,
    action: ReplacementAction,
    note: str,
) -> None:
    before = exception.replacement
    decision = REPLACEMENT_LIFECYCLE.goes_to(action, before, subject="this replacement")
    exception.replacement, exception.decision_note = decision.value, note.strip()[:1000]
    exception.decided_at, exception.decided_by = utcnow(), actor.label
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action=f"parcel.replacement_{decision.value}",
        subject_kind="claim",
        subject_id=exception.claim_id,
        details={
            "exception": exception.id,
            "kind": exception.kind,
            "before": before,
            "after": decision.value,
            "note": exception.decision_note,
        },
    )


def _reason(text: str, message: str) -> str:
    if len(text.strip()) < 3:
        raise InvalidShipping(message)
    return text.strip()


def _tell(
    session: Session,
    mailer: Mailer,
    claim: Claim,
    *,
    subject: str,
    template: str,
    **context: object,
) -> None:
    """Mail the claim's maintainer about their parcel: ``template`` in ``templates/mail``,
    which greets them by ``greeting_name``."""
    maintainer = session.get(Maintainer, claim.maintainer_id)
    assert maintainer is not None  # a foreign key guarantees it
    mailer.send(
        session=session,
        mail=Mail(
            recipient=maintainer.email,
            subject=subject,
            body=render(template, greeting_name=maintainer.greeting_name, **context),
            purpose="parcel_exception",
        ),
    )
