"""Parcels that go wrong: returned to sender, lost in transit, a damaged key; voided labels and
delivery files. The ledger must reconcile after every path, and the maintainer must see it."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest
from sqlmodel import col, select

from accounts.services import actor_for
from adapters.addresses import validate_address
from core.audit import AuditEvent
from core.db import utcnow
from core.mail import OutboxMailer, OutboxMessage
from distribution.claims import services as claims
from distribution.errors import ClaimLocked, InvalidShipping, NoKeysLeft, ParcelNotFound
from distribution.models import Claim, ParcelException, Shipment, StockMovement
from distribution.shipping import exceptions, fulfilment
from distribution.stock import services as stock
from tests.factories import (
    ACTOR,
    BERLIN,
    USB_A,
    USB_C,
    print_labels,
    receive_keys,
    redeem_parcel,
    ship,
    shipped_parcel,
    sign_in_as,
    stock_famous_project,
)

MUNICH = {**BERLIN, "city": "München", "postal_code": "80331", "street_address": "Marienplatz 8"}


@pytest.fixture
def stocked(session):
    stock_famous_project(session, {USB_A: 3, USB_C: 3})


def redeemed(session, settings, *, items=None):
    return redeem_parcel(session, settings, items=items)


def address(settings, fields):
    return claims.Recipient(
        validate_address(fields, served=settings.countries), "+49301234567", "Ada Demo"
    )


def figures(session):
    result = stock.stock_figures(session=session)
    assert result.reconciles
    return result.on_hand, result.allocated, result.available


def mails(session, purpose="parcel_exception"):
    return [m.subject for m in session.exec(select(OutboxMessage)).all() if m.purpose == purpose]


def claim_exceptions(session, claim_id):
    return exceptions.exceptions_of(session=session, claim=session.get(Claim, claim_id))


def status(session, claim_id):
    session.expire_all()
    return session.get(Claim, claim_id).status


def test_a_returned_parcel_is_kept_for_its_maintainer_and_sent_again(session, settings, stocked):
    person, parcel = shipped_parcel(session, settings)
    assert figures(session) == (4, 0, 4)

    exceptions.mark_returned(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        reference=parcel.reference,
        note="Addressee unknown",
    )

    assert status(session, parcel.claim_id) == "returned"
    assert figures(session) == (6, 2, 4)  # back on hand, held for the same maintainer
    returned = session.exec(select(StockMovement).where(StockMovement.kind == "returned")).all()
    assert sorted((m.sku, m.quantity, m.reference) for m in returned) == [
        (USB_A, 1, parcel.reference),
        (USB_C, 1, parcel.reference),
    ]
    assert mails(session) == ["Your parcel came back to us: please check your address"]
    body = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all()[-1].body
    assert f"/claim/{parcel.claim_id}/address" in body and "Addressee unknown" in body
    with pytest.raises(ClaimLocked, match="only a parcel on its way"):
        exceptions.mark_returned(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=ACTOR,
            reference=parcel.reference,
        )

    again = claims.change_address(
        session=session,
        actor=actor_for(person),
        maintainer=person,
        claim_id=parcel.claim_id,
        recipient=address(settings, MUNICH),
    )

    assert status(session, parcel.claim_id) == "redeemed"
    assert again.reference != parcel.reference and again.purpose == "reship"
    assert again.items == {USB_A: 1, USB_C: 1} and "80331 MÜNCHEN" in again.address_lines
    queue = fulfilment.label_queue(session=session, base_url=settings.base_url).parcels
    assert [q.label.reference for q in queue] == [again.reference]
    with pytest.raises(ClaimLocked, match="replaced by a newer parcel"):
        fulfilment.find_current_parcel(session=session, reference=parcel.reference)
    claim = session.get(Claim, parcel.claim_id)
    assert [e.kind for e in exceptions.exceptions_of(session=session, claim=claim)] == ["returned"]
    assert figures(session) == (6, 2, 4)
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "parcel.returned")).one()
    assert (event.subject_kind, event.subject_id) == ("claim", str(parcel.claim_id))
    assert event.details == {
        "shipment": parcel.reference,
        "reason": "Addressee unknown",
        "sku": None,
        "replacement": "not_needed",
        "exceptions": [claim_exceptions(session, parcel.claim_id)[0].id],
    }


def test_a_returned_claim_can_be_given_up_and_its_keys_go_back(session, settings, stocked):
    person, parcel = shipped_parcel(session, settings)
    exceptions.mark_returned(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        reference=parcel.reference,
    )
    claims.cancel_claim(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=actor_for(person),
        maintainer=person,
        claim_id=parcel.claim_id,
    )
    assert status(session, parcel.claim_id) == "cancelled"
    assert figures(session) == (6, 0, 6)


def test_a_lost_parcel_is_written_off_and_replaced_once_approved(session, settings, stocked):
    person, parcel = shipped_parcel(session, settings)
    with pytest.raises(InvalidShipping, match="Say why"):
        exceptions.mark_lost(
            session=session,
            mailer=OutboxMailer(),
            actor=ACTOR,
            reference=parcel.reference,
            reason="",
        )

    lost = exceptions.mark_lost(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        reference=parcel.reference,
        reason="DHL: not found after 20 days",
    )

    assert status(session, parcel.claim_id) == "lost"
    assert figures(session) == (4, 0, 4)  # the keys left with the parcel; nothing moves again
    assert [r.exception.id for r in exceptions.open_replacements(session=session)] == [lost.id]

    replacement = exceptions.approve_replacement(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        exception_id=lost.id,
        note="ok",
    )

    assert status(session, parcel.claim_id) == "redeemed"
    assert (replacement.purpose, replacement.items) == ("replacement", {USB_A: 1, USB_C: 1})
    assert replacement.address_lines == parcel.address_lines
    assert figures(session) == (4, 2, 2)  # new stock drawn for the replacement
    assert exceptions.open_replacements(session=session) == []
    session.refresh(lost)
    assert (lost.replacement, lost.replacement_shipment_id) == ("approved", replacement.id)
    with pytest.raises(ClaimLocked, match="approved already"):
        exceptions.approve_replacement(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=ACTOR,
            exception_id=lost.id,
        )
    assert mails(session) == [
        "Your parcel is lost: we are arranging a replacement",
        "Your replacement keys are approved",
    ]
    actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert "parcel.lost" in actions and "parcel.replacement_approved" in actions

    print_labels(session, settings, [parcel.claim_id])
    ship(session, settings, replacement.reference, tracking_number="2")
    assert status(session, parcel.claim_id) == "shipped"
    assert figures(session) == (2, 0, 2)


def test_a_replacement_needs_keys_that_are_free(session, settings, stocked):
    _person, parcel = shipped_parcel(session, settings, items={USB_A: 2})
    lost = exceptions.mark_lost(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        reference=parcel.reference,
        reason="Never arrived",
    )
    redeemed(session, settings, items={USB_A: 1})  # the last USB-A key is allocated

    with pytest.raises(NoKeysLeft, match=r"not enough keys available .*2 × TITAN-USB-A-NFC"):
        exceptions.approve_replacement(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=ACTOR,
            exception_id=lost.id,
        )
    session.refresh(lost)
    assert lost.replacement == "requested" and status(session, parcel.claim_id) == "lost"


def test_a_declined_replacement_tells_the_maintainer_why(session, settings, stocked):
    _person, parcel = shipped_parcel(session, settings)
    lost = exceptions.mark_lost(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        reference=parcel.reference,
        reason="Reported lost",
    )
    exceptions.decline_replacement(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        exception_id=lost.id,
        note="The carrier delivered it to your neighbour.",
    )
    assert status(session, parcel.claim_id) == "lost"
    body = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all()[-1].body
    assert "The carrier delivered it to your neighbour." in body
    assert figures(session) == (4, 0, 4)


def test_a_damaged_key_is_replaced_one_for_one(session, settings, stocked):
    person, parcel = shipped_parcel(session, settings)
    with pytest.raises(ClaimLocked, match="record the delivery first"):
        exceptions.report_damaged(
            session=session, actor=ACTOR, reference=parcel.reference, sku=USB_C, reason="cracked"
        )
    fulfilment.record_delivery(session=session, actor=ACTOR, reference=parcel.reference)
    with pytest.raises(InvalidShipping, match="not NOPE"):
        exceptions.report_damaged(
            session=session, actor=ACTOR, reference=parcel.reference, sku="NOPE", reason="cracked"
        )

    [damaged] = exceptions.report_damaged(
        session=session, actor=ACTOR, reference=parcel.reference, sku=USB_C, reason="Cracked case"
    )
    with pytest.raises(ClaimLocked, match="Every TITAN-USB-C-NFC key of parcel .* reported"):
        exceptions.report_damaged(
            session=session, actor=ACTOR, reference=parcel.reference, sku=USB_C, reason="again"
        )
    assert status(session, parcel.claim_id) == "delivered"
    replacement = exceptions.approve_replacement(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        exception_id=damaged.id,
    )

    assert replacement.items == {USB_C: 1}
    assert status(session, parcel.claim_id) == "redeemed"
    assert figures(session) == (4, 1, 3)
    assert not claims.cancellable(session=session, claim=session.get(Claim, parcel.claim_id))
    with pytest.raises(ClaimLocked, match="received keys from us already"):
        claims.cancel_claim(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=actor_for(person),
            maintainer=person,
            claim_id=parcel.claim_id,
        )
    label = fulfilment.label_queue(session=session, base_url=settings.base_url).parcels[0].label
    assert label.items == [("Titan Security Key USB-C/NFC", 1)]


def test_a_voided_label_sends_the_parcel_back_to_the_queue_under_a_new_reference(
    session, settings, stocked
):
    _person, parcel = redeemed(session, settings)
    print_labels(session, settings, [parcel.claim_id])
    with pytest.raises(InvalidShipping, match="Say why"):
        fulfilment.void_label(session=session, actor=ACTOR, reference=parcel.reference, reason="")

    old = parcel.reference
    voided = fulfilment.void_label(
        session=session, actor=ACTOR, reference=old, reason="Printer jammed"
    )

    assert voided.reference != old and status(session, parcel.claim_id) == "redeemed"
    # Scanned anyway, the old label names the parcel's reference now (it said "no parcel").
    with pytest.raises(ParcelNotFound, match=f"The label {old} was voided: the parcel's "):
        fulfilment.find_parcel(session=session, reference=old.lower())
    event = session.exec(
        select(AuditEvent).where(AuditEvent.action == "shipment.label_voided")
    ).one()
    assert event.details == {"before": old, "after": voided.reference, "reason": "Printer jammed"}
    with pytest.raises(ClaimLocked, match="only a printed label"):
        fulfilment.void_label(
            session=session, actor=ACTOR, reference=voided.reference, reason="again"
        )
    newest = voided.reference
    print_labels(session, settings, [parcel.claim_id])
    newest = fulfilment.void_label(
        session=session, actor=ACTOR, reference=newest, reason="Smudged"
    ).reference
    with pytest.raises(ParcelNotFound, match=f"reference is now {newest}. Throw the old label"):
        fulfilment.find_parcel(session=session, reference=old)


def test_a_delivery_file_records_its_good_lines_and_explains_the_rest(session, settings, stocked):
    _a, first = shipped_parcel(session, settings, items={USB_A: 1})
    _b, second = shipped_parcel(session, settings, items={USB_C: 1})
    _c, waiting = redeemed(session, settings, items={USB_A: 1})
    _d, third = shipped_parcel(session, settings, items={USB_C: 1})
    # A carrier's local time, a minute after shipping (the file gives its offset).
    soon = (utcnow() + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=9)))
    text = (
        "reference,delivered_at\n"
        f"{first.reference},{soon.isoformat(timespec='seconds')}\n"
        f"{third.reference},yesterday\n"
        f"{waiting.reference},\n"
        "SKNOPE,2026-11-21\n"
        f"{first.reference},2026-11-21\n"
        f"{second.reference},2099-01-01\n"
    )

    preview = fulfilment.read_deliveries(session=session, text=text)

    assert [
        (line.line, line.problem.split(" ")[0] if line.problem else "") for line in preview
    ] == [
        (2, ""),
        (3, "'yesterday'"),
        (4, "the"),
        (5, "No"),
        (6, "this"),
        (7, "the"),
    ]
    assert "not on its way" in preview[2].problem and "in the future" in preview[5].problem
    assert status(session, first.claim_id) == "shipped"  # a preview changes nothing

    fulfilment.apply_deliveries(session=session, actor=ACTOR, text=text)

    assert status(session, first.claim_id) == "delivered"
    assert status(session, second.claim_id) == "shipped"
    delivered = session.get(Shipment, first.id)
    assert delivered.delivered_at == soon.replace(microsecond=0)
    assert delivered.delivered_at.utcoffset() == timedelta(0)
    timeline = claims.timeline(session=session, claim=session.get(Claim, first.claim_id))
    assert [step.state for step in timeline][-2:] == ["done", "current"]


def test_a_delivery_time_beyond_the_calendar_in_utc_is_a_bad_line(session, settings, stocked):
    _a, parcel = shipped_parcel(session, settings, items={USB_A: 1})
    text = (
        f"{parcel.reference},0001-01-01T00:00+01:00\n{parcel.reference}X,9999-12-31T23:59-01:00\n"
    )

    preview = fulfilment.read_deliveries(session=session, text=text)
    fulfilment.apply_deliveries(session=session, actor=ACTOR, text=text)

    assert [line.problem for line in preview] == [
        "'0001-01-01T00:00+01:00' is not a date such as 2026-11-21 or 2026-11-21T14:05",
        "'9999-12-31T23:59-01:00' is not a date such as 2026-11-21 or 2026-11-21T14:05",
    ]
    assert status(session, parcel.claim_id) == "shipped"


def test_every_exception_is_on_the_maintainers_claim(client, session, settings, stocked):
    person, parcel = shipped_parcel(session, settings)
    exceptions.mark_lost(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        reference=parcel.reference,
        reason="gone",
    )
    sign_in_as(client, person)
    page = client.get("/claim").get_data(as_text=True)
    assert "your parcel was lost in transit" in page
    assert "A replacement is waiting for approval." in page
    assert session.exec(select(ParcelException)).one().kind == "lost"


def test_a_declined_replacement_is_the_next_step_the_maintainer_sees(
    client, session, settings, stocked
):
    # The page said "We will send a replacement" beside "We could not send a replacement".
    person, parcel = shipped_parcel(session, settings)
    lost = exceptions.mark_lost(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        reference=parcel.reference,
        reason="gone",
    )
    sign_in_as(client, person)
    waiting = next_step(client.get("/claim").get_data(as_text=True))
    exceptions.decline_replacement(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        exception_id=lost.id,
        note="It was delivered to your neighbour.",
    )

    page = client.get("/claim").get_data(as_text=True)

    assert "We will send a replacement and email you when it leaves." in waiting
    assert next_step(page) == (
        "We could not send a replacement; the reason is below. Reply to our email if you have "
        "a question."
    )
    assert "We will send a replacement" not in page
    assert "We could not send a replacement: It was delivered to your neighbour." in page


def next_step(page):
    """The text of My claim's "What happens next"."""
    section = page.split('data-testid="next-step"', 1)[1].split("</section>", 1)[0]
    return " ".join(section.split("<p>", 1)[1].split("</p>", 1)[0].split())


