"""The stock ledger and what is promised from it.

Every movement of keys is a row of the ledger; on hand is their sum. Beside it, ``stock_balance``
keeps per model and in total what is on hand and what is promised (codes' reservations and
parcels' allocations), and its CHECK constraints refuse any write that would promise more than is
on hand — so two requests racing for the last keys cannot both win, on SQLite or PostgreSQL.
``stock_report`` reconciles the two and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core.actors import Actor
from core.audit import record_event
from core.db import utcnow
from core.mail import Mailer
from core.settings import Settings
from distribution.errors import InvalidMovement, NoKeysLeft, UnknownKeyModel
from distribution.models import (
    TOTAL,
    KeyModel,
    LowStockAlert,
    MovementKind,
    StockBalance,
    StockMovement,
)
from distribution.stock import burn_down


def get_key_model(*, session: Session, sku: str) -> KeyModel:
    model = session.get(KeyModel, sku)
    if model is None:
        known = ", ".join(m.sku for m in session.exec(select(KeyModel)).all())
        raise UnknownKeyModel(f"There is no key model {sku!r}. Known models: {known}.")
    return model


def key_models(*, session: Session) -> list[KeyModel]:
    return list(session.exec(select(KeyModel).order_by(col(KeyModel.sku))).all())


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
    if quantity <= 0:
        raise InvalidMovement("A received batch holds at least one key.")
    if not reference.strip():
        raise InvalidMovement("A received batch needs a reference, such as the delivery note.")
    get_key_model(session=session, sku=sku)
    if find_receipt(session=session, sku=sku, reference=reference.strip()):
        raise InvalidMovement(f"Batch {reference.strip()!r} of {sku} was received already.")
    return record_movement(
        session=session,
        actor=actor,
        sku=sku,
        kind=MovementKind.RECEIVED,
        quantity=quantity,
        reference=reference,
        note=note,
    )


def adjust_stock(
    *,
    session: Session,
    mailer: Mailer,
    settings: Settings,
    actor: Actor,
    sku: str,
    quantity: int,
    reason: str,
) -> StockMovement:
    """Correct the count of a model (after a stocktake, say); the reason is mandatory. A
    correction downwards may cross a low-stock threshold, which tells programme staff."""
    if quantity == 0:
        raise InvalidMovement("An adjustment changes the count by at least one key.")
    if len(reason.strip()) < 5:
        raise InvalidMovement("Say why the count changes (at least 5 characters).")
    get_key_model(session=session, sku=sku)
    movement = record_movement(
        session=session,
        actor=actor,
        sku=sku,
        kind=MovementKind.ADJUSTED,
        quantity=quantity,
        reference=f"ADJ-{utcnow():%Y%m%d-%H%M%S}",
        note=reason,
    )
    burn_down.alert_if_low(session=session, mailer=mailer, settings=settings)
    return movement


def record_movement(
    *,
    session: Session,
    actor: Actor,
    sku: str,
    kind: MovementKind,
    quantity: int,
    reference: str,
    note: str = "",
) -> StockMovement:
    """Append one ledger row and move the balances with it, in the caller's transaction."""
    movement = StockMovement(
        sku=sku,
        kind=kind.value,
        quantity=quantity,
        occurred_at=utcnow(),
        actor_kind=actor.kind.value,
        actor_id=actor.id,
        actor_label=actor.label,
        reference=reference.strip(),
        note=note.strip(),
    )
    try:
        with session.begin_nested():
            session.add(movement)
            session.flush()
            _shift(session, on_hand={sku: quantity, TOTAL: quantity})
    except sa.exc.IntegrityError:
        raise InvalidMovement(
            f"That would leave fewer {sku} keys on hand than are already promised."
        ) from None
    if quantity > 0 and kind in (MovementKind.RECEIVED, MovementKind.ADJUSTED):
        # New stock re-arms the low-stock alerts it lifts availability back above.
        session.execute(
            sa.delete(LowStockAlert).where(
                col(LowStockAlert.threshold) <= available_keys(session=session)
            )
        )
    record_event(
        session=session,
        actor=actor,
        action=f"stock.{kind.value}",
        subject_kind="stock_movement",
        subject_id=movement.id,
        details={
            "sku": sku,
            "quantity": quantity,
            "reference": movement.reference,
            "note": movement.note,
        },
    )
    return movement


def reserve(*, session: Session, keys: int) -> None:
    """Promise ``keys`` keys of any model to a new code, or raise NoKeysLeft."""
    try:
        with session.begin_nested():
            _shift(session, committed={TOTAL: keys})
    except sa.exc.IntegrityError:
        raise NoKeysLeft("All keys are promised to someone already.") from None


def release(
    *, session: Session, reserved: int = 0, allocated: Mapping[str, int] | None = None
) -> None:
    """Give back a code's reservation and a parcel's allocation (cancelled, expired)."""
    allocated = allocated or {}
    _shift(
        session,
        committed={
            TOTAL: -(reserved + sum(allocated.values())),
            **{sku: -n for sku, n in allocated.items()},
        },
    )


