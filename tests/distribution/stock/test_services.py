"""The stock ledger and its balances: receipts, adjustments, promises, reconciliation."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import select

from core.actors import Actor
from core.audit import AuditEvent
from core.mail import OutboxMailer
from distribution.errors import InvalidMovement, NoKeysLeft
from distribution.models import StockMovement
from distribution.stock import services as stock

ACTOR = Actor.system("test")
A, C = "TITAN-USB-A-NFC", "TITAN-USB-C-NFC"


def receive(session, sku=A, quantity=10, reference="B-1"):
    return stock.receive_stock(
        session=session, actor=ACTOR, sku=sku, quantity=quantity, reference=reference
    )


def test_receiving_stock_adds_a_ledger_row_and_moves_the_balances(session):
    receive(session, A, 10, "B-1")
    receive(session, C, 5, "B-2")
    figures = stock.stock_figures(session=session)
    assert (figures.on_hand, figures.available, figures.reserved, figures.allocated) == (
        15,
        15,
        0,
        0,
    )
    assert [(m.sku, m.on_hand) for m in figures.models] == [(A, 10), (C, 5)]
    assert figures.reconciles
    assert "stock.received" in [e.action for e in session.exec(select(AuditEvent)).all()]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantity": 0}, "at least one key"),
        ({"reference": " "}, "needs a reference"),
        ({"sku": "YUBIKEY"}, "no key model 'YUBIKEY'"),
    ],
)
def test_bad_receipts_are_refused(session, kwargs, message):
    with pytest.raises(Exception, match=message):
        receive(session, **{"sku": A, "quantity": 3, "reference": "R", **kwargs})


def test_a_batch_is_received_once(session):
    receive(session, A, 10, "DN-42")
    with pytest.raises(InvalidMovement, match="received already"):
        receive(session, A, 10, "DN-42")
    receive(session, C, 10, "DN-42")  # the same delivery note may hold the other model


def test_promises_never_exceed_what_is_on_hand(session):
    receive(session, A, 3, "B-1")
    stock.reserve(session=session, keys=2)
    with pytest.raises(NoKeysLeft):
        stock.reserve(session=session, keys=2)
    stock.allocate(session=session, items={A: 1}, reserved=2)  # the spare key is given back
    figures = stock.stock_figures(session=session)
    assert (figures.reserved, figures.allocated, figures.available) == (0, 1, 2)
    with pytest.raises(NoKeysLeft):
        stock.allocate(session=session, items={C: 1}, reserved=0)  # none of that model


def test_adjustments_need_a_reason_and_cannot_undercut_promises(session, settings):
    receive(session, A, 4, "B-1")
    stock.reserve(session=session, keys=2)
    with pytest.raises(InvalidMovement, match="Say why"):
        stock.adjust_stock(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=ACTOR,
            sku=A,
            quantity=-1,
            reason="",
        )
    with pytest.raises(InvalidMovement, match="fewer TITAN-USB-A-NFC keys on hand than"):
        stock.adjust_stock(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=ACTOR,
            sku=A,
            quantity=-3,
            reason="stocktake found three missing",
        )
    stock.adjust_stock(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        sku=A,
        quantity=-2,
        reason="two damaged in the warehouse",
    )
    figures = stock.stock_figures(session=session)
    assert (figures.on_hand, figures.available) == (2, 0)
    assert figures.reconciles


def test_the_reconciliation_fails_when_a_movement_is_missing(session):
    receive(session, A, 4, "B-1")
    # A movement written around the service: the balances no longer match the ledger.
    session.execute(
        sa.insert(StockMovement).values(
            sku=A,
            kind="adjusted",
            quantity=1,
            occurred_at=sa.func.now(),
            actor_kind="system",
            actor_label="",
            reference="X",
            note="",
        )
    )
    assert not stock.stock_figures(session=session).reconciles