def delivered_parcel(session, settings, *, items=None):
    person, parcel = shipped_parcel(session, settings, items=items)
    fulfilment.record_delivery(session=session, actor=ACTOR, reference=parcel.reference)
    return person, parcel


def replace(session, settings, exception):
    return exceptions.approve_replacement(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        exception_id=exception.id,
    )


def test_the_other_original_key_can_be_reported_after_one_was_replaced(session, settings, stocked):
    # It was refused: the first parcel was "replaced by a newer parcel", and the replacement
    # holds only the other model.
    _person, first = delivered_parcel(session, settings)
    [usb_c] = exceptions.report_damaged(
        session=session, actor=ACTOR, reference=first.reference, sku=USB_C, reason="Cracked"
    )
    second = replace(session, settings, usb_c)
    with pytest.raises(ClaimLocked, match="once its newest parcel is delivered"):
        exceptions.report_damaged(
            session=session, actor=ACTOR, reference=first.reference, sku=USB_A, reason="Bent"
        )
    print_labels(session, settings, [first.claim_id])
    ship(session, settings, second.reference, tracking_number="2")
    fulfilment.record_delivery(session=session, actor=ACTOR, reference=second.reference)

    [usb_a] = exceptions.report_damaged(
        session=session, actor=ACTOR, reference=first.reference, sku=USB_A, reason="Bent plug"
    )
    with pytest.raises(ClaimLocked, match="Every TITAN-USB-C-NFC key of parcel"):
        exceptions.report_damaged(
            session=session, actor=ACTOR, reference=first.reference, sku=USB_C, reason="again"
        )
    third = replace(session, settings, usb_a)

    assert (usb_a.shipment_id, usb_a.sku) == (first.id, USB_A)
    assert third.items == {USB_A: 1} and third.address_lines == first.address_lines
    assert exceptions.keys_not_replaced(session=session, shipment=first) == {}
    assert exceptions.keys_not_replaced(session=session, shipment=second) == {USB_C: 1}
    assert figures(session) == (3, 1, 2)  # the second parcel left; the third is allocated


