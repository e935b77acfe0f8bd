"""The reports as staff and the public get them: the page, its charts, CSV, PDF and JSON."""

from __future__ import annotations

import csv
import io
import re

import pytest
from pypdf import PdfReader

from accounts.models import StaffRole
from adapters import charts
from tests.factories import (
    USB_A,
    USB_C,
    make_staff,
    receive_keys,
    redeem_parcel,
    shipped_parcel,
    sign_in_as,
    stock_famous_project,
)


@pytest.fixture
def parcels(session, settings):
    """Six keys of each model; one parcel shipped, one waiting for its label."""
    stock_famous_project(session, {USB_A: 6, USB_C: 6})
    shipped = shipped_parcel(session, settings)[1]
    waiting = redeem_parcel(session, settings)[1]
    return shipped, waiting


@pytest.fixture
def viewer(client, session):
    sign_in_as(client, make_staff(session, roles=[StaffRole.VIEWER]))


def charts_on(page: str) -> list[str]:
    return [
        charts.svg_of(uri) for uri in re.findall(r'src="(data:image/svg\+xml;base64,[^"]+)"', page)
    ]


def test_the_report_page_shows_the_figures_and_charts_readable_without_colour(
    client, parcels, viewer
):
    page = client.get("/staff/reports").get_data(as_text=True)

    assert "reconciled" in page
    assert re.search(
        r'data-figure="shipped">\s*<th scope="row">Shipped</th>\s*'
        r'<td class="num">1</td>\s*<td class="num">1</td>\s*<td class="num">2</td>',
        page,
    )
    svgs = charts_on(page)
    assert len(svgs) == 3
    stock_chart, burn_down, funnel = svgs
    # Values written next to the bars, each bar with its own hatch pattern, text kept as text.
    assert re.search(r">\s*8\s*</text>", stock_chart)  # the 8 available keys, written out
    assert stock_chart.count("<pattern") >= 5
    assert "Keys available per day" in burn_down and "8 available today" in burn_down
    assert "Codes issued" in funnel and "(100% of the step before)" in funnel
    # The alt text says in words what the chart shows.
    assert 'alt="Keys available per day: 8 today;' in page


def test_each_table_downloads_as_csv(client, parcels, viewer):
    response = client.get("/staff/reports/stock.csv")
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["figure", USB_A, USB_C, "total"]
    by_figure = {row[0]: row[1:] for row in rows[1:]}
    assert by_figure["On hand"] == ["5", "5", "10"]
    assert by_figure["Reserved by unredeemed codes"] == ["", "", "0"]

    for name, header in [
        ("funnel", "step"),
        ("countries", "country_code"),
        ("times", "span"),
        ("burn-down", "day"),
    ]:
        table = list(
            csv.reader(io.StringIO(client.get(f"/staff/reports/{name}.csv").get_data(as_text=True)))
        )
        assert table[0][0] == header and len(table) > 1
    countries = list(
        csv.reader(io.StringIO(client.get("/staff/reports/countries.csv").get_data(as_text=True)))
    )
    assert countries[1][:5] == ["DE", "Germany", "2", "2", "1"]

    missing = client.get("/staff/reports/secrets.csv")
    assert missing.status_code == 404 and "There is no table" in missing.get_data(as_text=True)


def test_the_whole_report_downloads_as_pdf(client, parcels, viewer):
    response = client.get("/staff/reports.pdf")
    assert response.headers["Content-Type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(response.data))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "Programme report" in text and "Figures as of" in text
    assert "Available to promise" in text and "Eligible maintainers" in text
    # The charts are in it, with their words.
    assert "Keys available per day" in text and "Where the keys are" in text
    assert "reconciled" in text.lower()


def test_the_transparency_page_and_json_are_public_and_hold_no_person(client, parcels):
    page = client.get("/transparency")
    assert page.status_code == 200
    assert "keys shipped" in page.get_data(as_text=True)
    data = client.get("/transparency.json").get_json()
    assert (data["shipped"], data["remaining"], data["keys_total"]) == (2, 8, 12)
    assert data["by_model"] == [
        {"model": "Titan Security Key USB-A/NFC", "keys_shipped": 1, "keys_activated": 0},
        {"model": "Titan Security Key USB-C/NFC", "keys_shipped": 1, "keys_activated": 0},
    ]
    text = page.get_data(as_text=True) + str(data)
    shipped, waiting = parcels
    for private in (
        shipped.recipient_name,
        shipped.phone,
        *shipped.address_lines,
        waiting.reference,
    ):
        assert private not in text
    assert "@example.org" not in text


def test_the_public_figures_are_computed_at_most_every_ten_seconds(client, session, parcels):
    first = client.get("/transparency.json").get_json()
    receive_keys(session, {USB_A: 5}, reference="LATER")
    again = client.get("/transparency.json").get_json()
    # The same figures, with the time they were taken: a crowd costs no extra queries.
    assert again == first
    assert (first["remaining"], first["as_of"]) == (8, again["as_of"])
