"""Journeys: a programme staff member reads the reports, downloads a table and the PDF; a visitor
reads the public transparency page and its JSON.

The live database is shared with the other journeys, so the figures on the page are compared
with what the report services say at the same moment, not with fixed numbers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pypdf import PdfReader

from accounts.models import StaffRole
from core.db import get_database
from distribution.reports import services as reports
from distribution.reports import transparency
from tests.e2e.conftest import LiveServer
from tests.e2e.journeys import (
    another_browser,
    print_labels,
    redeemed_parcel,
    ship,
    sign_in_as_staff,
)
from tests.factories import USB_A, USB_C, make_staff

pytestmark = pytest.mark.e2e


def test_staff_read_the_reports_and_download_a_table_and_the_pdf(
    live_server: LiveServer, page: Page, tmp_path: Path
):
    parcel = redeemed_parcel(
        live_server,
        username="report-ines",
        address={
            "country_code": "ES",
            "name": "Inés Report",
            "street_address": "Calle Mayor 1",
            "city": "Madrid",
            "country_area": "Madrid",
            "postal_code": "28013",
        },
        phone="+34911234567",
        items={USB_A: 1, USB_C: 1},
    )
    print_labels(live_server, parcel)
    ship(live_server, parcel, carrier="DHL", tracking_number="REPORT-1")
    with get_database(live_server.app).transaction() as session:
        make_staff(session, roles=[StaffRole.PROGRAMME], email="report-pat@example.org")

    sign_in_as_staff(live_server, page, "report-pat@example.org")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Reports").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Reports")

    with get_database(live_server.app).transaction() as session:
        stock = reports.stock_report(session=session)
    on_hand = page.get_by_test_id("stock-report").locator('tr[data-figure="on_hand"] td').last
    expect(on_hand).to_have_text(f"{stock.figure('on_hand'):,}")
    expect(page.get_by_test_id("stock-check")).to_contain_text("reconciled")
    # The charts are drawn (an image that failed to load has no natural width).
    for chart in ("stock-chart", "burn-down-chart", "funnel-chart"):
        image = page.get_by_test_id(chart)
        expect(image).to_be_visible()
        assert image.evaluate("img => img.naturalWidth") > 0
    expect(page.get_by_test_id("countries").locator('tr[data-country="ES"]')).to_be_visible()
    live_server.screenshot(page, "reports")

    with page.expect_download() as table:
        page.get_by_role("link", name="Stock table as CSV").click()
    path = tmp_path / table.value.suggested_filename
    table.value.save_as(path)
    rows = {row[0]: row[1:] for row in csv.reader(path.read_text("utf-8").splitlines())}
    assert rows["On hand"][-1] == str(stock.figure("on_hand"))
    assert rows["Shipped"][-1] == str(stock.figure("shipped"))

    with page.expect_download() as document:
        page.get_by_role("link", name="Download the report as PDF").click()
    pdf = tmp_path / document.value.suggested_filename
    document.value.save_as(pdf)
    text = "\n".join(p.extract_text() for p in PdfReader(pdf).pages)
    assert "Programme report" in text and "Keys available per day" in text


def test_anyone_reads_the_transparency_page_and_its_json(live_server: LiveServer, browser):
    with another_browser(browser) as visitor:
        visitor.goto(live_server.url)
        visitor.get_by_role("navigation", name="Main").get_by_role(
            "link", name="Transparency"
        ).click()
        expect(visitor.get_by_role("heading", level=1)).to_have_text("How the programme is going")
        with get_database(live_server.app).transaction() as session:
            figures = transparency.transparency(session=session)
        headline = visitor.get_by_test_id("headline")
        expect(headline).to_contain_text(f"{figures.remaining:,}keys still available")
        live_server.screenshot(visitor, "transparency")

        data = visitor.request.get(f"{live_server.url}/transparency.json").json()
        assert data["remaining"] == figures.remaining
        assert all(
            bucket["recipients"] >= transparency.MIN_PUBLIC_BUCKET
            or bucket["country"] == "Other countries"
            for bucket in data["by_country"]
        )
        assert "@" not in str(data)
