"""Claim pages and the stock desk through the test client."""

from __future__ import annotations

import io
import re

import pytest
from sqlmodel import select

from accounts.models import StaffRole
from core import tasks
from core.audit import AuditEvent
from distribution.models import Claim, LabelRun, Shipment
from distribution.stock import services as stock
from eligibility.services import ensure_project
from tests.factories import (
    USB_A,
    USB_C,
    csrf_token,
    import_statistics,
    make_maintainer,
    make_owner,
    make_staff,
    receive_keys,
    shipped_parcel,
    sign_in_as,
)

A, C = USB_A, USB_C
BERLIN = {
    "address_street_address": "Unter den Linden 1",
    "address_postal_code": "10117",
    "address_city": "Berlin",
    "recipient_name": "Ada Demo",
    "phone": "030 1234567",
}


def text(response):
    return response.get_data(as_text=True)


@pytest.fixture
def maintainer(session):
    """Ada, who owns the critical project "famous"; 3 keys of each model in stock."""
    ensure_project(session=session, name="famous")
    import_statistics(session, "project,downloads\nfamous,9\nx,1\n")
    receive_keys(session, {A: 3, C: 3}, "V")
    return make_owner(session, "famous", country="DE", display_name="Ada Demo")


def get_code(client):
    page = client.post("/claim/code", data={"csrf_token": csrf_token(client, "/claim")})
    assert page.status_code == 200
    return re.search(r'data-testid="claim-code"[^>]*>\s*([0-9A-Z-]+)', text(page)).group(1)


def redeem(client, code, country="DE", **fields):
    path = f"/claim/redeem?country={country}&code={code}"
    form = {
        "code": code,
        "country": country,
        f"quantity_{A}": "1",
        f"quantity_{C}": "1",
        "csrf_token": csrf_token(client, path),
        "idempotency_key": "k-" + code[:8],
        **BERLIN,
        **fields,
    }
    return client.post(f"/claim/redeem?country={country}", data=form)


def test_a_maintainer_gets_a_code_and_redeems_it(client, session, maintainer, mailbox):
    sign_in_as(client, maintainer)
    assert "Get my claim code" in text(client.get("/claim"))
    code = get_code(client)
    assert code in mailbox.to(maintainer.email)[-1].get_content()

    done = redeem(client, code)
    assert done.status_code == 302
    claim = session.exec(select(Claim)).one()
    assert claim.status == "redeemed"
    shipment = session.exec(select(Shipment)).one()
    assert shipment.address_lines[-1] == "GERMANY" and shipment.phone == "+49301234567"
    page = text(client.get("/claim"))
    assert "Unter den Linden 1" in page and "Address received" in page


def test_asking_twice_for_a_code_goes_back_to_my_claim(client, session, maintainer, mailbox):
    sign_in_as(client, maintainer)
    get_code(client)
    again = client.post("/claim/code", data={"csrf_token": csrf_token(client, "/claim")})
    assert again.status_code == 302 and again.headers["Location"] == "/claim"
    assert "You have a claim already" in text(client.get("/claim"))
    assert len(session.exec(select(Claim)).all()) == 1


def test_a_double_submit_makes_one_shipment(client, session, maintainer, mailbox):
    sign_in_as(client, maintainer)
    code = get_code(client)
    assert redeem(client, code).status_code == 302
    assert redeem(client, code).status_code == 302  # same idempotency key: the same result
    assert len(session.exec(select(Shipment)).all()) == 1


def idempotency_key(page):
    """The key of the redemption form a page shows."""
    return re.search(r'name="idempotency_key"[^>]*value="([^"]+)"', text(page)).group(1)


def cancel(client, claim_id):
    token = csrf_token(client, "/claim")
    return client.post(f"/claim/{claim_id}/cancel", data={"csrf_token": token})