def test_several_damaged_keys_are_reported_together_and_replaced_in_one_parcel(
    session, settings, stocked
):
    _person, parcel = delivered_parcel(session, settings, items={USB_A: 2})
    with pytest.raises(InvalidShipping, match="has 2 TITAN-USB-A-NFC key.* between 1 and 2"):
        exceptions.report_damaged(
            session=session,
            actor=ACTOR,
            reference=parcel.reference,
            sku=USB_A,
            reason="Crushed",
            quantity=3,
        )

    both = exceptions.report_damaged(
        session=session,
        actor=ACTOR,
        reference=parcel.reference,
        sku=USB_A,
        reason="Crushed in transit",
        quantity=2,
    )

    assert [(e.kind, e.sku, e.replacement) for e in both] == [("damaged", USB_A, "requested")] * 2
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "parcel.damaged")).one()
    assert event.details == {
        "shipment": parcel.reference,
        "reason": "Crushed in transit",
        "sku": USB_A,
        "replacement": "requested",
        "quantity": 2,
        "exceptions": [e.id for e in both],
    }
    [waiting] = exceptions.open_replacements(session=session)
    assert waiting.items == {USB_A: 2}
    receive_keys(session, {USB_A: 1}, "MORE")  # one USB-A key was left
    replacement = replace(session, settings, both[1])
    assert replacement.items == {USB_A: 2}
    session.expire_all()
    assert {(e.replacement, e.replacement_shipment_id) for e in both} == {
        ("approved", replacement.id)
    }
    approvals = session.exec(
        select(AuditEvent).where(AuditEvent.action == "parcel.replacement_approved")
    ).all()
    assert sorted(a.details["exception"] for a in approvals) == sorted(e.id for e in both)
    assert figures(session) == (5, 2, 3)


