"""Journeys: shipping staff filter the queue, select parcels and start a label run, follow the
run page (it reloads itself) until the PDF is ready, download and read it, then ship a parcel
by scanning the reference printed on it; or ship by a carrier manifest and record deliveries
from the carrier's events, each file checked line by line before anything changes.

Every journey shares one live database with the others, so each sends its parcels to a country
no other journey uses, filters the queue by it, and asserts only on what it did itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pypdf import PdfReader
from sqlmodel import select

from accounts.models import StaffRole
from core.audit import AuditEvent
from core.db import get_database
from distribution.models import LabelRun, Shipment, StockMovement
from tests.conftest import Mailbox
from tests.e2e.conftest import LiveServer
from tests.e2e.journeys import (
    claim_of,
    current_shipment,
    mail_to,
    print_labels,
    redeemed_parcel,
    redeemed_parcels,
    sign_in_as_staff,
)
from tests.factories import USB_A, USB_C, make_staff

pytestmark = pytest.mark.e2e

USB_A_NAME = "Titan Security Key USB-A/NFC"
# A 4×6 in label is 288 × 432 PDF points.
LABEL_WIDTH, LABEL_HEIGHT = 288, 432
# Parcels enough for a run of two chunks (a chunk holds 100 pages: 50 labels and their slips).
BIG_RUN = 51


def test_staff_print_labels_and_ship_a_parcel_by_its_reference(
    live_server: LiveServer, page: Page, mailbox: Mailbox, tmp_path: Path
):
    tokyo = redeemed_parcel(
        live_server,
        username="ship-kenji",
        address={
            "country_code": "JP",
            "name": "Ship Kenji",
            "street_address": "1-1 Marunouchi",
            "city": "Chiyoda-ku",
            "country_area": "Tokyo",
            "postal_code": "100-0005",
        },
        phone="+81312345678",
        items={USB_A: 1, USB_C: 1},
    )
    bern = redeemed_parcel(
        live_server,
        username="ship-heidi",
        address={
            "country_code": "CH",
            "name": "Heidi Frei",
            "street_address": "Bundesplatz 3",
            "city": "Bern",
            "postal_code": "3011",
        },
        phone="+41313222111",
        items={USB_A: 1, USB_C: 1},
    )
    basel = redeemed_parcel(
        live_server,
        username="ship-urs",
        address={
            "country_code": "CH",
            "name": "Urs Keller",
            "street_address": "Bahnhofstrasse 10",
            "city": "Basel",
            "postal_code": "4051",
        },
        phone="+41612671111",
        items={USB_C: 2},
    )
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session, email="ship-desk@example.org", name="Sasha Desk", roles=[StaffRole.SHIPPING]
        )

    sign_in_as_staff(live_server, page, "ship-desk@example.org")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Shipping").click()
    expect(page.get_by_role("heading", name="Shipping", level=1)).to_be_visible()
    run_form = page.get_by_test_id("label-run")
    expect(run_form.get_by_label(tokyo.reference, exact=False)).to_be_visible()

    # The counts cover the whole queue; each one opens the queue filtered by it.
    counts = page.get_by_test_id("queue-counts")
    counts.get_by_role("link", name="Switzerland 2", exact=True).click()
    expect(page.get_by_test_id("queue-filter").get_by_label("Destination")).to_have_value("CH")
    expect_shown(page, 2)
    expect(run_form.get_by_role("checkbox")).to_have_count(2)
    expect(run_form.get_by_label(tokyo.reference, exact=False)).to_have_count(0)

    # Narrowed further with the filter form: only Bern's parcel holds a USB-A key.
    page.get_by_test_id("queue-filter").get_by_label("Model").select_option(label=USB_A_NAME)
    page.get_by_role("button", name="Filter").click()
    expect_shown(page, 1)
    expect(run_form.get_by_label(bern.reference, exact=False)).to_be_visible()
    expect(run_form.get_by_label(basel.reference, exact=False)).to_have_count(0)
    page.get_by_test_id("queue-filter").get_by_label("Model").select_option(label="Any model")
    page.get_by_role("button", name="Filter").click()
    expect_shown(page, 2)

    run_form.get_by_label(bern.reference, exact=False).check()
    run_form.get_by_label(basel.reference, exact=False).check()
    expect(run_form.get_by_label("Layout")).to_have_value("4x6")
    live_server.screenshot(page, "shipping")
    run_form.get_by_role("button", name="Print the selected labels").click()

    # The run page: rendering with its progress, or already done; never a blank page.
    expect(page).to_have_url(re.compile(r"/staff/shipping/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    expect(page.get_by_role("heading", name=f"Label run {run_id}", level=1)).to_be_visible()
    expect(page.locator("main")).to_contain_text(
        "2 parcel(s), 4×6 in labels, started by ship-desk@example.org"
    )
    follow_run(page, pages=4)
    expect(page.get_by_test_id("run-state")).to_contain_text(
        "4 pages. 2 parcel(s) now count as printed and wait to ship."
    )
    live_server.screenshot(page, "label-run")

    with get_database(live_server.app).transaction() as session:
        run = session.get(LabelRun, run_id)
        assert run is not None
        assert (run.status, run.printed, run.pages_done, run.pages_total) == ("done", 2, 4, 4)
        assert sorted(run.claim_ids) == sorted([bern.claim_id, basel.claim_id])
        for parcel in (bern, basel):
            assert claim_of(session, parcel).status == "label_printed"
        assert claim_of(session, tokyo).status == "redeemed"
        printed = session.exec(
            select(AuditEvent).where(
                AuditEvent.action == "labels.printed", AuditEvent.subject_id == str(run_id)
            )
        ).one()
        assert printed.actor_label == "ship-desk@example.org"
        assert sorted(printed.details["references"]) == sorted([bern.reference, basel.reference])

    with page.expect_download() as download_info:
        page.get_by_test_id("download").click()
    download = download_info.value
    assert re.fullmatch(rf"labels-{run_id}-\d{{8}}-\d{{4}}\.pdf", download.suggested_filename)
    pdf = tmp_path / download.suggested_filename
    download.save_as(pdf)
    pages = PdfReader(pdf).pages
    # Two 4×6 pages a parcel, oldest first: its label, then its packing slip.
    assert len(pages) == 4
    assert {(round(p.mediabox.width), round(p.mediabox.height)) for p in pages} == {
        (LABEL_WIDTH, LABEL_HEIGHT)
    }
    for number, parcel in enumerate((bern, basel)):
        label = pages[2 * number].extract_text()
        slip = pages[2 * number + 1].extract_text()
        assert parcel.lines[-1] == "SWITZERLAND"
        for line in parcel.lines:
            assert line in label, f"{line!r} is missing from the label of {parcel.reference}"
        assert parcel.reference in label
        assert "CUSTOMS DECLARATION CN22" in label  # Switzerland is outside the EU
        assert f"Claim {parcel.claim_id}" in slip and parcel.reference in slip

    # Back at the desk the two parcels wait to ship, and Switzerland's queue is empty.
    page.get_by_role("link", name="‹ Shipping").click()
    printed_list = page.get_by_test_id("printed-parcels")
    expect(printed_list.get_by_role("link", name=bern.reference)).to_be_visible()
    expect(printed_list.get_by_role("link", name=basel.reference)).to_be_visible()
    expect(counts.get_by_role("link", name=re.compile(r"^Switzerland "))).to_have_count(0)
    expect(
        page.get_by_test_id("label-runs")
        .get_by_role("row")
        .filter(has=page.get_by_role("link", name=f"Run {run_id}", exact=True))
    ).to_contain_text("download the PDF")

    # The scanner types into the field that has the focus; staff add carrier and number.
    ship_form = page.get_by_test_id("ship-form")
    expect(ship_form.get_by_label("Parcel reference (scan the barcode)")).to_be_focused()
    page.keyboard.type(bern.reference)
    ship_form.get_by_label("Carrier").select_option("DHL")
    ship_form.get_by_label("Tracking number").fill("JD014600006281230")
    ship_form.get_by_role("button", name="Mark shipped").click()
    expect(page.get_by_text(f"Parcel {bern.reference} shipped with DHL.")).to_be_visible()
    expect(printed_list.get_by_role("link", name=bern.reference)).to_have_count(0)
    expect(printed_list.get_by_role("link", name=basel.reference)).to_be_visible()

    mail = mail_to(mailbox, "ship-heidi@example.org", "Your security keys are on their way")
    body = mail.get_content()
    assert f"Your parcel {bern.reference} left with DHL" in body
    assert "https://www.dhl.com/global-en/home/tracking.html?tracking-id=JD014600006281230" in body
    assert mailbox.to("ship-urs@example.org", "Your security keys are on their way") == []

    with get_database(live_server.app).transaction() as session:
        assert claim_of(session, bern).status == "shipped"
        assert claim_of(session, basel).status == "label_printed"
        shipment = session.exec(select(Shipment).where(Shipment.reference == bern.reference)).one()
        assert (shipment.carrier, shipment.tracking_number) == ("DHL", "JD014600006281230")
        assert shipment.shipped_at is not None
        movements = session.exec(
            select(StockMovement).where(StockMovement.reference == bern.reference)
        ).all()
        assert {(m.kind, m.sku, m.quantity) for m in movements} == {
            ("shipped", USB_A, -1),
            ("shipped", USB_C, -1),
        }


def expect_shown(page: Page, shown: int) -> None:
    """The queue lists ``shown`` parcels, out of as many as the badge counts in all."""
    total = page.get_by_test_id("queue-count").inner_text()
    expect(page.get_by_test_id("shown-count")).to_have_text(
        f"{shown} of {total} waiting parcel(s) shown, oldest first."
    )


def follow_run(page: Page, *, pages: int) -> str:
    """Watch a run page until its PDF is ready, without touching it: while rendering it shows
    its progress and reloads itself. What the first view showed: "rendering" or "done"."""
    # A mark on the page as it is now: only a reload (a new document) can remove it. Set
    # before the snapshot, so that whatever the snapshot shows, a later reload clears it.
    page.evaluate("window.notReloaded = true")
    # One snapshot of the page as loaded, so that a reload cannot come between two checks.
    first = page.content()
    status = re.search(r'data-testid="run-state" data-status="(\w+)"', first)
    assert status, "the run page shows no state"
    if status.group(1) == "rendering":
        assert "Rendering…" in first
        assert re.search(rf"\b\d+</span> of {pages} pages done", first)
        assert f'<progress max="{pages}"' in first
        assert 'http-equiv="refresh"' in first
    else:
        assert status.group(1) == "done", f"the run {status.group(1)}"
    state = page.get_by_test_id("run-state")
    expect(
        state.get_by_role("heading", name="The PDF is ready"),
        "the run never finished (or never started)",
    ).to_be_visible(timeout=60_000)  # 102 pages on a busy 2-core machine
    expect(state).to_have_attribute("data-status", "done")
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(0)
    if status.group(1) == "rendering":
        assert page.evaluate("window.notReloaded === undefined"), "the page did not reload itself"
    return status.group(1)


def test_a_big_run_shows_its_progress_until_the_pdf_is_ready(
    live_server: LiveServer, page: Page, tmp_path: Path
):
    parcels = redeemed_parcels(
        live_server,
        prefix="bulk",
        count=BIG_RUN,
        address={
            "country_code": "CA",
            "name": "Ann Lee",
            "street_address": "111 Wellington Street",
            "city": "Ottawa",
            "country_area": "ON",
            "postal_code": "K1A 0A9",
        },
        phone="+16135550100",
    )
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session, email="bulk-desk@example.org", name="Bo Desk", roles=[StaffRole.SHIPPING]
        )

    sign_in_as_staff(live_server, page, "bulk-desk@example.org")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Shipping").click()
    page.get_by_test_id("queue-counts").get_by_role(
        "link", name=f"Canada {BIG_RUN}", exact=True
    ).click()
    expect_shown(page, BIG_RUN)
    page.get_by_role("button", name=f"Print all {BIG_RUN} shown").click()

    # More than one chunk to render: the first view is the progress, never a blank page.
    expect(page).to_have_url(re.compile(r"/staff/shipping/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    pages = 2 * BIG_RUN
    assert follow_run(page, pages=pages) == "rendering"
    expect(page.get_by_test_id("run-state")).to_contain_text(
        f"{pages} pages. {BIG_RUN} parcel(s) now count as printed and wait to ship."
    )
    with get_database(live_server.app).transaction() as session:
        run = session.get(LabelRun, run_id)
        assert run is not None
        assert (run.status, run.printed, run.pages_done) == ("done", BIG_RUN, pages)
        assert {claim_of(session, p).status for p in parcels} == {"label_printed"}

    with page.expect_download() as download_info:
        page.get_by_test_id("download").click()
    pdf = tmp_path / "big-run.pdf"
    download_info.value.save_as(pdf)
    labels = PdfReader(pdf).pages
    assert len(labels) == pages
    # The chunks are joined in order: the oldest parcel first, the newest last.
    assert parcels[0].reference in labels[0].extract_text()
    assert parcels[-1].reference in labels[-2].extract_text()


def test_staff_ship_by_manifest_and_record_deliveries_after_checking_each_line(
    live_server: LiveServer, page: Page, mailbox: Mailbox
):
    brussels = redeemed_parcel(
        live_server,
        username="manifest-lea",
        address={
            "country_code": "BE",
            "name": "Lea Peeters",
            "street_address": "Rue de la Loi 16",
            "city": "Bruxelles",
            "postal_code": "1000",
        },
        phone="+3225011111",
        items={USB_A: 1, USB_C: 1},
    )
    london = redeemed_parcel(
        live_server,
        username="manifest-tom",
        address={
            "country_code": "GB",
            "name": "Tom Baker",
            "street_address": "221B Baker Street",
            "city": "London",
            "postal_code": "NW1 6XE",
        },
        phone="+442079460000",
        items={USB_C: 2},
    )
    print_labels(live_server, brussels, london)
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session, email="manifest-desk@example.org", name="Max Desk", roles=[StaffRole.SHIPPING]
        )
    sign_in_as_staff(live_server, page, "manifest-desk@example.org")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Shipping").click()

    # The carrier's file: one good line (its carrier in any case), two with a problem each.
    page.get_by_label("Carrier manifest (CSV: reference, carrier, tracking number)").fill(
        "reference,carrier,tracking_number\n"
        f"{brussels.reference.lower()},dhl,JD014600009999\n"
        f"{london.reference},Royal Mail,RM123456785GB\n"
        "SKNOSUCHPARCEL,UPS,1Z999AA10123456784\n"
    )
    page.get_by_role("button", name="Check the manifest").click()
    expect(page.get_by_role("heading", name="Manifest preview", level=1)).to_be_visible()
    expect(page.locator("main")).to_contain_text(
        "1 of 3 line(s) can be shipped. Lines with a problem are left out; nothing has changed yet."
    )
    rows = page.get_by_test_id("manifest-lines").locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text(f"2 {brussels.reference} DHL JD014600009999 ready")
    expect(rows.nth(1)).to_contain_text(
        "'Royal Mail' is not a carrier we ship with; the carriers are DHL, UPS, FedEx."
    )
    expect(rows.nth(2)).to_contain_text("No parcel has the reference 'SKNOSUCHPARCEL'.")
    with get_database(live_server.app).transaction() as session:
        assert claim_of(session, brussels).status == "label_printed"  # a preview changes nothing

    page.get_by_role("button", name="Ship 1 parcel(s)").click()
    expect(page.get_by_role("heading", name="Manifest imported", level=1)).to_be_visible()
    expect(page.get_by_test_id("applied")).to_contain_text(
        "Shipped 1 parcel(s); their maintainers are emailed a tracking link. "
        "2 line(s) were left out"
    )
    left_out = page.get_by_test_id("manifest-lines").locator("tbody tr")
    expect(left_out).to_have_count(2)  # only the lines still to fix
    expect(left_out.nth(0)).to_contain_text(london.reference)
    body = mail_to(mailbox, "manifest-lea@example.org", "Your security keys are on their way")
    assert "tracking-id=JD014600009999" in body.get_content()
    with get_database(live_server.app).transaction() as session:
        shipped = current_shipment(session, brussels)
        assert claim_of(session, brussels).status == "shipped"
        assert (shipped.carrier, shipped.tracking_number) == ("DHL", "JD014600009999")
        assert claim_of(session, london).status == "label_printed"

    # Days later, the carrier's delivery events: one parcel arrived; the other never left.
    page.get_by_role("link", name="‹ Shipping").click()
    page.get_by_label("Delivery events (CSV: reference, delivered at)").fill(
        f"{brussels.reference},\n{london.reference},2026-11-21\n"
    )
    page.get_by_role("button", name="Check the deliveries").click()
    expect(page.get_by_role("heading", name="Delivery events preview", level=1)).to_be_visible()
    rows = page.get_by_test_id("delivery-lines").locator("tbody tr")
    expect(rows.nth(0)).to_contain_text("ready")
    expect(rows.nth(1)).to_contain_text("the parcel is label printed, not on its way")
    page.get_by_role("button", name="Record 1 delivery(ies)").click()
    expect(page.get_by_test_id("applied")).to_contain_text(
        "Recorded 1 delivery(ies). 1 line(s) were left out"
    )
    with get_database(live_server.app).transaction() as session:
        assert claim_of(session, brussels).status == "delivered"
        assert current_shipment(session, brussels).delivered_at is not None
        assert claim_of(session, london).status == "label_printed"