def test_a_form_resent_after_its_claim_was_cancelled_ships_nothing_and_says_why(
    client, session, maintainer, mailbox
):
    sign_in_as(client, maintainer)
    old_code = get_code(client)
    assert redeem(client, old_code).status_code == 302
    old_claim = session.exec(select(Claim)).one()
    assert cancel(client, old_claim.id).status_code == 302
    new_code = get_code(client)

    # The old form again, as it was (same idempotency key, the old code): no thank-you.
    resent = redeem(client, old_code)

    assert resent.status_code == 409
    assert "for a claim you have since cancelled" in text(resent)
    assert 'id="code-error-1"' in text(resent)  # beside the code field
    assert "Thank you" not in text(resent) + text(client.get("/claim"))
    new_claim = claims_by_code(session)[new_code[-4:]]
    assert new_claim.status == "issued"
    assert len(session.exec(select(Shipment)).all()) == 1

    # The page shown again is a fresh form: the new code entered in it is redeemed.
    fresh = idempotency_key(resent)
    assert fresh != "k-" + old_code[:8]
    done = redeem(client, new_code, idempotency_key=fresh)
    assert done.status_code == 302
    assert "Thank you: your keys will be shipped to Germany" in text(client.get("/claim"))
    session.refresh(new_claim)
    assert new_claim.status == "redeemed"
    assert [s.claim_id for s in session.exec(select(Shipment))] == [old_claim.id, new_claim.id]


def test_a_new_code_typed_into_a_form_sent_already_is_not_taken_for_the_old_one(
    client, session, maintainer, mailbox
):
    sign_in_as(client, maintainer)
    old_code = get_code(client)
    assert redeem(client, old_code).status_code == 302
    cancel(client, session.exec(select(Claim)).one().id)
    new_code = get_code(client)

    # The back button to the sent form, and the new code typed into it.
    typed = redeem(client, new_code, idempotency_key="k-" + old_code[:8])

    assert typed.status_code == 409 and "with another code" in text(typed)
    assert claims_by_code(session)[new_code[-4:]].status == "issued"
    assert redeem(client, new_code, idempotency_key=idempotency_key(typed)).status_code == 302
    assert claims_by_code(session)[new_code[-4:]].status == "redeemed"


def test_a_cancelled_code_says_it_was_cancelled_not_used(client, session, maintainer, mailbox):
    sign_in_as(client, maintainer)
    code = get_code(client)
    cancel(client, session.exec(select(Claim)).one().id)

    again = redeem(client, code)

    assert again.status_code == 409
    assert "You cancelled the claim of that code on" in text(again)
    assert "already used" not in text(again)


def claims_by_code(session):
    session.expire_all()
    return {claim.code_hint: claim for claim in session.exec(select(Claim))}


def test_a_tampered_or_copied_idempotency_key_is_refused_with_a_reason(
    client, session, maintainer, mailbox
):
    sign_in_as(client, maintainer)
    code = get_code(client)
    assert redeem(client, code).status_code == 302
    other = make_owner(session, "famous", country="DE")
    sign_in_as(client, other)
    other_code = get_code(client)

    # Past the column's 64 characters, then Ada's own key: both were 500s.
    too_long = redeem(client, other_code, idempotency_key="k" * 65)
    copied = redeem(client, other_code, idempotency_key="k-" + code[:8])

    assert too_long.status_code == 400 and "The form was changed on its way" in text(too_long)
    assert copied.status_code == 400 and "This form was sent already" in text(copied)
    assert len(session.exec(select(Shipment)).all()) == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"address_street_address": ""}, "Enter the street address."),
        ({"address_postal_code": "1011"}, "Check the postal code"),
        ({"phone": "123"}, "not a phone number the carrier can call"),
        ({"recipient_name": "山田太郎"}, "Latin"),
    ],
)
def test_bad_addresses_are_explained_beside_the_field(
    client, session, maintainer, mailbox, fields, message
):
    sign_in_as(client, maintainer)
    code = get_code(client)
    response = redeem(client, code, **fields)
    assert response.status_code in (400, 422)
    assert message.lower() in text(response).lower()
    assert session.exec(select(Claim)).one().status == "issued"


