"""Fulfilment: which parcels wait for a label, and what a finished label run changes.

A run is rendered outside any transaction (it may take a minute); only once its PDF is
complete are its claims moved to ``label_printed``, and only those still waiting: a claim
cancelled or re-addressed meanwhile keeps its own state.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from db import Actor
from distribution.claims import items_of, transition_claim
from distribution.labels import ParcelLabel
from distribution.models import Claim, ClaimStatus, KeyModel, Shipment


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
