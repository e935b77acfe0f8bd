"""A maintainer's personal data on the web: the download, erasure on request, and how pages show
a parcel whose address was erased."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlmodel import select

from accounts.models import Maintainer, StaffRole
from core.audit import AuditEvent
from core.db import utcnow
from distribution.models import Claim, LabelRun, Shipment
from distribution.privacy import services as personal_data
from tests.factories import (
    ACTOR,
    USB_A,
    USB_C,
    csrf_token,
    make_maintainer,
    make_staff,
    print_labels,
    redeem_parcel,
    ship,
    sign_in_as,
    stock_famous_project,
)


def text(response):
    return response.get_data(as_text=True)


@pytest.fixture
def parcel(session, settings):
    """Ada's parcel, printed and on its way to Berlin."""
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    _person, shipment = redeem_parcel(session, settings)
    print_labels(session, settings, [shipment.claim_id])
    return ship(session, settings, shipment.reference)


def owner(session, parcel):
    return session.get(Maintainer, session.get(Claim, parcel.claim_id).maintainer_id)


def erase(client, **form):
    token = csrf_token(client, "/account/data")
    return client.post("/account/data/erase", data={"csrf_token": token, **form})


def deliver(client, session, parcel):
    staff = make_staff(session, roles=[StaffRole.SHIPPING])
    sign_in_as(client, staff)
    token = csrf_token(client, f"/staff/shipping/parcels/{parcel.reference}")
    done = client.post(
        f"/staff/shipping/parcels/{parcel.reference}/deliver", data={"csrf_token": token}
    )
    assert done.status_code == 302
    session.expire_all()  # the test's session saw the parcel before the app moved it


def test_the_account_page_leads_to_the_data_page(client, session, parcel):
    sign_in_as(client, owner(session, parcel))
    assert "/account/data" in text(client.get("/account"))
    page = text(client.get("/account/data"))
    assert "30 days after you register your keys" in page
    assert "Download my data" in page and "Erase my personal data" in page


def test_the_download_is_a_json_file_of_the_maintainers_own_data(client, session, parcel):
    person = owner(session, parcel)
    stranger = make_maintainer(session)
    sign_in_as(client, person)

    response = client.get("/account/data/download")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    document = json.loads(response.get_data())
    assert document["profile"]["username"] == person.username
    [sent] = document["claims"][0]["parcels"]
    assert sent["reference"] == parcel.reference
    assert "Unter den Linden 1" in sent["address_lines"]
    assert session.exec(
        select(AuditEvent).where(
            AuditEvent.action == "personal_data.downloaded",
            AuditEvent.subject_id == str(person.id),
        )
    ).one()

    # Another maintainer gets their own file, which holds nothing of Ada's.
    sign_in_as(client, stranger)
    theirs = text(client.get("/account/data/download"))
    assert stranger.email in theirs
    assert person.email not in theirs and parcel.reference not in theirs
    assert "Linden" not in theirs


def test_erasure_needs_the_box_ticked_and_the_forms_token(client, session, parcel):
    person = owner(session, parcel)
    deliver(client, session, parcel)
    sign_in_as(client, person)

    unticked = erase(client)
    forged = client.post("/account/data/erase", data={"confirm": "y"})

    assert unticked.status_code == 400
    assert "Tick the box to confirm" in text(unticked)
    assert forged.status_code == 400
    session.expire_all()
    assert session.get(Shipment, parcel.id).personal_data_erased_at is None


def test_erasure_takes_a_delivered_parcels_address_at_once(client, session, parcel):
    person = owner(session, parcel)
    deliver(client, session, parcel)
    sign_in_as(client, person)

    done = erase(client, confirm="y")

    assert done.status_code == 302
    page = text(client.get(done.headers["Location"]))
    assert "Your names, phone numbers and addresses are erased." in page
    claim_page = text(client.get("/claim"))
    assert "under the retention policy" in claim_page
    assert "Linden" not in claim_page and "+49301234567" not in claim_page
    session.expire_all()
    assert session.get(Maintainer, person.id).display_name == ""
    assert "Linden" not in text(client.get("/account/data/download"))


def test_a_parcel_on_its_way_keeps_its_address_and_staff_see_the_request(client, session, parcel):
    person = owner(session, parcel)
    sign_in_as(client, person)

    done = erase(client, confirm="y")

    page = text(client.get(done.headers["Location"]))
    assert "we keep its address until the claim ends" in page
    assert f"claim {parcel.claim_id}" in page  # the open request, explained
    assert "Unter den Linden 1" in text(client.get("/claim"))

    sign_in_as(client, make_staff(session, roles=[StaffRole.PROGRAMME]))
    requests = text(client.get("/staff/erasure-requests"))
    assert person.username in requests
    assert f"waiting for claim {parcel.claim_id} to end" in requests


def test_staff_pages_say_when_a_parcel_and_a_pdf_were_erased(client, session, settings, parcel):
    deliver(client, session, parcel)
    run = session.exec(select(LabelRun)).one()
    personal_data.purge_personal_data(
        session=session,
        settings=settings,
        actor=ACTOR,
        now=utcnow() + timedelta(days=settings.personal_data_days + 1),
    )
    sign_in_as(client, make_staff(session, roles=[StaffRole.SHIPPING]))

    page = text(client.get(f"/staff/shipping/parcels/{parcel.reference}"))
    pdf = client.get(f"/staff/shipping/runs/{run.id}/labels.pdf")
    run_page = text(client.get(f"/staff/shipping/runs/{run.id}"))

    assert "phone and tracking number were" in page and ">erased on <time" in page
    assert "Linden" not in page and "00340434161234567890" not in page
    assert "No replacement can be sent" in page
    assert pdf.status_code == 410 and "retention policy" in text(pdf)
    assert "The PDF was erased" in run_page
    assert "PDF erased under the retention policy" in text(client.get("/staff/shipping"))
