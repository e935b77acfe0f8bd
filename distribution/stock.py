"""The stock ledger: every movement of keys is a row; on hand is their sum."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, select

from db import Actor, record_event, utcnow
from distribution.errors import InvalidMovement, UnknownKeyModel
from distribution.models import KeyModel, MovementKind, StockMovement


def get_key_model(*, session: Session, sku: str) -> KeyModel:
    model = session.get(KeyModel, sku)
    if model is None:
        known = ", ".join(m.sku for m in session.exec(select(KeyModel)).all())
        raise UnknownKeyModel(f"There is no key model {sku!r}. Known models: {known}.")
    return model


def find_receipt(*, session: Session, sku: str, reference: str) -> StockMovement | None:
    """The receipt of batch ``reference`` for model ``sku``, if it was received."""
    return session.exec(
        select(StockMovement).where(
            StockMovement.sku == sku,
            StockMovement.reference == reference,
            StockMovement.kind == MovementKind.RECEIVED.value,
        )
    ).first()


def receive_stock(
    *, session: Session, actor: Actor, sku: str, quantity: int, reference: str, note: str = ""
) -> StockMovement:
    """Record a batch of keys arriving; a reference is received once per model."""
    get_key_model(session=session, sku=sku)
    if quantity <= 0:
        raise InvalidMovement("A received batch holds at least one key.")
    if not reference.strip():
        raise InvalidMovement("A received batch needs a reference, such as the delivery note.")
    if find_receipt(session=session, sku=sku, reference=reference.strip()):
        raise InvalidMovement(f"Batch {reference!r} of {sku} was received already.")
    movement = StockMovement(
        sku=sku,
        kind=MovementKind.RECEIVED.value,
        quantity=quantity,
        occurred_at=utcnow(),
        actor_kind=actor.kind.value,
        actor_id=actor.id,
        actor_label=actor.label,
        reference=reference.strip(),
        note=note.strip(),
    )
    session.add(movement)
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="stock.received",
        subject_kind="stock_movement",
        subject_id=movement.id,
        details={"sku": sku, "quantity": quantity, "reference": movement.reference},
    )
    return movement


def on_hand(*, session: Session) -> dict[str, int]:
    """Keys on hand per model: the sum of the ledger (models without movements show 0)."""
    rows = session.execute(
        sa.select(col(StockMovement.sku), sa.func.sum(StockMovement.quantity)).group_by(
            col(StockMovement.sku)
        )
    )
    totals: dict[str, int] = {sku: quantity for sku, quantity in rows}
    models = session.exec(select(KeyModel.sku).order_by(KeyModel.sku)).all()
    return {sku: int(totals.get(sku) or 0) for sku in models}


def available_keys(*, session: Session) -> int:
    """Keys that can still be promised to someone: on hand, across all models."""
    return sum(on_hand(session=session).values())