def test_wrong_codes_get_their_own_messages(client, session, maintainer, mailbox):
    sign_in_as(client, maintainer)
    code = get_code(client)
    typo = code[:-1] + ("0" if code[-1] != "0" else "1")
    response = redeem(client, typo)
    assert response.status_code == 400 and "mistyped" in text(response)
    response = redeem(client, "0000-0000-0000-0000-0")
    assert response.status_code == 404 and "not one we gave you" in text(response)


def test_code_entry_is_rate_limited(client, session, maintainer, mailbox):
    sign_in_as(client, maintainer)
    statuses = [redeem(client, "0000-0000-0000-0000-0").status_code for _ in range(11)]
    assert statuses[:10] == [404] * 10 and statuses[10] == 429


def test_a_maintainer_can_cancel_and_the_keys_return(client, session, maintainer, mailbox):
    sign_in_as(client, maintainer)
    get_code(client)
    claim = session.exec(select(Claim)).one()
    client.post(f"/claim/{claim.id}/cancel", data={"csrf_token": csrf_token(client, "/claim")})
    session.refresh(claim)
    assert claim.status == "cancelled"
    assert stock.stock_figures(session=session).available == 6


def test_a_cancel_sent_again_shows_the_cancelled_claim_and_changes_nothing(
    client, session, maintainer, mailbox
):
    sign_in_as(client, maintainer)
    get_code(client)
    claim = session.exec(select(Claim)).one()

    form = {"csrf_token": csrf_token(client, "/claim")}
    answers = []
    for _ in range(2):  # the first's answer was lost: the browser sends the form again
        sent = client.post(f"/claim/{claim.id}/cancel", data=form)
        answers.append((sent.status_code, sent.headers["Location"], text(client.get("/claim"))))

    for status, location, page in answers:
        assert (status, location) == (302, "/claim")
        assert f"Your claim with the code ending …{claim.code_hint} is cancelled" in page
    session.refresh(claim)
    assert claim.status == "cancelled"
    events = session.exec(
        select(AuditEvent).where(
            AuditEvent.action == "claim.cancelled", AuditEvent.subject_id == str(claim.id)
        )
    ).all()
    assert len(events) == 1
    figures = stock.stock_figures(session=session)
    assert (figures.reserved, figures.allocated, figures.available) == (0, 0, 6)


def test_a_shipped_claim_still_cannot_be_cancelled(client, session, settings, maintainer):
    person, parcel = shipped_parcel(session, settings)
    sign_in_as(client, person)

    refused = cancel(client, parcel.claim_id)

    assert refused.status_code == 409 and "can no longer be cancelled" in text(refused)
    assert session.get(Claim, parcel.claim_id).status == "shipped"


def test_another_maintainers_claim_is_not_found(client, session, maintainer, mailbox):
    sign_in_as(client, maintainer)
    get_code(client)
    claim = session.exec(select(Claim)).one()
    sign_in_as(client, make_maintainer(session))
    token = csrf_token(client, "/claim")
    assert client.post(f"/claim/{claim.id}/cancel", data={"csrf_token": token}).status_code == 404
    assert client.get(f"/claim/{claim.id}/address").status_code == 404
    session.refresh(claim)
    assert claim.status == "issued"


def test_programme_staff_receive_and_adjust_stock(client, session):
    sign_in_as(client, make_staff(session, roles=[StaffRole.PROGRAMME]))
    token = csrf_token(client, "/staff/stock")
    received = client.post(
        "/staff/stock/receive",
        data={"sku": A, "quantity": "50", "reference": "DN-900", "csrf_token": token},
    )
    assert received.status_code == 302
    no_reason = client.post(
        "/staff/stock/adjust", data={"sku": A, "quantity": "-2", "reason": "", "csrf_token": token}
    )
    assert no_reason.status_code == 400 and "Say why the count changes." in text(no_reason)
    page = text(client.get("/staff/stock"))
    assert "DN-900" in page and "reconcile" in page
    assert stock.stock_figures(session=session).on_hand == 50


