"""Reports checked against a programme built by hand: every figure is counted on paper first."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from core.countries import country_name
from core.db import utcnow
from core.mail import OutboxMailer
from distribution.claims import services as claims
from distribution.models import ClaimAction, MovementKind, Shipment, StockMovement
from distribution.reports import services as reports
from distribution.reports import transparency
from distribution.shipping import exceptions, fulfilment
from tests.factories import (
    ACTOR,
    USB_A,
    USB_C,
    claim_code,
    print_labels,
    redeem_parcel,
    ship,
    stock_famous_project,
)


@pytest.fixture
def programme(session, settings):
    """Ten keys of each model, and eight claims, one in each situation:

    1 delivered and activated · 2 in transit · 3 returned to sender · 4 lost, replacement
    approved · 5 waiting for its label · 6 a code expiring in 5 days · 7 an expired code ·
    8 cancelled after redeeming. Every parcel holds one key of each model.
    """
    stock_famous_project(session, {USB_A: 10, USB_C: 10})
    expired = claim_code(session, settings)[1].claim
    claims.expire_claims(
        session=session, mailer=OutboxMailer(), settings=settings, now=utcnow() + timedelta(days=31)
    )
    parcels = [redeem_parcel(session, settings)[1] for _ in range(4)]
    print_labels(session, settings, [p.claim_id for p in parcels])
    for number, parcel in enumerate(parcels):
        ship(session, settings, parcel.reference, tracking_number=f"T{number}")
    delivered, _in_transit, returned, lost = parcels
    fulfilment.record_delivery(session=session, actor=ACTOR, reference=delivered.reference)
    claims.transition_claim(
        session, session.get(claims.Claim, delivered.claim_id), ClaimAction.ACTIVATE, actor=ACTOR
    )
    exceptions.mark_returned(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        reference=returned.reference,
    )
    lost_report = exceptions.mark_lost(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        reference=lost.reference,
        reason="Not found after 20 days",
    )
    exceptions.approve_replacement(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        exception_id=lost_report.id,
    )
    redeem_parcel(session, settings)  # 5: waiting for its label
    claim_code(session, dataclasses.replace(settings, claim_code_expiry_days=5))  # 6
    person, _ = redeem_parcel(session, settings)  # 8: cancelled
    claims.cancel_claim(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        maintainer=person,
        claim_id=claims.active_claim(session=session, maintainer=person).id,
    )
    session.expire_all()
    return {"expired": expired}


def figures(report, key):
    values = next(v for k, _label, v in report.rows if k == key)
    return values[USB_A], values[USB_C], values["total"]


def test_the_stock_report_follows_every_key(session, programme):
    report = reports.stock_report(session=session)

    assert figures(report, "received") == (10, 10, 20)
    assert figures(report, "adjusted") == (0, 0, 0)
    # Four parcels left (−4 each); one came back (+1 each).
    assert figures(report, "on_hand") == (7, 7, 14)
    assert figures(report, "reserved") == (None, None, 2)  # claim 6's code
    # Claim 3's returned keys are held for it; 4's replacement and 5 wait for labels.
    assert figures(report, "allocated") == (3, 3, 6)
    assert figures(report, "available") == (4, 4, 6)
    assert figures(report, "shipped") == (4, 4, 8)
    assert figures(report, "in_transit") == (1, 1, 2)
    assert figures(report, "delivered") == (1, 1, 2)
    assert figures(report, "activated") == (1, 1, 2)
    assert figures(report, "returned") == (1, 1, 2)
    assert figures(report, "written_off") == (1, 1, 2)
    assert report.reconciles, report.failed


def test_the_check_fails_when_a_movement_is_missing(session, programme):
    # A parcel marked shipped around the services: it left, but the ledger never heard of it.
    waiting = (
        session.execute(
            sa.select(Shipment).where(Shipment.shipped_at.is_(None)).order_by(Shipment.id)
        )
        .scalars()
        .first()
    )
    waiting.shipped_at = utcnow()
    session.flush()

    report = reports.stock_report(session=session)

    assert not report.reconciles
    failed = {(check.name, check.column) for check in report.failed}
    assert ("Shipped in the ledger is what the shipped parcels hold", "total") in failed


def test_the_check_fails_when_the_ledger_has_a_row_the_balances_never_saw(session, programme):
    session.execute(
        sa.insert(StockMovement).values(
            sku=USB_C,
            kind=MovementKind.RECEIVED.value,
            quantity=5,
            occurred_at=utcnow(),
            actor_kind="system",
            actor_label="a script",
            reference="AROUND-THE-SERVICES",
        )
    )
    report = reports.stock_report(session=session)
    assert [(c.name, c.column, c.expected, c.found) for c in report.failed] == [
        ("On hand is the sum of the ledger", USB_C, 12, 7),
        ("On hand is the sum of the ledger", "total", 19, 14),
    ]


def test_the_programme_report_counts_each_step(session, programme):
    report = reports.programme_report(session=session)

    steps = [(s.label, s.count) for s in report.funnel]
    assert steps == [
        ("Eligible maintainers", 8),
        ("Codes issued", 8),
        ("Redeemed", 6),
        ("Shipped", 4),
        ("Delivered", 1),
        ("Activated", 1),
    ]
    assert report.funnel[3].of_previous == pytest.approx(4 / 6)
    assert report.funnel[5].of_first == pytest.approx(1 / 8)
    assert [(c.code, c.issued, c.redeemed, c.shipped, c.activated) for c in report.countries] == [
        ("DE", 8, 6, 4, 1)
    ]
    to_ship, to_activate = report.durations
    assert (to_ship.count, to_activate.count) == (4, 1)
    assert to_ship.median is not None and to_ship.median >= timedelta(0)
    assert report.expiring_codes == 1  # claim 6; claim 7 expired already
    assert report.awaiting_address == 1  # claim 3
    assert (report.open_replacements, report.open_appeals) == (0, 0)


def test_durations_are_median_and_ninetieth_percentile():
    spans = [timedelta(days=d) for d in (1, 2, 3, 4, 5, 6, 7, 8, 9, 30)]
    duration = reports._duration("x", spans)
    assert (duration.median_days, duration.p90_days) == (5.0, 9.0)


def test_the_public_figures_hold_no_person(session, programme):
    figures = transparency.transparency(session=session).as_dict()

    # Given away: promised to a code, held for a parcel, or shipped and not back (the lost
    # parcel's keys too); all that is not available any more.
    assert (figures["given_away"], figures["shipped"], figures["remaining"]) == (14, 6, 6)
    assert figures["keys_total"] == figures["given_away"] + figures["remaining"]
    assert figures["activated"] == 2
    # Three recipients in Germany: too few to show, so they are "Other countries".
    assert figures["by_country"] == [
        {"country": "Other countries", "recipients": 3, "keys_shipped": 6, "keys_activated": 2}
    ]
    text = str(figures)
    for person in session.execute(sa.select(Shipment)).scalars():
        for private in (person.recipient_name, person.phone, *person.address_lines):
            assert private not in text
    assert "@" not in text


def test_small_countries_are_folded_until_other_is_big_enough_too():
    recipients = Counter({"DE": 6, "GB": 5, "JP": 2, "US": 1})
    buckets = transparency._public_countries(recipients, recipients, Counter())
    assert [(b.name, b.recipients) for b in buckets] == [("Germany", 6), ("Other countries", 8)]
    assert all(b.recipients >= transparency.MIN_PUBLIC_BUCKET for b in buckets)
    many = Counter({"DE": 9, "US": 7, "JP": 5})
    assert [b.name for b in transparency._public_countries(many, many, Counter())] == [
        "Germany",
        "United States",
        "Japan",
    ]


@given(
    st.dictionaries(
        st.sampled_from(["AT", "BE", "CA", "FR", "DE", "IT", "JP", "ES", "CH", "GB", "US"]),
        st.integers(min_value=1, max_value=40),
    )
)
def test_no_public_bucket_is_under_five_once_five_people_got_keys(per_country):
    recipients = Counter(per_country)
    buckets = transparency._public_countries(recipients, recipients, Counter())
    assert sum(b.recipients for b in buckets) == sum(recipients.values())
    if sum(recipients.values()) >= transparency.MIN_PUBLIC_BUCKET:
        assert all(b.recipients >= transparency.MIN_PUBLIC_BUCKET for b in buckets)
    shown = {b.name for b in buckets} - {"Other countries"}
    assert all(
        recipients[code] >= transparency.MIN_PUBLIC_BUCKET
        for code in recipients
        if country_name(code) in shown
    )