def test_damaged_keys_of_both_models_wait_for_one_decision(session, settings, stocked):
    _person, parcel = delivered_parcel(session, settings)
    [usb_a] = exceptions.report_damaged(
        session=session, actor=ACTOR, reference=parcel.reference, sku=USB_A, reason="Bent"
    )
    [usb_c] = exceptions.report_damaged(
        session=session, actor=ACTOR, reference=parcel.reference, sku=USB_C, reason="Cracked"
    )

    [waiting] = exceptions.open_replacements(session=session)
    exceptions.decline_replacement(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        exception_id=usb_c.id,
        note="Cosmetic damage only: the keys work.",
    )

    assert [e.id for e, _parcel in waiting.reports] == [usb_a.id, usb_c.id]
    assert waiting.items == {USB_A: 1, USB_C: 1}
    session.expire_all()
    assert [e.replacement for e in claim_exceptions(session, parcel.claim_id)] == ["declined"] * 2
    assert mails(session) == ["About your replacement keys"]  # one decision, one email
    # A declined key may be reported again (with better evidence, say).
    assert exceptions.keys_not_replaced(session=session, shipment=parcel) == {USB_A: 1, USB_C: 1}
    assert status(session, parcel.claim_id) == "delivered" and figures(session) == (4, 0, 4)
