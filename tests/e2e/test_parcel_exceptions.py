"""Journeys: when a parcel goes wrong. A parcel comes back and goes out again once the maintainer
corrects the address; a lost parcel is replaced with programme staff's approval; a misprinted
label is voided and its parcel printed again under a new reference; a key that arrived damaged is
replaced one for one.

Every journey shares one live database with the others, so each sends its parcel to a country
no other journey uses, and asserts only on what it did itself.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlmodel import select

from accounts.models import StaffRole
from core.audit import AuditEvent
from core.db import get_database
from distribution.models import ParcelException, StockMovement
from distribution.shipping import fulfilment
from tests.conftest import Mailbox
from tests.e2e.conftest import LiveServer
from tests.e2e.journeys import (
    another_browser,
    claim_of,
    current_shipment,
    field_of,
    mail_to,
    print_labels,
    redeemed_parcel,
    ship,
    sign_in_as_staff,
    sign_in_by_link,
    timeline_step,
)
from tests.factories import ACTOR, USB_A, USB_C, make_staff

pytestmark = pytest.mark.e2e

USB_A_NAME, USB_C_NAME = "Titan Security Key USB-A/NFC", "Titan Security Key USB-C/NFC"


def test_a_returned_parcel_goes_out_again_once_the_maintainer_corrects_the_address(
    live_server: LiveServer, page: Page, browser: Browser, mailbox: Mailbox
):
    parcel = redeemed_parcel(
        live_server,
        username="return-jeanne",
        address={
            "country_code": "FR",
            "name": "Jeanne Roux",
            "street_address": "10 Rue de Rivoli",
            "city": "Paris",
            "postal_code": "75001",
        },
        phone="+33142600000",
        items={USB_C: 2},
    )
    print_labels(live_server, parcel)
    ship(live_server, parcel, carrier="UPS", tracking_number="1Z999AA10123456784")
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session, email="return-desk@example.org", name="Rene Desk", roles=[StaffRole.SHIPPING]
        )

    # The carrier brings it back: staff open it by the reference on the parcel.
    sign_in_as_staff(live_server, page, "return-desk@example.org")
    open_parcel(page, parcel.reference)
    expect(page.get_by_test_id("parcel-status")).to_have_text(
        f"Claim {parcel.claim_id} is shipped."
    )
    expect(page.locator("main")).to_contain_text("UPS, 1Z999AA10123456784")
    expect(page.get_by_role("button", name="Record the delivery")).to_be_visible()
    expect(page.get_by_role("button", name="Write off as lost")).to_be_visible()
    returned = page.get_by_test_id("action-returned")
    live_server.screenshot(page, "parcel")
    returned.get_by_label("Note (optional)").fill("Addressee unknown at this address")
    returned.get_by_role("button", name="Record the return").click()

    expect(page.get_by_text("Returned to sender: the keys are back in stock")).to_be_visible()
    expect(page.get_by_test_id("parcel-status")).to_have_text(
        f"Claim {parcel.claim_id} is returned."
    )
    expect(page.get_by_text("Nothing to do for a parcel that is returned.")).to_be_visible()
    what_went_wrong = page.get_by_test_id("exceptions")
    expect(what_went_wrong).to_contain_text("Returned to sender on")
    expect(what_went_wrong).to_contain_text(
        "(return-desk@example.org): Addressee unknown at this address"
    )
    mail = mail_to(
        mailbox,
        "return-jeanne@example.org",
        "Your parcel came back to us: please check your address",
    )
    assert f"{live_server.url}/claim/{parcel.claim_id}/address" in mail.get_content()
    with get_database(live_server.app).transaction() as session:
        assert claim_of(session, parcel).status == "returned"
        back = session.exec(
            select(StockMovement).where(
                StockMovement.reference == parcel.reference, StockMovement.kind == "returned"
            )
        ).all()
        assert [(m.sku, m.quantity) for m in back] == [(USB_C, 2)]

    # The maintainer is asked to correct the address, and does.
    with another_browser(browser) as maintainer:
        open_my_claim(live_server, maintainer, "return-jeanne")
        expect(maintainer.get_by_test_id("next-step")).to_contain_text(
            "Your parcel came back to us. Check and correct your address"
        )
        expect(maintainer.get_by_test_id("exceptions")).to_contain_text(
            "your parcel came back to us."
        )
        maintainer.get_by_role("link", name="Correct the address").click()
        expect(
            maintainer.get_by_role("heading", name="Change the shipping address")
        ).to_be_visible()
        expect(maintainer.get_by_label("Street address")).to_have_value("10 Rue de Rivoli")
        maintainer.get_by_label("Street address").fill("12 Rue de Rivoli")
        maintainer.get_by_role("button", name="Save the new address").click()

        expect(maintainer.get_by_text("The new address is saved.")).to_be_visible()
        expect(maintainer.get_by_test_id("address")).to_contain_text("12 Rue de Rivoli")
        expect(maintainer.get_by_test_id("next-step")).to_contain_text(
            "We are preparing your parcel."
        )
        with get_database(live_server.app).transaction() as session:
            again = current_shipment(session, parcel)
            assert again.reference != parcel.reference
            assert again.purpose == "reship"
            assert again.items == {USB_C: 2}
            assert again.address["street_address"] == "12 Rue de Rivoli"
            assert claim_of(session, parcel).status == "redeemed"
        expect(maintainer.locator("main")).to_contain_text(again.reference)
        expect(maintainer.locator("main")).not_to_contain_text(parcel.reference)
        # The new parcel starts over: its label and shipping are still to come, without a time.
        expect(timeline_step(maintainer, "Label printed")).to_have_attribute(
            "data-state", "current"
        )
        expect(timeline_step(maintainer, "Shipped")).to_have_attribute("data-state", "upcoming")
        expect(timeline_step(maintainer, "Shipped").locator("time")).to_have_count(0)

    # Back in the queue under the new reference; the old parcel page points to it.
    page.get_by_role("link", name="‹ Shipping").click()
    page.get_by_test_id("queue-counts").get_by_role("link", name="France 1", exact=True).click()
    run_form = page.get_by_test_id("label-run")
    expect(run_form.get_by_role("checkbox")).to_have_count(1)
    expect(run_form).to_contain_text(f"{again.reference} — France, 2 keys")
    page.goto(f"{live_server.url}/staff/shipping/parcels/{parcel.reference}")
    expect(page.get_by_test_id("parcel-status")).to_contain_text(
        f"This parcel was replaced by {again.reference}."
    )


def test_a_lost_parcel_is_replaced_once_programme_staff_approve(
    live_server: LiveServer, page: Page, browser: Browser, mailbox: Mailbox
):
    parcel = redeemed_parcel(
        live_server,
        username="lost-luca",
        address={
            "country_code": "IT",
            "name": "Luca Bianchi",
            "street_address": "Via del Corso 12",
            "city": "Roma",
            "country_area": "RM",
            "postal_code": "00186",
        },
        phone="+390612345678",
        items={USB_A: 1, USB_C: 1},
    )
    print_labels(live_server, parcel)
    ship(live_server, parcel, carrier="DHL", tracking_number="JD014600003828472")
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session, email="lost-desk@example.org", name="Lee Desk", roles=[StaffRole.SHIPPING]
        )
        make_staff(
            session,
            email="lost-programme@example.org",
            name="Pat Programme",
            roles=[StaffRole.PROGRAMME],
        )

    # Shipping staff write the parcel off, with the carrier's answer.
    sign_in_as_staff(live_server, page, "lost-desk@example.org")
    open_parcel(page, parcel.reference)
    lost = page.get_by_test_id("action-lost")
    lost.get_by_label("Reason").fill("DHL confirmed the parcel is lost (case 4711)")
    lost.get_by_role("button", name="Write off as lost").click()
    expect(
        page.get_by_text("Written off as lost; a replacement waits for programme staff.")
    ).to_be_visible()
    expect(page.get_by_test_id("parcel-status")).to_have_text(f"Claim {parcel.claim_id} is lost.")
    expect(page.get_by_test_id("exceptions")).to_contain_text(
        "DHL confirmed the parcel is lost (case 4711) — replacement requested"
    )
    mail_to(mailbox, "lost-luca@example.org", "Your parcel is lost: we are arranging a replacement")

    # Programme staff, in a browser of their own, approve the replacement.
    with another_browser(browser) as programme:
        sign_in_as_staff(live_server, programme, "lost-programme@example.org")
        programme.get_by_role("navigation", name="Main").get_by_role(
            "link", name="Replacements"
        ).click()
        expect(programme.get_by_role("heading", name="Replacements", level=1)).to_be_visible()
        card = programme.get_by_test_id("replacement").filter(has_text=parcel.reference)
        expect(card.get_by_role("heading")).to_have_text(f"Lost parcel {parcel.reference}")
        expect(card).to_contain_text("by lost-desk@example.org: DHL confirmed the parcel is lost")
        expect(card).to_contain_text(f"Replacement: {USB_A_NAME} × 1, {USB_C_NAME} × 1, to Italy.")
        card.get_by_test_id("approve").get_by_label("Note (optional)").fill(
            "Carrier confirmed the loss."
        )
        live_server.screenshot(programme, "replacements")
        card.get_by_role("button", name="Approve the replacement").click()

        flash = programme.get_by_text(re.compile(r"Replacement \S+ is in the shipping queue\."))
        expect(flash).to_be_visible()
        expect(card).to_have_count(0)
        with get_database(live_server.app).transaction() as session:
            replacement = current_shipment(session, parcel)
        expect(flash).to_have_text(f"Replacement {replacement.reference} is in the shipping queue.")

    with get_database(live_server.app).transaction() as session:
        exception = session.exec(
            select(ParcelException).where(ParcelException.claim_id == parcel.claim_id)
        ).one()
        assert (exception.kind, exception.replacement) == ("lost", "approved")
        assert exception.decided_by == "lost-programme@example.org"
        assert exception.decision_note == "Carrier confirmed the loss."
        assert exception.replacement_shipment_id == replacement.id
        assert replacement.reference != parcel.reference
        assert replacement.purpose == "replacement"
        assert replacement.items == {USB_A: 1, USB_C: 1}
        assert replacement.address_lines[-1] == "ITALY"
        assert claim_of(session, parcel).status == "redeemed"
    approved = mail_to(mailbox, "lost-luca@example.org", "Your replacement keys are approved")
    assert replacement.reference in approved.get_content()

    # The replacement waits for its label like any parcel.
    page.get_by_role("link", name="‹ Shipping").click()
    page.get_by_test_id("queue-counts").get_by_role("link", name="Italy 1", exact=True).click()
    run_form = page.get_by_test_id("label-run")
    expect(run_form.get_by_role("checkbox")).to_have_count(1)
    expect(run_form.get_by_label(replacement.reference, exact=False)).to_be_visible()

    # The maintainer reads what happened.
    with another_browser(browser) as maintainer:
        open_my_claim(live_server, maintainer, "lost-luca")
        expect(maintainer.get_by_test_id("exceptions")).to_contain_text(
            "your parcel was lost in transit. A replacement was approved on"
        )
        expect(maintainer.locator("main")).to_contain_text(replacement.reference)
        expect(timeline_step(maintainer, "Label printed")).to_have_attribute(
            "data-state", "current"
        )
        expect(timeline_step(maintainer, "Shipped").locator("time")).to_have_count(0)


def test_a_voided_label_sends_the_parcel_back_to_the_queue_under_a_new_reference(
    live_server: LiveServer, page: Page
):
    parcel = redeemed_parcel(
        live_server,
        username="void-anna",
        address={
            "country_code": "AT",
            "name": "Anna Huber",
            "street_address": "Stephansplatz 1",
            "city": "Wien",
            "postal_code": "1010",
        },
        phone="+4315153552",
        items={USB_C: 1},
    )
    print_labels(live_server, parcel)
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session, email="void-desk@example.org", name="Val Desk", roles=[StaffRole.SHIPPING]
        )

    sign_in_as_staff(live_server, page, "void-desk@example.org")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Shipping").click()
    page.get_by_test_id("printed-parcels").get_by_role("link", name=parcel.reference).click()
    expect(page.get_by_role("heading", name=f"Parcel {parcel.reference}")).to_be_visible()
    expect(page.get_by_test_id("parcel-status")).to_have_text(
        f"Claim {parcel.claim_id} is label printed."
    )

    # A void needs a reason: said beside the field, and nothing changes.
    void = page.get_by_test_id("action-void")
    void.get_by_role("button", name="Void the label").click()
    expect(field_of(void, "Reason")).to_contain_text("Say why, in a few words.")
    expect(void.get_by_label("Reason")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("parcel-status")).to_have_text(
        f"Claim {parcel.claim_id} is label printed."
    )

    void.get_by_label("Reason").fill("Label torn in the printer")
    void.get_by_role("button", name="Void the label").click()
    flash = page.get_by_text(re.compile(r"Label voided; the parcel is back in the queue as \S+\."))
    expect(flash).to_be_visible()
    with get_database(live_server.app).transaction() as session:
        shipment = current_shipment(session, parcel)
        assert shipment.reference != parcel.reference
        assert claim_of(session, parcel).status == "redeemed"
        voided = session.exec(
            select(AuditEvent).where(
                AuditEvent.action == "shipment.label_voided",
                AuditEvent.subject_id == str(parcel.claim_id),
            )
        ).one()
        assert voided.actor_label == "void-desk@example.org"
        assert voided.details == {
            "before": parcel.reference,
            "after": shipment.reference,
            "reason": "Label torn in the printer",
        }
    expect(flash).to_have_text(
        f"Label voided; the parcel is back in the queue as {shipment.reference}."
    )
    expect(page.get_by_role("heading", name=f"Parcel {shipment.reference}")).to_be_visible()
    expect(page.get_by_test_id("parcel-status")).to_have_text(
        f"Claim {parcel.claim_id} is redeemed."
    )

    # In the queue again under the new reference; the old label scans as voided, naming it.
    page.get_by_role("link", name="‹ Shipping").click()
    page.get_by_test_id("queue-counts").get_by_role("link", name="Austria 1", exact=True).click()
    run_form = page.get_by_test_id("label-run")
    expect(run_form.get_by_role("checkbox")).to_have_count(1)
    expect(run_form.get_by_label(shipment.reference, exact=False)).to_be_visible()
    expect(page.get_by_test_id("printed-parcels").get_by_text(parcel.reference)).to_have_count(0)
    finder = page.get_by_test_id("find-parcel")
    finder.get_by_label("Find a parcel by its reference").fill(parcel.reference)
    finder.get_by_role("button", name="Open the parcel").click()
    expect(field_of(finder, "Find a parcel by its reference")).to_contain_text(
        f"The label {parcel.reference} was voided: the parcel's reference is now "
        f"{shipment.reference}."
    )


def test_a_damaged_key_is_replaced_one_for_one_once_programme_staff_approve(
    live_server: LiveServer, page: Page, browser: Browser, mailbox: Mailbox
):
    parcel = redeemed_parcel(
        live_server,
        username="damaged-dora",
        address={
            "country_code": "US",
            "name": "Dora Reed",
            "street_address": "1600 Pennsylvania Ave NW",
            "city": "Washington",
            "country_area": "DC",
            "postal_code": "20500",
        },
        phone="+12025550100",
        items={USB_A: 1, USB_C: 1},
    )
    print_labels(live_server, parcel)
    ship(live_server, parcel, carrier="FedEx", tracking_number="794698462510")
    with get_database(live_server.app).transaction() as session:
        fulfilment.record_delivery(session=session, actor=ACTOR, reference=parcel.reference)
        make_staff(
            session, email="damaged-desk@example.org", name="Dee Desk", roles=[StaffRole.SHIPPING]
        )
        make_staff(
            session,
            email="damaged-programme@example.org",
            name="Pia Programme",
            roles=[StaffRole.PROGRAMME],
        )

    # The maintainer wrote that the USB-C key's plug is bent: the desk reports that one key.
    sign_in_as_staff(live_server, page, "damaged-desk@example.org")
    open_parcel(page, parcel.reference)
    expect(page.get_by_test_id("parcel-status")).to_have_text(
        f"Claim {parcel.claim_id} is delivered."
    )
    damaged = page.get_by_test_id("action-damaged")
    damaged.get_by_label("Damaged key").select_option(label=USB_C_NAME)
    damaged.get_by_label("How many keys of that model").fill("1")
    damaged.get_by_label("Reason").fill("The USB-C plug arrived bent")
    damaged.get_by_role("button", name="Request replacement keys").click()
    expect(
        page.get_by_text("1 damaged key(s) recorded; the replacement waits for programme staff.")
    ).to_be_visible()
    expect(page.get_by_test_id("exceptions")).to_contain_text(f"Damaged key ({USB_C_NAME})")
    expect(page.get_by_test_id("exceptions")).to_contain_text(
        "The USB-C plug arrived bent — replacement requested"
    )
    # Only the key not reported yet can still be reported.
    expect(page.get_by_test_id("action-damaged")).to_contain_text(
        f"Keys of this parcel not reported damaged yet: {USB_A_NAME} × 1."
    )

    # Programme staff approve a replacement of that one key.
    with another_browser(browser) as programme:
        sign_in_as_staff(live_server, programme, "damaged-programme@example.org")
        programme.get_by_role("navigation", name="Main").get_by_role(
            "link", name="Replacements"
        ).click()
        card = programme.get_by_test_id("replacement").filter(has_text=parcel.reference)
        expect(card.get_by_role("heading")).to_have_text(f"Damaged key {parcel.reference}")
        expect(card).to_contain_text(f"Replacement: {USB_C_NAME} × 1, to United States.")
        card.get_by_role("button", name="Approve the replacement").click()
        expect(
            programme.get_by_text(re.compile(r"Replacement \S+ is in the shipping queue\."))
        ).to_be_visible()

    with get_database(live_server.app).transaction() as session:
        exception = session.exec(
            select(ParcelException).where(ParcelException.claim_id == parcel.claim_id)
        ).one()
        assert (exception.kind, exception.sku, exception.replacement) == (
            "damaged",
            USB_C,
            "approved",
        )
        assert exception.decided_by == "damaged-programme@example.org"
        replacement = current_shipment(session, parcel)
        assert replacement.reference != parcel.reference
        assert (replacement.purpose, replacement.items) == ("replacement", {USB_C: 1})
    mail_to(mailbox, "damaged-dora@example.org", "Your replacement keys are approved")

    # The replacement waits for its label like any parcel.
    page.get_by_role("link", name="‹ Shipping").click()
    page.get_by_test_id("queue-counts").get_by_role(
        "link", name="United States 1", exact=True
    ).click()
    run_form = page.get_by_test_id("label-run")
    expect(run_form.get_by_label(replacement.reference, exact=False)).to_be_visible()

    # The maintainer reads what happened.
    with another_browser(browser) as maintainer:
        open_my_claim(live_server, maintainer, "damaged-dora")
        expect(maintainer.get_by_test_id("exceptions")).to_contain_text(
            f"a damaged key was reported ({USB_C_NAME}). A replacement was approved on"
        )


def open_parcel(page: Page, reference: str) -> None:
    """From the shipping desk, open a parcel by the reference on it (typed or scanned)."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Shipping").click()
    finder = page.get_by_test_id("find-parcel")
    finder.get_by_label("Find a parcel by its reference").fill(reference)
    finder.get_by_role("button", name="Open the parcel").click()
    expect(page.get_by_role("heading", name=f"Parcel {reference}", level=1)).to_be_visible()


def open_my_claim(live_server: LiveServer, page: Page, username: str) -> None:
    """Sign the maintainer in by an emailed link and open My claim."""
    sign_in_by_link(live_server, page, username)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="My claim").click()
