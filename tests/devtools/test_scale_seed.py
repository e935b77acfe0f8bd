"""`flask --app app seed --scale N`: a synthetic programme in every state that still adds up."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col, func, select

from accounts.models import KeyOutcome, Maintainer, SecurityKey
from core.audit import AuditEvent
from core.settings import DEFAULT_COUNTRIES
from distribution.models import (
    Claim,
    ClaimItem,
    ClaimStatus,
    ExceptionKind,
    MovementKind,
    ParcelException,
    Replacement,
    Shipment,
    StockDay,
    StockMovement,
)
from distribution.reports import services as reports
from distribution.stock import services as stock
from eligibility.models import Appeal, AppealStatus

SCALE = 60


@pytest.fixture
def demo(app_factory):
    # A programme open for four months, so that codes have had time to expire.
    opened = datetime.now(UTC) - timedelta(days=120)
    return app_factory(
        environment="development", demo_mode=True, mail_backend="outbox", programme_opens_at=opened
    )


def seed(app, *options):
    result = app.test_cli_runner().invoke(args=["seed", "--json", *options])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def count(session, table):
    return session.exec(select(func.count()).select_from(table)).one()


def scale_claims(session):
    return session.exec(
        select(Claim)
        .join(Maintainer, col(Maintainer.id) == Claim.maintainer_id)
        .where(col(Maintainer.username).startswith("scale-"))
    ).all()


def test_a_scaled_seed_builds_every_state_and_reconciles(demo, session):
    seed(demo)
    events_before = count(session, AuditEvent)

    added = seed(demo, "--scale", str(SCALE))["scale"]

    claims = scale_claims(session)
    assert added["claims_added"] == len(claims) == SCALE
    assert {claim.status for claim in claims} == {status.value for status in ClaimStatus}
    report = reports.stock_report(session=session)
    assert report.reconciles, report.failed
    figures = stock.stock_figures(session=session)
    assert 0 <= figures.reserved + figures.allocated <= figures.on_hand
    for model in figures.models:
        assert 0 <= model.allocated <= model.on_hand

    # about a hundred audit events per claim, all in the past
    events = count(session, AuditEvent) - events_before
    assert events == added["audit_events_added"]
    assert 80 * SCALE <= events <= 120 * SCALE
    latest = session.exec(select(func.max(AuditEvent.occurred_at))).one()
    assert latest <= datetime.now(UTC)


def test_timestamps_follow_the_life_of_a_claim(demo, session):
    seed(demo, "--scale", str(SCALE))
    now = datetime.now(UTC)
    for claim in scale_claims(session):
        assert claim.expires_at == claim.issued_at + timedelta(days=30)
        if claim.redeemed_at:
            assert claim.issued_at < claim.redeemed_at < claim.expires_at
        parcels = session.exec(
            select(Shipment).where(Shipment.claim_id == claim.id).order_by(col(Shipment.id))
        ).all()
        for parcel in parcels:
            assert claim.redeemed_at <= parcel.created_at
            if parcel.shipped_at:
                assert parcel.created_at < parcel.shipped_at < now
                assert parcel.carrier and parcel.tracking_number
            if parcel.delivered_at:
                assert parcel.shipped_at < parcel.delivered_at
        if claim.status == ClaimStatus.ACTIVATED:
            delivered = [p.delivered_at for p in parcels if p.delivered_at]
            assert delivered and max(delivered) <= claim.activated_at < now
            titans = session.exec(
                select(func.count())
                .select_from(SecurityKey)
                .where(
                    SecurityKey.maintainer_id == claim.maintainer_id,
                    SecurityKey.outcome == KeyOutcome.TITAN.value,
                )
            ).one()
            held = session.exec(
                select(func.sum(ClaimItem.quantity)).where(ClaimItem.claim_id == claim.id)
            ).one()
            assert titans == held
        if claim.status == ClaimStatus.ISSUED:
            assert claim.expires_at > now and claim.keys_reserved == 2
    issued = [c for c in scale_claims(session) if c.status == ClaimStatus.ISSUED]
    assert any(c.expires_at < now + timedelta(days=7) for c in issued)
    assert any(c.expires_at >= now + timedelta(days=7) for c in issued)


def test_parcels_that_went_wrong_and_open_appeals(demo, session):
    seed(demo, "--scale", str(SCALE))
    exceptions = session.exec(select(ParcelException)).all()
    kinds = Counter((e.kind, e.replacement) for e in exceptions)
    assert kinds[(ExceptionKind.RETURNED.value, Replacement.NOT_NEEDED.value)] >= 1
    assert kinds[(ExceptionKind.LOST.value, Replacement.REQUESTED.value)] >= 1
    assert kinds[(ExceptionKind.LOST.value, Replacement.APPROVED.value)] >= 1
    assert kinds[(ExceptionKind.DAMAGED.value, Replacement.APPROVED.value)] >= 1
    for exception in exceptions:
        if exception.replacement == Replacement.APPROVED:
            replacement = session.get(Shipment, exception.replacement_shipment_id)
            assert replacement.purpose == "replacement"
            assert replacement.created_at >= exception.reported_at
    assert count(session, Appeal) == 3
    assert all(a.status == AppealStatus.OPEN for a in session.exec(select(Appeal)).all())
    countries = Counter(
        session.exec(
            select(Maintainer.country).where(col(Maintainer.username).startswith("scale-0"))
        )
    )
    assert set(countries) <= set(DEFAULT_COUNTRIES)
    assert countries.most_common(2)[0][0] == "US" and countries["DE"] > countries["FR"]
    emails = session.exec(
        select(Maintainer.email).where(col(Maintainer.username).startswith("scale-"))
    )
    assert all(email.endswith("@example.invalid") for email in emails)


def test_the_burn_down_has_a_day_for_every_day_and_agrees_with_the_ledger(demo, session):
    seed(demo, "--scale", str(SCALE))
    days = session.exec(select(StockDay).order_by(col(StockDay.day))).all()
    today = datetime.now(UTC).date()
    assert days[-1].day == today
    assert [d.day for d in days] == [
        days[0].day + timedelta(days=n) for n in range((today - days[0].day).days + 1)
    ]
    assert days[0].day <= (datetime.now(UTC) - timedelta(days=119)).date()

    # each day's on-hand figure is the ledger summed to the end of that day
    ledger = Counter[date]()
    received = set()
    for moment, kind, quantity in session.execute(
        sa.select(StockMovement.occurred_at, StockMovement.kind, StockMovement.quantity)
    ):
        ledger[moment.date()] += quantity
        if kind == MovementKind.RECEIVED:
            received.add(moment.date())
    running = sum(q for day, q in ledger.items() if day < days[0].day)
    for row in days:
        running += ledger[row.day]
        assert row.on_hand == running, row.day
    figures = stock.stock_figures(session=session)
    assert (days[-1].on_hand, days[-1].available) == (figures.on_hand, figures.available)

    # availability only rises on a day keys arrived or came back free: a code expired or was
    # cancelled, or a maintainer took fewer keys than their code held
    freed = {c.closed_at.date() for c in scale_claims(session) if c.closed_at}
    for claim in scale_claims(session):
        held = session.exec(
            select(func.sum(ClaimItem.quantity)).where(ClaimItem.claim_id == claim.id)
        ).one()
        if claim.redeemed_at and held is not None and held < 2:
            freed.add(claim.redeemed_at.date())
    rises = [
        later.day
        for earlier, later in zip(days, days[1:], strict=False)
        if later.available > earlier.available
    ]
    assert rises and set(rises) <= received | freed
    assert sum(1 for day in rises if day in received) >= 2


def test_seeding_again_adds_nothing_and_a_larger_scale_adds_the_difference(demo, session):
    seed(demo, "--scale", str(SCALE))
    tables = (Maintainer, Claim, Shipment, StockMovement, AuditEvent, SecurityKey, StockDay)
    before = [count(session, table) for table in tables]

    again = seed(demo, "--scale", str(SCALE))["scale"]

    assert (again["claims_added"], again["audit_events_added"], again["keys_received"]) == (
        0,
        0,
        0,
    )
    assert [count(session, table) for table in tables] == before

    more = seed(demo, "--scale", str(SCALE + 10))["scale"]

    assert more["claims_added"] == 10 and len(scale_claims(session)) == SCALE + 10
    assert reports.stock_report(session=session).reconciles
    usernames = session.exec(
        select(Maintainer.username).where(col(Maintainer.username).startswith("scale-0"))
    ).all()
    assert sorted(usernames) == [f"scale-{n:05d}" for n in range(1, SCALE + 11)]


def test_the_plain_seed_summary_names_the_scale_part(demo):
    result = demo.test_cli_runner().invoke(args=["seed", "--scale", "20"])
    assert result.exit_code == 0, result.output
    assert "Scale: 20 synthetic claims" in result.output