def test_a_number_past_any_count_is_refused_as_too_large(client, session, maintainer, mailbox):
    # WTForms' range check overflowed on integers past about 10**308: each form was a 500.
    huge = "9" * 400
    sign_in_as(client, maintainer)
    redemption = redeem(client, get_code(client), **{f"quantity_{A}": huge})
    sign_in_as(client, make_staff(session, roles=[StaffRole.PROGRAMME]))
    token = csrf_token(client, "/staff/stock")
    receipt = client.post(
        "/staff/stock/receive",
        data={"sku": A, "quantity": huge, "reference": "DN-901", "csrf_token": token},
    )

    assert redemption.status_code == 400 and "That number is far too large." in text(redemption)
    assert receipt.status_code == 400 and "Enter how many keys arrived." in text(receipt)
    assert session.exec(select(Shipment)).all() == []
    assert stock.stock_figures(session=session).on_hand == 6


def test_shipping_staff_print_labels_and_ship_by_scanning(
    app_factory, session, maintainer, mailbox
):
    from pypdf import PdfReader

    client = app_factory(task_queue_url="memory://").test_client()
    sign_in_as(client, maintainer)
    assert redeem(client, get_code(client)).status_code == 302
    shipment = session.exec(select(Shipment)).one()
    sign_in_as(client, make_staff(session, roles=[StaffRole.SHIPPING]))
    desk = text(client.get("/staff/shipping"))
    assert shipment.reference in desk
    token = csrf_token(client, "/staff/shipping")

    nothing = client.post("/staff/shipping/labels", data={"layout": "4x6", "csrf_token": token})
    assert nothing.status_code == 400 and "Select at least one parcel." in text(nothing)
    started = client.post(
        "/staff/shipping/labels",
        data={"claim_ids": str(shipment.claim_id), "layout": "4x6", "csrf_token": token},
    )
    assert started.status_code == 302
    run = session.exec(select(LabelRun)).one()
    assert started.location.endswith(f"/staff/shipping/runs/{run.id}")
    rendering = text(client.get(started.location))
    assert "Rendering…" in rendering and 'pages-done">0</span> of 2 pages done' in rendering
    assert shipment.reference not in text(client.get("/staff/shipping"))  # not offered twice
    assert client.get(f"/staff/shipping/runs/{run.id}/labels.pdf").status_code == 404

    # The task the request's commit handed to the queue, run by a consumer.
    tasks.get_queue(client.application).drain()
    done = text(client.get(started.location))
    assert "The PDF is ready" in done and "1 parcel(s) now count as printed" in done
    pdf = client.get(f"/staff/shipping/runs/{run.id}/labels.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    pages = PdfReader(io.BytesIO(pdf.data)).pages
    assert len(pages) == 2 and shipment.reference in pages[0].extract_text()
    session.expire_all()
    assert session.exec(select(Claim)).one().status == "label_printed"
    downloads = session.exec(select(AuditEvent).where(AuditEvent.action == "labels.downloaded"))
    assert [event.subject_id for event in downloads] == [str(run.id)]

    unknown = client.post(
        "/staff/shipping/ship",
        data={"reference": "SKNOPE", "carrier": "DHL", "tracking_number": "1", "csrf_token": token},
    )
    assert unknown.status_code == 400 and "No parcel has the reference" in text(unknown)
    shipped = client.post(
        "/staff/shipping/ship",
        data={
            "reference": shipment.reference.lower(),
            "carrier": "DHL",
            "tracking_number": "JD014600006281230",
            "csrf_token": token,
        },
    )
    assert shipped.status_code == 302
    assert session.exec(select(Claim)).one().status == "shipped"
    tasks.get_queue(client.application).drain()  # the shipping notice
    assert "JD014600006281230" in mailbox.to(maintainer.email)[-1].get_content()


def test_a_manifest_is_previewed_before_it_ships(client, session, maintainer, mailbox):
    sign_in_as(client, make_staff(session, roles=[StaffRole.SHIPPING]))
    token = csrf_token(client, "/staff/shipping")
    preview = client.post(
        "/staff/shipping/manifest",
        data={
            "manifest": "reference,carrier,tracking_number\nSKNOPE,DHL,123\n",
            "csrf_token": token,
        },
    )
    assert preview.status_code == 200
    assert "0 of 1 line(s) can be shipped" in text(preview)
    assert "No parcel has the reference" in text(preview)
