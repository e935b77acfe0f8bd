"""Journeys: a maintainer gets a claim code and redeems it with a Japanese or a British address
(correcting a mistake on the way, then changing the address); programme staff receive stock.

Every journey shares one live database with the others, so each sets up its own maintainer,
critical list and stock batches, and asserts only on what it did itself.
"""

from __future__ import annotations

import re
import time
from email.message import EmailMessage

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import select

from accounts.models import StaffRole
from accounts.services import find_maintainer_by_username
from core.db import get_database
from distribution.models import Claim, ClaimItem, Shipment
from tests.e2e.conftest import LiveServer
from tests.e2e.journeys import set_up_maintainer, sign_in_as_staff, sign_in_by_link
from tests.factories import make_staff

pytestmark = pytest.mark.e2e

USB_A, USB_C = "TITAN-USB-A-NFC", "TITAN-USB-C-NFC"
USB_A_NAME, USB_C_NAME = "Titan Security Key USB-A/NFC", "Titan Security Key USB-C/NFC"
CODE = re.compile(r"[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3}-[0-9A-Z]")


def set_up_claimant(live_server: LiveServer, *, username: str, country: str) -> None:
    """An eligible maintainer (their project ranked 5th) and 4 keys of each model for them."""
    set_up_maintainer(
        live_server,
        username=username,
        country=country,
        project=f"{username}-core",
        rank=5,
        stock={USB_A: 4, USB_C: 4},
    )


def mail_to(live_server: LiveServer, address: str, subject: str) -> EmailMessage:
    """The one mail to ``address`` with ``subject``, waiting a moment for it to arrive."""
    deadline = time.monotonic() + 10
    while True:
        found = [m for m in live_server.mailbox.to(address) if m["Subject"] == subject]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(found) == 1, f"expected one mail {subject!r} to {address}, got {len(found)}"
    return found[0]


