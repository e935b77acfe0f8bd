"""Racing for the last keys with real threads against a real database file or server.

Each worker has its own session and commits or rolls back as a request would. Afterwards the
database must hold exactly what the stock allows, the ledger must reconcile, and nobody may
hold two claims.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from accounts.services import actor_for
from adapters.addresses import validate_address
from core.db import create_db_engine
from core.errors import DomainError
from core.mail import OutboxMailer
from distribution.claims import services as claims
from distribution.models import Claim, Shipment
from distribution.stock import services as stock
from eligibility.services import ensure_project
from tests.factories import USB_A, USB_C, import_statistics, make_owner, receive_keys

A, C = USB_A, USB_C
LYON = {
    "country_code": "FR",
    "city": "Lyon",
    "postal_code": "69002",
    "street_address": "1 Place Bellecour",
    "name": "Racer",
}


@pytest.fixture
def race_engine(databases) -> Iterator[sa.Engine]:
    """A fresh committed database with 10 keys (4 USB-A, 6 USB-C) and 16 eligible people."""
    engine = create_db_engine(databases.create("race"))
    with Session(engine) as session:
        ensure_project(session=session, name="raced-project")
        import_statistics(session, "project,downloads\nraced-project,9\nother,1\n")
        for number in range(16):
            make_owner(session, "raced-project", username=f"racer-{number}", country="FR")
        receive_keys(session, {A: 4, C: 6}, "R")
        session.commit()
    yield engine
    engine.dispose()


def race(engine: sa.Engine, attempts: list[Callable[[Session], object]]) -> list[object]:
    """Run every attempt at once, each in its own transaction; results or domain errors."""
    barrier = threading.Barrier(len(attempts))
    results: list[object] = [None] * len(attempts)

    def run(index: int) -> None:
        with Session(engine, expire_on_commit=False) as session:
            barrier.wait()
            try:
                results[index] = attempts[index](session)
                session.commit()
            except DomainError as refusal:
                session.rollback()
                results[index] = refusal

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(attempts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def people(session: Session):
    from accounts.models import Maintainer

    return session.exec(select(Maintainer).order_by(Maintainer.username)).all()


def test_sixteen_people_racing_twice_for_ten_keys(race_engine, settings):
    engine = race_engine
    mailer = OutboxMailer()

    def attempt(username: str) -> Callable[[Session], object]:
        def issue(session: Session) -> object:
            me = next(p for p in people(session) if p.username == username)
            return claims.issue_claim_code(
                session=session,
                mailer=mailer,
                settings=settings,
                actor=actor_for(me),
                maintainer=me,
            )

        return issue

    names = [f"racer-{n}" for n in range(16)]
    results = race(engine, [attempt(name) for name in names * 2])

    outcomes = Counter(type(result).__name__ for result in results)
    assert outcomes["IssuedCode"] == 5  # 10 keys, 2 each
    assert outcomes["IssuedCode"] + outcomes["WaitlistPlace"] + outcomes["AlreadyClaimed"] == 32
    with Session(engine) as session:
        holders = Counter(c.maintainer_id for c in session.exec(select(Claim)).all())
        assert len(holders) == 5 and set(holders.values()) == {1}
        figures = stock.stock_figures(session=session)
        assert (figures.reserved, figures.available, figures.on_hand) == (10, 0, 10)
        assert figures.reconciles

    # The five holders now race to redeem two USB-A keys each: there are four.
    codes = {r.claim.maintainer_id: r.code for r in results if isinstance(r, claims.IssuedCode)}

    def redeem(maintainer_id: int, code: str) -> Callable[[Session], object]:
        def attempt(session: Session) -> object:
            me = next(p for p in people(session) if p.id == maintainer_id)
            return claims.redeem_claim(
                session=session,
                mailer=mailer,
                settings=settings,
                actor=actor_for(me),
                maintainer=me,
                code=code,
                items={A: 2},
                recipient=claims.Recipient(
                    validate_address(LYON, served=settings.countries), "+33412345678", "Racer"
                ),
                idempotency_key=f"form-{maintainer_id}",
            )

        return attempt

    redeemed = race(engine, [redeem(m, code) for m, code in codes.items()])
    assert sum(isinstance(r, Shipment) for r in redeemed) == 2
    assert all(type(r).__name__ == "NoKeysLeft" for r in redeemed if not isinstance(r, Shipment))
    with Session(engine) as session:
        figures = stock.stock_figures(session=session)
        assert (figures.allocated, figures.reserved, figures.available) == (4, 6, 0)
        assert figures.models[0].allocated == 4 and figures.reconciles


def test_a_code_redeemed_eight_times_at_once_works_once(race_engine, settings):
    engine = race_engine
    mailer = OutboxMailer()
    with Session(engine, expire_on_commit=False) as session:
        me = people(session)[0]
        issued = claims.issue_claim_code(
            session=session, mailer=mailer, settings=settings, actor=actor_for(me), maintainer=me
        )
        session.commit()
        maintainer_id = me.id

    def attempt(key: str) -> Callable[[Session], object]:
        def redeem(session: Session) -> object:
            me = next(p for p in people(session) if p.id == maintainer_id)
            return claims.redeem_claim(
                session=session,
                mailer=mailer,
                settings=settings,
                actor=actor_for(me),
                maintainer=me,
                code=issued.code,
                items={C: 1},
                recipient=claims.Recipient(
                    validate_address(LYON, served=settings.countries), "+33412345678", "Racer"
                ),
                idempotency_key=key,
            )

        return redeem

    results = race(engine, [attempt(f"tab-{n}") for n in range(8)])
    assert sum(isinstance(r, Shipment) for r in results) == 1
    assert {type(r).__name__ for r in results if not isinstance(r, Shipment)} == {"CodeUsed"}
    with Session(engine) as session:
        assert len(session.exec(select(Shipment)).all()) == 1
        assert stock.stock_figures(session=session).reconciles
