"""Fulfilment: label runs mark claims, shipping moves the ledger, manifests explain lines."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from core.audit import AuditEvent
from core.mail import OutboxMailer, OutboxMessage
from distribution.claims import services as claims
from distribution.errors import ClaimLocked, InvalidShipping, ParcelNotFound
from distribution.models import Claim, Shipment
from distribution.shipping import fulfilment
from distribution.stock import services as stock
from tests.factories import (
    ACTOR,
    USB_A,
    USB_C,
    print_labels,
    redeem_parcel,
    ship,
    stock_famous_project,
)


@pytest.fixture
def parcels(session, settings):
    """Two redeemed claims waiting for labels, one key of each model each."""
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    return [redeem_parcel(session, settings)[1] for _ in range(2)]


def test_the_queue_lists_waiting_parcels_oldest_first(session, settings, parcels):
    queued = fulfilment.parcels_with_status(
        session=session, status=claims.ClaimStatus.REDEEMED, base_url=settings.base_url
    )
    assert [q.label.reference for q in queued] == [s.reference for s in parcels]
    label = queued[0].label
    assert label.recipient_lines[-1] == "GERMANY"
    assert label.items == [("Titan Security Key USB-A/NFC", 1), ("Titan Security Key USB-C/NFC", 1)]


def test_shipping_needs_a_printed_label_then_moves_the_ledger(session, settings, parcels):
    first = parcels[0]
    with pytest.raises(ClaimLocked, match="only a parcel with a printed label"):
        ship(session, settings, first.reference)
    print_labels(session, settings, [s.claim_id for s in parcels])
    with pytest.raises(InvalidShipping):
        ship(session, settings, first.reference, tracking_number=" ")

    shipped = ship(session, settings, f"  {first.reference.lower()} ")

    assert (shipped.carrier, shipped.tracking_number) == ("DHL", "00340434161234567890")
    assert session.get(Claim, first.claim_id).status == "shipped"
    figures = stock.stock_figures(session=session)
    assert (figures.on_hand, figures.allocated, figures.available) == (6, 2, 4)
    assert figures.reconciles
    mail = session.exec(
        select(OutboxMessage).where(OutboxMessage.purpose == "parcel_shipped")
    ).one()
    assert "tracking-id=00340434161234567890" in mail.body

    fulfilment.record_delivery(session=session, actor=ACTOR, reference=first.reference)
    assert session.get(Claim, first.claim_id).status == "delivered"
    timeline = claims.timeline(session=session, claim=session.get(Claim, first.claim_id))
    assert [step.state for step in timeline] == ["done"] * 5 + ["current"]


def test_an_unknown_reference_says_so(session, settings, parcels):
    with pytest.raises(ParcelNotFound, match="No parcel has the reference 'SKNOPE'"):
        ship(session, settings, "sknope")


def test_a_manifest_ships_its_good_lines_and_explains_the_rest(session, settings, parcels):
    print_labels(session, settings, [parcels[0].claim_id])
    good, waiting = parcels[0].reference, parcels[1].reference
    text = (
        "reference,carrier,tracking_number\n"
        f"{good},UPS,1Z999AA10123456784\n"
        f"{waiting},UPS,1Z999AA10123456785\n"
        "SKNOPE,UPS,1Z1\n"
        f"{good},UPS,1Z2\n"
        "SKX,UPS\n"
    )
    preview = fulfilment.read_manifest(session=session, settings=settings, text=text)
    assert [(line.line, bool(line.problem)) for line in preview] == [
        (2, False),
        (3, True),
        (4, True),
        (5, True),
        (6, True),
    ]
    assert "not waiting to ship" in preview[1].problem
    assert "listed twice" in preview[3].problem
    assert "expected 3 columns" in preview[4].problem
    assert session.get(Claim, parcels[0].claim_id).status == "label_printed"  # a preview only

    fulfilment.apply_manifest(
        session=session, mailer=OutboxMailer(), settings=settings, actor=ACTOR, text=text
    )
    assert session.get(Claim, parcels[0].claim_id).status == "shipped"
    assert session.get(Claim, parcels[1].claim_id).status == "redeemed"
    assert "claim.shipped" in [e.action for e in session.exec(select(AuditEvent)).all()]


def test_a_manifest_with_cr_line_ends_or_an_endless_cell_is_read_or_refused(
    session, settings, parcels
):
    # Both were 500s: the csv module refused a lone CR, and a cell past its field limit.
    print_labels(session, settings, [parcels[0].claim_id])
    text = f"reference,carrier,tracking_number\r{parcels[0].reference},UPS,1Z999AA10123456784\r"

    preview = fulfilment.read_manifest(session=session, settings=settings, text=text)
    with pytest.raises(InvalidShipping, match="could not be read as CSV"):
        fulfilment.read_deliveries(session=session, text="SKX," + "9" * 200_000)

    assert [(line.line, line.reference, line.problem) for line in preview] == [
        (2, parcels[0].reference, "")
    ]


def test_a_manifest_line_the_parcel_cannot_keep_is_a_bad_line(session, settings, parcels):
    # The shipment keeps a carrier in 40 characters and a tracking number in 60: PostgreSQL
    # refused a longer one with a 500, SQLite kept it silently.
    print_labels(session, settings, [s.claim_id for s in parcels])
    long_carrier, long_tracking = "D" * 41, "1Z" + "9" * 59
    text = (
        f"{parcels[0].reference},{long_carrier},1Z999AA10123456784\n"
        f"{parcels[1].reference},UPS,{long_tracking}\n"
    )

    preview = fulfilment.read_manifest(session=session, settings=settings, text=text)
    fulfilment.apply_manifest(
        session=session, mailer=OutboxMailer(), settings=settings, actor=ACTOR, text=text
    )

    assert [line.problem for line in preview] == [
        f"'{'D' * 40}…' is not a carrier we ship with; the carriers are DHL, UPS, FedEx.",
        "A tracking number has at most 60 characters; this one has 61.",
    ]
    session.expire_all()
    assert [session.get(Claim, s.claim_id).status for s in parcels] == ["label_printed"] * 2
    assert all(s.tracking_number == "" for s in session.exec(select(Shipment)).all())


def test_a_manifest_matches_carriers_in_any_case_and_refuses_unknown_ones(
    session, settings, parcels
):
    # "dhl" shipped with no tracking link in the email and no warning; "Hermes" too.
    print_labels(session, settings, [s.claim_id for s in parcels])
    text = (
        "reference,carrier,tracking_number\n"
        f"{parcels[0].reference}, dhl ,00340434161234567890\n"
        f"{parcels[1].reference},Hermes,H1234\n"
    )

    preview = fulfilment.read_manifest(session=session, settings=settings, text=text)
    fulfilment.apply_manifest(
        session=session, mailer=OutboxMailer(), settings=settings, actor=ACTOR, text=text
    )

    assert [(line.carrier, line.problem) for line in preview] == [
        ("DHL", ""),
        ("Hermes", "'Hermes' is not a carrier we ship with; the carriers are DHL, UPS, FedEx."),
    ]
    session.expire_all()
    shipped = session.get(Shipment, parcels[0].id)
    assert (shipped.carrier, shipped.tracking_number) == ("DHL", "00340434161234567890")
    assert session.get(Claim, parcels[1].claim_id).status == "label_printed"
    mail = session.exec(
        select(OutboxMessage).where(OutboxMessage.purpose == "parcel_shipped")
    ).one()
    assert "left with DHL" in mail.body and "tracking-id=00340434161234567890" in mail.body


def test_shipping_one_parcel_names_its_carrier_as_the_settings_do(session, settings, parcels):
    print_labels(session, settings, [s.claim_id for s in parcels])
    with pytest.raises(InvalidShipping, match="'Pigeon' is not a carrier we ship with"):
        ship(session, settings, parcels[0].reference, carrier="Pigeon")
    with pytest.raises(InvalidShipping, match="at most 60 characters"):
        ship(session, settings, parcels[0].reference, carrier="UPS", tracking_number="9" * 61)

    shipped = ship(session, settings, parcels[0].reference, carrier="fedEX")

    assert shipped.carrier == "FedEx"
    mail = session.exec(
        select(OutboxMessage).where(OutboxMessage.purpose == "parcel_shipped")
    ).one()
    assert "https://www.fedex.com/fedextrack/?trknbr=00340434161234567890" in mail.body


def test_a_delivery_line_naming_no_parcel_is_a_bad_line_whatever_its_length(
    session, settings, parcels
):
    # The reference is only looked up, never stored: an endless one is just not found.
    text = f"{'SK' + 'X' * 5000},2026-11-21\n{parcels[0].reference},2026-11-21\n"

    preview = fulfilment.read_deliveries(session=session, text=text)

    assert [line.problem for line in preview] == [
        f"No parcel has the reference {'SK' + 'X' * 38!r}.",
        "the parcel is redeemed, not on its way",
    ]


def test_the_desk_that_loses_a_race_to_ship_a_parcel_is_told_it_left(session, settings, parcels):
    """Two desks scan the same parcel at once: the second read it as printed before the first
    committed. It is told what happened, not that a code was used, and ships nothing twice."""
    print_labels(session, settings, [parcels[0].claim_id])
    claim = session.get(Claim, parcels[0].claim_id)
    assert claim.status == "label_printed"  # as the second desk read it
    # The first desk ships it; this session still holds the claim as printed.
    session.execute(
        sa.update(Claim).where(col(Claim.id) == claim.id).values(status="shipped"),
        execution_options={"synchronize_session": False},
    )
    before = stock.stock_figures(session=session)

    with pytest.raises(ClaimLocked) as refused:
        ship(session, settings, parcels[0].reference)

    assert refused.value.message == (
        f"Parcel {parcels[0].reference} was shipped a moment ago by someone else. Reload the page."
    )
    after = stock.stock_figures(session=session)
    assert (after.on_hand, after.allocated) == (before.on_hand, before.allocated)
