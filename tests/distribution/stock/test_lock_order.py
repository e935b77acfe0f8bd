"""Stock movements never deadlock: a carrier manifest shipping parcels while programme staff
record receipts, on PostgreSQL, through the web app in real threads.

The manifest took the programme total's balance row and then each model's; a receipt took its
model's row and then the total. Four tries in four deadlocked (PostgreSQL broke each by
rolling one side back whole, and staff got a 500). Every transaction now locks the total
first, then models by SKU."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session, select

from accounts.models import StaffRole
from app import create_app
from core.db import create_db_engine, get_database
from core.settings import Settings
from distribution.claims.services import transition_claim
from distribution.models import Claim, ClaimAction, StockMovement
from distribution.stock.services import stock_figures
from tests.conftest import DatabaseFactory, Mailbox, make_settings
from tests.factories import (
    ACTOR,
    USB_A,
    USB_C,
    csrf_token,
    make_staff,
    redeem_parcel,
    sign_in_as,
    stock_famous_project,
)

pytestmark = pytest.mark.skipif(
    not os.environ.get("KEYS_TEST_DATABASE_URL"),
    reason="lock order matters on PostgreSQL; SQLite's writers take turns anyway",
)

ROUNDS = 10  # before the lock order was fixed, every round deadlocked (20: 6 min)
PARCELS = 150  # in each round's manifest
PAUSE = 0.02  # between receipts, recorded as long as each round's manifest is applied


@pytest.fixture
def programme(
    databases: DatabaseFactory,
    smtp_server: tuple[Mailbox, int],
    ratelimit_storage_url: str,
    tmp_path: Path,
) -> Iterator[tuple[Settings, Flask, sa.Engine]]:
    """A database of the test's own, committed for real, and an app serving it."""
    url = databases.create("lock_order")
    settings = make_settings(
        url, smtp_server[1], ratelimit_storage_url=ratelimit_storage_url, instance_path=tmp_path
    )
    app = create_app(settings)
    engine = create_db_engine(url)
    yield settings, app, engine
    get_database(app).engine.dispose()
    engine.dispose()


def test_a_manifest_and_stock_receipts_at_once_never_deadlock(programme):
    settings, app, engine = programme
    references: list[list[str]] = []
    with Session(engine, expire_on_commit=False) as session:
        stock_famous_project(session, {USB_A: ROUNDS * PARCELS, USB_C: 2 * ROUNDS * PARCELS})
        for _round in range(ROUNDS):
            batch = []
            for number in range(PARCELS):
                # USB-C only first: the manifest holds the total for a while before it needs
                # the USB-A row, which a receipt may have taken meanwhile.
                items = {USB_C: 2} if number < PARCELS * 2 // 3 else {USB_A: 1, USB_C: 1}
                _person, shipment = redeem_parcel(session, settings, items=items)
                claim = session.get(Claim, shipment.claim_id)
                assert claim is not None
                # Printed (the label run's PDF is not what is tested here).
                transition_claim(session, claim, ClaimAction.PRINT_LABEL, actor=ACTOR)
                batch.append(shipment.reference)
            references.append(batch)
        shipping = make_staff(session, roles=[StaffRole.SHIPPING])
        programme = make_staff(session, roles=[StaffRole.PROGRAMME])
        session.commit()

    desk, office = app.test_client(), app.test_client()
    sign_in_as(desk, shipping)
    sign_in_as(office, programme)
    desk_token = csrf_token(desk, "/staff/shipping")
    office_token = csrf_token(office, "/staff/stock")
    statuses: list[tuple[str, int]] = []

    def apply(client: FlaskClient, batch: list[str]) -> None:
        manifest = "reference,carrier,tracking_number\n" + "".join(
            f"{reference},UPS,1Z999AA1{n:010d}\n" for n, reference in enumerate(batch)
        )
        answer = client.post(
            "/staff/shipping/manifest/apply",
            data={"manifest": manifest, "csrf_token": desk_token},
        )
        statuses.append(("manifest", answer.status_code))

    def receive(client: FlaskClient, round_number: int, manifest: threading.Thread) -> None:
        number = 0
        while manifest.is_alive():
            answer = client.post(
                "/staff/stock/receive",
                data={
                    "sku": (USB_A, USB_C)[number % 2],
                    "quantity": "1",
                    "reference": f"BATCH-{round_number}-{number}",
                    "csrf_token": office_token,
                },
            )
            statuses.append(("receipt", answer.status_code))
            number += 1
            time.sleep(PAUSE)

    for round_number, batch in enumerate(references):
        manifest = threading.Thread(target=apply, args=(desk, batch))
        receipts = threading.Thread(target=receive, args=(office, round_number, manifest))
        manifest.start()
        receipts.start()
        manifest.join(timeout=300)
        receipts.join(timeout=300)

    assert [status for _what, status in statuses if status >= 400] == []
    receipts_recorded = sum(1 for what, _status in statuses if what == "receipt")
    assert sum(1 for what, _status in statuses if what == "manifest") == ROUNDS
    with Session(engine) as session:
        shipped = session.exec(select(Claim).where(Claim.status == "shipped")).all()
        assert len(shipped) == ROUNDS * PARCELS  # every line applied
        movements = session.exec(select(StockMovement)).all()
        assert sum(1 for m in movements if m.kind == "shipped") == ROUNDS * (PARCELS + PARCELS // 3)
        assert sum(1 for m in movements if m.kind == "received") == 2 + receipts_recorded
        figures = stock_figures(session=session)
        assert figures.on_hand == figures.ledger_sum  # the balances reconcile with the ledger
        for model in figures.models:
            assert model.on_hand == model.ledger_sum
        assert figures.allocated == 0 and figures.reserved == 0
