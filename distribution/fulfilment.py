"""Fulfilment: which parcels wait for a label, what a finished label run changes, shipping
(one scanned parcel or a carrier manifest) and delivery.

A run is rendered outside any transaction (it may take a minute); only once its PDF is
complete are its claims moved to ``label_printed``, and only those still waiting: a claim
cancelled or re-addressed meanwhile keeps its own state.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from sqlmodel import Session, col, select

from accounts.models import Maintainer
from db import Actor, utcnow
from distribution import stock
from distribution.claims import items_of, transition_claim
from distribution.errors import ClaimLocked, InvalidShipping, ParcelNotFound
from distribution.labels import ParcelLabel
from distribution.models import Claim, ClaimStatus, KeyModel, Shipment
from mail import Mail, Mailer
from settings import Settings


@dataclass(frozen=True)
class QueuedParcel:
    claim_id: int
    label: ParcelLabel


def parcels_with_status(
    *, session: Session, status: ClaimStatus, base_url: str
) -> list[QueuedParcel]:
    """Parcels of claims in ``status``, oldest claim first, ready to be put on labels."""
    rows = session.exec(
        select(Claim, Shipment)
        .join(Shipment, col(Shipment.claim_id) == Claim.id)
        .where(Claim.status == status.value)
        .order_by(col(Claim.redeemed_at), col(Claim.id))
    ).all()
    names = {model.sku: model.name for model in session.exec(select(KeyModel)).all()}
    return [
        QueuedParcel(
            claim_id=claim.id or 0,
            label=ParcelLabel(
                reference=shipment.reference,
                claim_reference=f"Claim {claim.id} · code …{claim.code_hint}",
                recipient_lines=list(shipment.address_lines),
                recipient_local=shipment.recipient_name_local,
                phone=shipment.phone,
                country=shipment.country,
                items=[
                    (names.get(sku, sku), n)
                    for sku, n in sorted(items_of(session=session, claim=claim).items())
                ],
                activation_url=f"{base_url}/claim",
            ),
        )
        for claim, shipment in rows
    ]


def mark_labels_printed(*, session: Session, actor: Actor, claim_ids: list[int]) -> int:
    """After a complete run: its claims that still wait for a label have one now."""
    claims = session.exec(
        select(Claim).where(
            col(Claim.id).in_(claim_ids), Claim.status == ClaimStatus.REDEEMED.value
        )
    ).all()
    for claim in claims:
        transition_claim(session, claim, ClaimStatus.LABEL_PRINTED, actor=actor)
    session.flush()
    return len(claims)


def find_parcel(*, session: Session, reference: str) -> tuple[Claim, Shipment]:
    """The claim and shipment behind a scanned or typed reference (case and blanks forgiven)."""
    wanted = "".join(reference.split()).upper()
    row = session.exec(
        select(Claim, Shipment)
        .join(Shipment, col(Shipment.claim_id) == Claim.id)
        .where(Shipment.reference == wanted)
    ).first()
    if row is None:
        raise ParcelNotFound(f"No parcel has the reference {wanted[:40]!r}.")
    return row[0], row[1]


def ship_parcel(
    *,
    session: Session,
    mailer: Mailer,
    settings: Settings,
    actor: Actor,
    reference: str,
    carrier: str,
    tracking_number: str,
) -> Shipment:
    """The parcel left: the ledger loses its keys and the maintainer gets a tracking link."""
    claim, shipment = find_parcel(session=session, reference=reference)
    if claim.status != ClaimStatus.LABEL_PRINTED:
        raise ClaimLocked(
            f"Parcel {shipment.reference} is {claim.status.replace('_', ' ')}: only a parcel "
            "with a printed label can be shipped."
        )
    if not tracking_number.strip():
        raise InvalidShipping("Enter the carrier's tracking number.")
    transition_claim(session, claim, ClaimStatus.SHIPPED, actor=actor)
    stock.ship(
        session=session,
        actor=actor,
        items=items_of(session=session, claim=claim),
        reference=shipment.reference,
    )
    shipment.carrier, shipment.tracking_number = carrier.strip(), tracking_number.strip()
    shipment.shipped_at = utcnow()
    session.flush()
    maintainer = session.get(Maintainer, claim.maintainer_id)
    assert maintainer is not None  # a foreign key guarantees it
    link = settings.tracking_url(shipment.carrier, shipment.tracking_number)
    mailer.send(
        session=session,
        mail=Mail(
            recipient=maintainer.email,
            subject="Your security keys are on their way",
            body=(
                f"Hello {maintainer.greeting_name},\n\n"
                f"Your parcel {shipment.reference} left with {shipment.carrier}, tracking number "
                f"{shipment.tracking_number}.\n"
                + (f"Follow it here: {link}\n" if link else "")
                + f"\nWhen it arrives, register both keys: {settings.base_url}/claim\n"
            ),
            purpose="parcel_shipped",
        ),
    )
    return shipment


def record_delivery(*, session: Session, actor: Actor, reference: str) -> Shipment:
    """The carrier delivered the parcel."""
    claim, shipment = find_parcel(session=session, reference=reference)
    transition_claim(session, claim, ClaimStatus.DELIVERED, actor=actor)
    shipment.delivered_at = utcnow()
    session.flush()
    return shipment


@dataclass(frozen=True)
class ManifestLine:
    """One line of a carrier manifest (reference, carrier, tracking number) and its problem."""

    line: int
    reference: str
    carrier: str
    tracking_number: str
    problem: str = ""


def read_manifest(*, session: Session, text: str) -> list[ManifestLine]:
    """Check a manifest CSV line by line, without changing anything (the preview)."""
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    if rows and [cell.strip().lower() for cell in rows[0]] == [
        "reference",
        "carrier",
        "tracking_number",
    ]:
        rows, first = rows[1:], 2
    else:
        first = 1
    lines = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=first):
        if not any(cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row] + ["", "", ""]
        reference, carrier, tracking = cells[0].upper(), cells[1], cells[2]
        problem = ""
        if len(row) != 3:
            problem = f"expected 3 columns (reference, carrier, tracking number), found {len(row)}"
        elif not carrier or not tracking:
            problem = "the carrier and the tracking number are both needed"
        elif reference in seen:
            problem = "this parcel is listed twice"
        else:
            try:
                claim, _shipment = find_parcel(session=session, reference=reference)
            except ParcelNotFound as missing:
                problem = missing.message
            else:
                if claim.status != ClaimStatus.LABEL_PRINTED:
                    problem = f"the parcel is {claim.status.replace('_', ' ')}, not waiting to ship"
        seen.add(reference)
        lines.append(ManifestLine(number, reference, carrier, tracking, problem))
    return lines


def apply_manifest(
    *, session: Session, mailer: Mailer, settings: Settings, actor: Actor, text: str
) -> list[ManifestLine]:
    """Ship every good line of a manifest; bad lines are left as they are, with their reason."""
    lines = read_manifest(session=session, text=text)
    for line in lines:
        if not line.problem:
            ship_parcel(
                session=session,
                mailer=mailer,
                settings=settings,
                actor=actor,
                reference=line.reference,
                carrier=line.carrier,
                tracking_number=line.tracking_number,
            )
    return lines