def allocate(*, session: Session, items: Mapping[str, int], reserved: int) -> None:
    """Turn a code's reservation into keys of chosen models; raise NoKeysLeft for a model that
    has too few left (a smaller choice than the reservation gives the rest back)."""
    try:
        with session.begin_nested():
            _shift(session, committed={TOTAL: sum(items.values()) - reserved, **items})
    except sa.exc.IntegrityError:
        raise NoKeysLeft("One of the chosen models has too few keys left.") from None


def ship(*, session: Session, actor: Actor, items: Mapping[str, int], reference: str) -> None:
    """Keys leave: a ledger row per model, and the allocation is fulfilled."""
    _shift(
        session, committed={TOTAL: -sum(items.values()), **{sku: -n for sku, n in items.items()}}
    )
    for sku, quantity in items.items():
        record_movement(
            session=session,
            actor=actor,
            sku=sku,
            kind=MovementKind.SHIPPED,
            quantity=-quantity,
            reference=reference,
        )


def take_back(*, session: Session, actor: Actor, items: Mapping[str, int], reference: str) -> None:
    """A parcel came back: its keys are on hand again (a ledger row per model), held for the
    same claim until it ships again or is cancelled."""
    for sku, quantity in items.items():
        record_movement(
            session=session,
            actor=actor,
            sku=sku,
            kind=MovementKind.RETURNED,
            quantity=quantity,
            reference=reference,
            note="Returned to sender",
        )
    allocate(session=session, items=items, reserved=0)


def _shift(
    session: Session,
    *,
    on_hand: Mapping[str, int] | None = None,
    committed: Mapping[str, int] | None = None,
) -> None:
    """Add to balance rows in place; the CHECK constraints judge the result.

    Every transaction takes the balance rows' locks in one order: the programme's total first
    (even when it does not change), then the models' rows by SKU. So no transaction holds a
    model's row while waiting for the total that another holds while waiting for that model:
    a carrier manifest shipping parcels and a stock receipt deadlocked on exactly that."""
    changes: dict[str, dict[str, int]] = {}
    for column, deltas in (("on_hand", on_hand or {}), ("committed", committed or {})):
        for sku, delta in deltas.items():
            if delta:
                changes.setdefault(sku, {})[column] = delta
    if not changes:
        return
    total = changes.pop(TOTAL, {})
    if total:
        _add(session, TOTAL, total)
    else:
        session.execute(
            sa.select(col(StockBalance.sku)).where(col(StockBalance.sku) == TOTAL).with_for_update()
        )
    for sku in sorted(changes):
        _add(session, sku, changes[sku])
    if total:
        burn_down.record_day(session=session)


def _add(session: Session, sku: str, deltas: Mapping[str, int]) -> None:
    session.execute(
        sa.update(StockBalance)
        .where(col(StockBalance.sku) == sku)
        .values({column: getattr(StockBalance, column) + d for column, d in deltas.items()})
    )


@dataclass(frozen=True)
class ModelFigures:
    sku: str
    name: str
    on_hand: int
    allocated: int
    ledger_sum: int

    @property
    def available(self) -> int:
        return self.on_hand - self.allocated


@dataclass(frozen=True)
class StockFigures:
    models: list[ModelFigures]
    on_hand: int
    reserved: int
    allocated: int
    ledger_sum: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved - self.allocated

    @property
    def reconciles(self) -> bool:
        """The balances agree with the ledger, in total and per model."""
        return self.ledger_sum == self.on_hand and all(
            m.ledger_sum == m.on_hand for m in self.models
        )

    def available_of(self, sku: str) -> int:
        """Keys of one model that can still be allocated (never more than in total)."""
        model = next(m for m in self.models if m.sku == sku)
        return max(0, min(model.available, self.available + self.reserved))


def stock_figures(*, session: Session) -> StockFigures:
    balances = {b.sku: b for b in session.exec(select(StockBalance)).all()}
    sums = dict(
        session.execute(
            sa.select(
                col(StockMovement.sku), sa.func.coalesce(sa.func.sum(StockMovement.quantity), 0)
            ).group_by(col(StockMovement.sku))
        ).all()
    )
    models = [
        ModelFigures(
            sku=model.sku,
            name=model.name,
            on_hand=balances[model.sku].on_hand,
            allocated=balances[model.sku].committed,
            ledger_sum=int(sums.get(model.sku, 0)),
        )
        for model in key_models(session=session)
    ]
    total = balances[TOTAL]
    allocated = sum(m.allocated for m in models)
    return StockFigures(
        models=models,
        on_hand=total.on_hand,
        reserved=total.committed - allocated,
        allocated=allocated,
        ledger_sum=sum(int(v) for v in sums.values()),
    )


def on_hand(*, session: Session) -> dict[str, int]:
    """Keys on hand per model: the sum of the ledger."""
    return {m.sku: m.ledger_sum for m in stock_figures(session=session).models}


def available_keys(*, session: Session) -> int:
    """Keys that can still be promised to someone: on hand minus reserved and allocated."""
    total = session.get(StockBalance, TOTAL)
    return 0 if total is None else total.on_hand - total.committed


def recent_movements(*, session: Session, limit: int = 20) -> list[StockMovement]:
    """The newest ledger rows first."""
    return list(
        session.exec(
            select(StockMovement).order_by(col(StockMovement.id).desc()).limit(limit)
        ).all()
    )
