"""Journey: shipping staff select waiting parcels, download their labels as a PDF, and mark one
shipped by scanning (typing) the reference printed on it."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from pypdf import PdfReader

from accounts.models import StaffRole
from accounts.services import actor_for, find_maintainer_by_username
from db import get_database
from distribution import claims
from distribution.addresses import validate_address
from mail import OutboxMailer
from tests.e2e.conftest import LiveServer
from tests.e2e.journeys import set_up_maintainer
from tests.factories import STAFF_PASSWORD, USB_A, USB_C, make_staff

pytestmark = pytest.mark.e2e

TOKYO = {
    "country_code": "JP",
    "name": "Ship Kenji",
    "street_address": "1-1 Marunouchi",
    "city": "Chiyoda-ku",
    "country_area": "Tokyo",
    "postal_code": "100-0005",
}


def redeemed_parcel(live_server: LiveServer, username: str) -> str:
    """A maintainer in Japan whose claim waits for a label; the parcel's reference."""
    set_up_maintainer(
        live_server,
        username=username,
        country="JP",
        project=f"{username}-core",
        rank=5,
        stock={USB_A: 2, USB_C: 2},
    )
    settings = live_server.app.extensions["keys_settings"]
    with get_database(live_server.app).transaction() as session:
        person = find_maintainer_by_username(session=session, username=username)
        assert person is not None
        issued = claims.issue_claim_code(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=actor_for(person),
            maintainer=person,
        )
        assert isinstance(issued, claims.IssuedCode)
        shipment = claims.redeem_claim(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=actor_for(person),
            maintainer=person,
            code=issued.code,
            items={USB_A: 1, USB_C: 1},
            recipient=claims.Recipient(
                validate_address(TOKYO, served=settings.countries),
                "+81312345678",
                "Ship Kenji",
                "田中健二",
            ),
            idempotency_key=f"e2e-{username}",
        )
        return shipment.reference


def test_staff_print_labels_and_ship_a_parcel_by_its_reference(
    live_server: LiveServer, page: Page, tmp_path
):
    reference = redeemed_parcel(live_server, "ship-kenji")
    with get_database(live_server.app).transaction() as session:
        make_staff(session, email="ship-desk@example.org", roles=[StaffRole.SHIPPING])

    page.goto(f"{live_server.url}/staff/sign-in")
    page.get_by_label("Email address").fill("ship-desk@example.org")
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Shipping").click()
    expect(page.get_by_role("heading", name="Shipping", level=1)).to_be_visible()

    page.get_by_label(reference, exact=False).check()
    live_server.screenshot(page, "shipping")
    with page.expect_download() as download:
        page.get_by_role("button", name="Print labels (PDF)").click()
    pdf = tmp_path / "labels.pdf"
    download.value.save_as(pdf)
    pages = PdfReader(pdf).pages
    assert len(pages) == 2  # the label and its packing slip
    assert reference in pages[0].extract_text() and "JAPAN" in pages[0].extract_text()

    page.goto(f"{live_server.url}/staff/shipping")
    page.get_by_label("Parcel reference (scan the barcode)").fill(reference.lower())
    page.get_by_label("Carrier", exact=True).select_option("DHL")
    page.get_by_label("Tracking number", exact=True).fill("JD014600006281230")
    page.get_by_role("button", name="Mark shipped").click()
    expect(page.get_by_text(f"Parcel {reference} shipped with DHL.")).to_be_visible()
    expect(page.get_by_text(reference)).to_have_count(1)  # only the message: no longer waiting