def get_a_code(live_server: LiveServer, page: Page, username: str) -> str:
    """From My claim, ask for a claim code; the code shown (and mailed)."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name="My claim").click()
    expect(page.get_by_role("heading", name="My claim", level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Get your claim code")).to_be_visible()
    expect(page.get_by_text("A claim code reserves 2 keys for you for 30 days")).to_be_visible()
    page.get_by_role("button", name="Get my claim code").click()

    expect(page.get_by_role("heading", name="Your claim code", level=1)).to_be_visible()
    code = page.get_by_test_id("claim-code").inner_text().strip()
    assert CODE.fullmatch(code), code
    expect(page.get_by_text("We show this code only once, here.")).to_be_visible()
    mail = mail_to(live_server, f"{username}@example.org", "Your claim code for free security keys")
    assert code in mail.get_content()
    return code


def timeline_step(page: Page, label: str):
    return page.get_by_test_id("timeline").get_by_role("listitem").filter(has_text=label)


def field_of(page: Page, label: str):
    """The block of one form field: label, hint, errors and input."""
    return page.locator(".field").filter(has=page.get_by_label(label, exact=True))


def test_a_maintainer_in_japan_gets_a_code_and_redeems_it(live_server: LiveServer, page: Page):
    set_up_claimant(live_server, username="claim-kenji", country="JP")
    sign_in_by_link(live_server, page, "claim-kenji")

    code = get_a_code(live_server, page, "claim-kenji")
    live_server.screenshot(page, "claim-code")

    page.get_by_role("link", name="Redeem it now").click()
    expect(page.get_by_role("heading", name="Redeem your claim code")).to_be_visible()
    expect(page.get_by_label("Claim code")).to_have_value(code)
    # The profile's country chooses the address format: Japan's, with its prefectures.
    expect(page.get_by_label("Country the keys go to")).to_have_value("JP")
    expect(page.get_by_label("Prefecture")).to_be_visible()
    expect(field_of(page, USB_A_NAME)).to_contain_text("available")

    page.get_by_label(USB_A_NAME).fill("1")
    page.get_by_label(USB_C_NAME).fill("1")
    page.get_by_label("Name on the label, in Latin letters").fill("Kenji Tanaka")
    page.get_by_label("Name in your own script (optional)").fill("田中健二")
    page.get_by_label("Street address").fill("1-1 Marunouchi")
    page.get_by_label("City or ward").fill("Chiyoda-ku")
    page.get_by_label("Prefecture").select_option(label="Tokyo")
    page.get_by_label("Postal code").fill("1000005")
    page.get_by_label("Phone number, for the carrier").fill("03-1234-5678")
    live_server.screenshot(page, "redeem-japan")
    page.get_by_role("button", name="Confirm and send my keys").click()

    expect(page.get_by_text("Thank you: your keys will be shipped to Japan.")).to_be_visible()
    expect(page.get_by_role("heading", name="My claim", level=1)).to_be_visible()
    expect(timeline_step(page, "Code issued")).to_have_attribute("data-state", "done")
    # The address was received (it has a time); the parcel is not on its way yet.
    received = timeline_step(page, "Address received")
    expect(received).to_have_attribute("data-state", "done")
    expect(timeline_step(page, "Label printed")).to_have_attribute("data-state", "current")
    expect(received.locator("time")).to_contain_text("UTC")
    expect(timeline_step(page, "Shipped")).to_have_attribute("data-state", "upcoming")
    expect(timeline_step(page, "Shipped").locator("time")).to_have_count(0)

    address = page.get_by_test_id("address")
    expect(address).to_contain_text("Kenji Tanaka")
    expect(address).to_contain_text("1-1 Marunouchi")
    expect(address).to_contain_text("Chiyoda-ku, TOKYO 100-0005")
    expect(address).to_contain_text("JAPAN")
    expect(page.get_by_test_id("items")).to_contain_text(f"{USB_A_NAME} × 1")
    expect(page.get_by_test_id("items")).to_contain_text(f"{USB_C_NAME} × 1")
    expect(page.get_by_text("田中健二")).to_be_visible()
    expect(page.get_by_text("+81312345678")).to_be_visible()
    expect(page.get_by_test_id("next-step")).to_contain_text("You can still change the address")
    expect(page.get_by_role("button", name="Cancel my claim")).to_be_visible()
    live_server.screenshot(page, "my-claim")

    mail = mail_to(live_server, "claim-kenji@example.org", "We received your shipping address")
    body = mail.get_content()
    assert "Chiyoda-ku, TOKYO 100-0005" in body and "JAPAN" in body

    with get_database(live_server.app).transaction() as session:
        maintainer = find_maintainer_by_username(session=session, username="claim-kenji")
        assert maintainer is not None
        claim = session.exec(select(Claim).where(Claim.maintainer_id == maintainer.id)).one()
        assert (claim.status, claim.keys_reserved) == ("redeemed", 0)
        items = session.exec(select(ClaimItem).where(ClaimItem.claim_id == claim.id)).all()
        assert {i.sku: i.quantity for i in items} == {USB_A: 1, USB_C: 1}
        shipment = session.exec(select(Shipment).where(Shipment.claim_id == claim.id)).one()
        assert shipment.country == "JP"
        assert shipment.address["postal_code"] == "100-0005"
        assert shipment.address["city"] == "Chiyoda-ku"
        assert shipment.recipient_name_local == "田中健二"


def test_a_maintainer_in_the_uk_fixes_a_missing_street_then_changes_the_address(
    live_server: LiveServer, page: Page
):
    set_up_claimant(live_server, username="claim-noor", country="GB")
    sign_in_by_link(live_server, page, "claim-noor")
    code = get_a_code(live_server, page, "claim-noor")
    page.get_by_role("link", name="Redeem it now").click()

    # The British format: a post town and a postcode, no state or prefecture.
    expect(page.get_by_label("Country the keys go to")).to_have_value("GB")
    expect(page.get_by_label("Post town")).to_be_visible()
    expect(page.get_by_label("Prefecture")).to_have_count(0)
    page.get_by_label(USB_C_NAME).fill("2")
    page.get_by_label("Name on the label, in Latin letters").fill("Noor Khan")
    page.get_by_label("Post town").fill("London")
    page.get_by_label("Postcode").fill("sw1a2aa")
    page.get_by_label("Phone number, for the carrier").fill("020 7925 0918")
    page.get_by_role("button", name="Confirm and send my keys").click()

    # The street is missing: said beside the field and named at the top; nothing is lost.
    street = field_of(page, "Street address")
    expect(street).to_contain_text("Enter the street address.")
    expect(page.get_by_label("Street address")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("error-summary").get_by_role("link")).to_have_text("Street address")
    expect(page.get_by_label("Postcode")).to_have_value("sw1a2aa")
    expect(page.get_by_label(USB_C_NAME)).to_have_value("2")
    expect(page.get_by_label("Claim code")).to_have_value(code)
    live_server.screenshot(page, "redeem-uk-error")

    page.get_by_label("Street address").fill("10 Downing Street")
    page.get_by_role("button", name="Confirm and send my keys").click()
    expect(
        page.get_by_text("Thank you: your keys will be shipped to United Kingdom.")
    ).to_be_visible()
    address = page.get_by_test_id("address")
    expect(address).to_contain_text("10 Downing Street")
    expect(address).to_contain_text("LONDON")
    expect(address).to_contain_text("SW1A 2AA")
    expect(address).to_contain_text("UNITED KINGDOM")
    expect(page.get_by_test_id("items")).to_have_text(f"{USB_C_NAME} × 2")

    # Until the label is printed the address can change; the country switch keeps the form.
    page.get_by_role("link", name="Change the address").click()
    expect(page.get_by_role("heading", name="Change the shipping address")).to_be_visible()
    expect(page.get_by_label("Street address")).to_have_value("10 Downing Street")
    page.get_by_label("Country the keys go to").select_option(label="Japan")
    page.get_by_role("button", name="Change country").click()
    expect(page.get_by_label("Prefecture")).to_be_visible()
    page.get_by_label("Country the keys go to").select_option(label="United Kingdom")
    page.get_by_role("button", name="Change country").click()
    expect(page.get_by_label("Post town")).to_be_visible()
    expect(page.get_by_label("Postcode")).to_have_value("SW1A 2AA")
    page.get_by_label("Street address").fill("11 Downing Street")
    page.get_by_role("button", name="Save the new address").click()
    expect(page.get_by_text("The new address is saved.")).to_be_visible()
    expect(page.get_by_test_id("address")).to_contain_text("11 Downing Street")
    expect(page.get_by_test_id("address")).not_to_contain_text("10 Downing Street")


def test_programme_staff_receive_a_batch_and_the_figures_reconcile(
    live_server: LiveServer, page: Page
):
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session,
            email="claim-programme@example.org",
            name="Casey Stock",
            roles=[StaffRole.PROGRAMME],
        )

    sign_in_as_staff(live_server, page, "claim-programme@example.org")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Stock").click()
    expect(page.get_by_role("heading", name="Stock", level=1)).to_be_visible()

    def on_hand(sku: str) -> int:
        cell = page.locator(f'tr[data-sku="{sku}"]').get_by_role("cell").first
        return int(cell.inner_text().replace(",", ""))

    before = on_hand(USB_A)
    receive = page.locator("section").filter(
        has=page.get_by_role("heading", name="Receive a batch")
    )
    receive.get_by_label("Model").select_option(label=USB_A_NAME)
    receive.get_by_label("Keys in the batch").fill("12")
    receive.get_by_label("Delivery note or batch reference").fill("DN-E2E-CLAIM-0001")
    receive.get_by_role("button", name="Receive the batch").click()

    expect(page.get_by_text(f"Received 12 × {USB_A}.")).to_be_visible()
    assert on_hand(USB_A) == before + 12
    newest = page.get_by_test_id("movements").locator("tbody tr").first
    expect(newest).to_contain_text("DN-E2E-CLAIM-0001")
    expect(newest).to_contain_text("received")
    expect(newest).to_contain_text("+12")
    expect(newest).to_contain_text("claim-programme@example.org")
    total = page.locator('tr[data-sku="total"]').get_by_role("cell").first.inner_text()
    expect(page.get_by_test_id("reconciliation")).to_have_text(
        re.compile(rf"The figures reconcile with the ledger \({re.escape(total)} keys\)\.")
    )
    live_server.screenshot(page, "stock")

    # A correction needs a reason; without one nothing changes.
    adjust = page.locator("section").filter(
        has=page.get_by_role("heading", name="Correct the count")
    )
    adjust.get_by_label("Model").select_option(label=USB_A_NAME)
    adjust.get_by_label("Change (negative to remove keys)").fill("-2")
    adjust.get_by_role("button", name="Record the correction").click()
    expect(field_of(page, "Reason")).to_contain_text("Say why the count changes.")
    assert on_hand(USB_A) == before + 12
