"""The shipping desk and the replacements page on the web: the queue's filter and counts,
label runs in the background, parcel pages and their actions, delivery files, decisions."""

from __future__ import annotations

import io
import re
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from pypdf import PdfReader
from sqlmodel import select

from accounts.models import StaffRole
from app import create_app
from core import tasks
from core.audit import AuditEvent
from core.db import get_database, utcnow
from core.mail import OutboxMailer
from distribution.models import Claim, LabelRun, ParcelException, Shipment
from distribution.shipping import exceptions, fulfilment, label_runs
from tests.conftest import make_settings
from tests.factories import (
    ACTOR,
    USB_A,
    USB_C,
    csrf_token,
    make_staff,
    print_labels,
    redeem_parcel,
    ship,
    shipped_parcel,
    sign_in_as,
    stock_famous_project,
)

TOKYO = {
    "country_code": "JP",
    "name": "Yamada Taro",
    "street_address": "1-9-1 Marunouchi",
    "city": "Chiyoda-ku",
    "country_area": "Tokyo",
    "postal_code": "1000005",
}


def text(response):
    return response.get_data(as_text=True)


@pytest.fixture
def shipping(client, session):
    sign_in_as(client, make_staff(session, roles=[StaffRole.SHIPPING]))
    return client


def test_the_queue_filters_by_destination_model_and_age_with_counts(shipping, session, settings):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    _a, berlin = redeem_parcel(session, settings, items={USB_A: 2})
    _b, tokyo = redeem_parcel(session, settings, items={USB_C: 1}, address=TOKYO)

    desk = text(shipping.get("/staff/shipping"))
    assert 'data-testid="queue-count">2<' in desk
    assert "Germany 1" in desk and "Japan 1" in desk
    assert "Titan Security Key USB-A/NFC 1" in desk

    japan = text(shipping.get("/staff/shipping?country=JP"))
    assert tokyo.reference in japan and berlin.reference not in japan
    assert "1 of 2 waiting parcel(s) shown" in japan
    usb_a = text(shipping.get(f"/staff/shipping?sku={USB_A}"))
    assert berlin.reference in usb_a and tokyo.reference not in usb_a
    old = text(shipping.get("/staff/shipping?min_age_days=7"))
    assert "No waiting parcel matches the filter." in old
    nonsense = shipping.get("/staff/shipping?country=XX&min_age_days=abc")
    assert nonsense.status_code == 200 and "2 of 2 waiting parcel(s) shown" in text(nonsense)

    # "Print all shown" takes exactly what the filter shows.
    token = csrf_token(shipping, "/staff/shipping")
    started = shipping.post(
        "/staff/shipping/labels?country=JP",
        data={"layout": "4x6", "everything": "1", "csrf_token": token},
    )
    assert started.status_code == 302
    assert session.exec(select(LabelRun)).one().claim_ids == [tokyo.claim_id]


def test_a_run_started_on_the_web_renders_in_the_background(
    databases, smtp_server, ratelimit_storage_url, tmp_path
):
    """A real database file or server and a consumer thread: the run page is never blank
    and offers the PDF once the task is done."""
    app = create_app(
        make_settings(
            databases.create("runs"),
            smtp_server[1],
            ratelimit_storage_url=ratelimit_storage_url,
            instance_path=tmp_path,
            task_queue_url="memory://",
        )
    )
    settings = app.extensions["keys_settings"]
    with get_database(app).transaction() as session:
        stock_famous_project(session, {USB_A: 40, USB_C: 40})
        parcels = [redeem_parcel(session, settings)[1] for _ in range(30)]
        staff = make_staff(session, roles=[StaffRole.SHIPPING])
    client = app.test_client()
    sign_in_as(client, staff)
    token = csrf_token(client, "/staff/shipping")

    # The request's commit hands the run to the queue; a consumer (a thread here) renders it.
    with client.post(
        "/staff/shipping/labels",
        data={
            "claim_ids": [str(p.claim_id) for p in parcels],
            "layout": "4x6",
            "csrf_token": token,
        },
    ) as started:
        assert started.status_code == 302
        run_page = started.location
    consumer = threading.Thread(target=tasks.get_queue(app).drain)
    consumer.start()
    pages_seen = []
    page = text(client.get(run_page))
    for _ in range(600):  # bounded: a stuck job fails the test instead of hanging it
        if "The PDF is ready" in page:
            break
        assert "Rendering…" in page and 'http-equiv="refresh"' in page
        pages_seen.append(page)
        time.sleep(0.1)
        page = text(client.get(run_page))

    consumer.join(timeout=60)
    assert "The PDF is ready" in page and "30 parcel(s) now count as printed" in page
    assert pages_seen, "the page showed the run while it rendered"
    pdf = client.get(run_page + "/labels.pdf")
    assert len(PdfReader(io.BytesIO(pdf.data)).pages) == 60
    with get_database(app).transaction() as session:
        assert {c.status for c in session.exec(select(Claim)).all()} == {"label_printed"}
        run = session.exec(select(LabelRun)).one()
        assert (run.status, run.pages_done, run.pages_total) == ("done", 60, 60)
    get_database(app).engine.dispose()


def test_a_failed_or_interrupted_run_says_so(shipping, session, settings):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    _person, parcel = redeem_parcel(session, settings)
    run = label_runs.start_run(
        session=session, actor=ACTOR, claim_ids=[parcel.claim_id], layout="4x6"
    )
    run.heartbeat_at = run.heartbeat_at - LabelRun.STALE_AFTER * 2
    session.flush()

    page = text(shipping.get(f"/staff/shipping/runs/{run.id}"))
    assert "The run was interrupted" in page and "refresh" not in page
    assert parcel.reference in text(shipping.get("/staff/shipping"))  # back in the queue
    assert shipping.get("/staff/shipping/runs/999999").status_code == 404


def test_a_parcel_page_voids_a_label_and_explains_a_missing_reason(shipping, session, settings):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    _person, parcel = redeem_parcel(session, settings)
    print_labels(session, settings, [parcel.claim_id])

    found = shipping.get(f"/staff/shipping/parcel?reference={parcel.reference.lower()}")
    assert found.status_code == 302 and found.location.endswith(parcel.reference)
    missing = shipping.get("/staff/shipping/parcel?reference=SKNOPE")
    assert missing.status_code == 404 and "No parcel has the reference" in text(missing)

    path = f"/staff/shipping/parcels/{parcel.reference}"
    page = text(shipping.get(path))
    assert "Void the label" in page and "label printed" in page
    token = csrf_token(shipping, path)
    empty = shipping.post(f"{path}/void", data={"reason": "", "csrf_token": token})
    assert empty.status_code == 400 and "Say why, in a few words." in text(empty)
    assert session.get(Claim, parcel.claim_id).status == "label_printed"

    voided = shipping.post(f"{path}/void", data={"reason": "Torn label", "csrf_token": token})
    session.expire_all()
    fresh = session.get(Shipment, parcel.id).reference
    assert voided.status_code == 302 and voided.location.endswith(fresh)
    assert session.get(Claim, parcel.claim_id).status == "redeemed"
    assert shipping.post(f"{path}/explode", data={"csrf_token": token}).status_code == 404


def test_printing_from_a_page_whose_parcels_are_gone_says_why(shipping, session, settings):
    # Another desk printed them meanwhile: the forms are not on the page any more, so their
    # errors were shown nowhere (a 400 that told nothing).
    token = csrf_token(shipping, "/staff/shipping")

    first = shipping.post(
        "/staff/shipping/labels", data={"claim_ids": "1", "layout": "4x6", "csrf_token": token}
    )
    again = shipping.post(
        "/staff/shipping/reprint",
        data={"reprint-claim_ids": "1", "reprint-layout": "4x6", "csrf_token": token},
    )

    assert first.status_code == 400 and "no longer wait for a label" in text(first)
    assert again.status_code == 400 and "no longer wait to ship" in text(again)


def test_an_action_this_state_does_not_offer_still_explains_its_refusal(
    shipping, session, settings
):
    # Voiding a shipped parcel without a reason: the void form is not on its page, so its
    # field's error was shown nowhere (a 400 that said nothing).
    stock_famous_project(session, {USB_A: 2, USB_C: 2})
    _person, parcel = shipped_parcel(session, settings)
    path = f"/staff/shipping/parcels/{parcel.reference}"
    token = csrf_token(shipping, path)

    refused = shipping.post(f"{path}/void", data={"reason": "", "csrf_token": token})

    assert refused.status_code == 400
    assert "Void the label" not in text(refused)
    assert "Reason: Say why, in a few words." in text(refused)


def test_shipped_parcels_are_returned_lost_or_delivered_from_their_page(
    shipping, session, settings, mailbox
):
    stock_famous_project(session, {USB_A: 6, USB_C: 6})
    parcels = [shipped_parcel(session, settings)[1] for _ in range(3)]
    back, lost, arrived = (f"/staff/shipping/parcels/{p.reference}" for p in parcels)
    token = csrf_token(shipping, back)

    returned = shipping.post(f"{back}/returned", data={"reason": "", "csrf_token": token})
    no_reason = shipping.post(f"{lost}/lost", data={"reason": "", "csrf_token": token})
    written_off = shipping.post(f"{lost}/lost", data={"reason": "Not found", "csrf_token": token})
    delivered = shipping.post(f"{arrived}/deliver", data={"csrf_token": token})
    twice = shipping.post(f"{arrived}/deliver", data={"csrf_token": token})

    assert returned.status_code == 302 and no_reason.status_code == 400
    assert written_off.status_code == 302 and delivered.status_code == 302
    assert twice.status_code == 400 and "not on its way" in text(twice)
    session.expire_all()
    assert [session.get(Claim, p.claim_id).status for p in parcels] == [
        "returned",
        "lost",
        "delivered",
    ]
    assert "came back to us" in mailbox.messages[-2]["Subject"]
    assert "Returned to sender" in text(shipping.get(back))
    assert "Request replacement keys" in text(shipping.get(arrived))


def test_programme_staff_approve_or_decline_replacements(client, session, settings):
    stock_famous_project(session, {USB_A: 6, USB_C: 6})
    parcels = [shipped_parcel(session, settings)[1] for _ in range(2)]
    requests = []
    for parcel in parcels:
        requests.append(
            exceptions.mark_lost(
                session=session,
                mailer=OutboxMailer(),
                actor=ACTOR,
                reference=parcel.reference,
                reason="Carrier lost it",
            )
        )
    sign_in_as(client, make_staff(session, roles=[StaffRole.PROGRAMME]))
    page = text(client.get("/staff/replacements"))
    assert page.count('data-testid="replacement"') == 2 and "Carrier lost it" in page
    token = csrf_token(client, "/staff/replacements")

    approved = client.post(
        f"/staff/replacements/{requests[0].id}/approve", data={"reason": "", "csrf_token": token}
    )
    no_reason = client.post(
        f"/staff/replacements/{requests[1].id}/decline", data={"reason": "", "csrf_token": token}
    )
    declined = client.post(
        f"/staff/replacements/{requests[1].id}/decline",
        data={"reason": "Delivered to a neighbour", "csrf_token": token},
    )
    again = client.post(f"/staff/replacements/{requests[0].id}/approve", data={"csrf_token": token})

    assert approved.status_code == 302 and declined.status_code == 302
    assert no_reason.status_code == 400 and "Say why, in a few words." in text(no_reason)
    assert again.status_code == 400 and "approved already" in text(again)
    session.expire_all()
    assert [e.replacement for e in session.exec(select(ParcelException)).all()] == [
        "approved",
        "declined",
    ]
    assert "No replacement is waiting for a decision." in text(client.get("/staff/replacements"))

    # Declining one that is decided already, without a reason: its form is no longer listed,
    # so the reason's error was shown nowhere (a 400 that told nothing).
    late = client.post(
        f"/staff/replacements/{requests[1].id}/decline", data={"reason": "", "csrf_token": token}
    )
    assert late.status_code == 400 and "Reason: Say why, in a few words." in text(late)


def test_a_delivery_file_is_previewed_before_it_is_recorded(shipping, session, settings):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    _person, parcel = shipped_parcel(session, settings)
    token = csrf_token(shipping, "/staff/shipping")
    events = f"reference,delivered_at\n{parcel.reference},\nSKNOPE,2026-01-01\n"

    empty = shipping.post(
        "/staff/shipping/deliveries", data={"deliveries": "", "csrf_token": token}
    )
    preview = shipping.post(
        "/staff/shipping/deliveries", data={"deliveries": events, "csrf_token": token}
    )

    assert empty.status_code == 400 and "Paste the delivery events." in text(empty)
    assert "1 of 2 line(s) can be recorded" in text(preview)
    assert session.get(Claim, parcel.claim_id).status == "shipped"
    applied = shipping.post(
        "/staff/shipping/deliveries/apply", data={"deliveries": events, "csrf_token": token}
    )
    # The line left out is listed again with its reason (it was only counted).
    assert applied.status_code == 200
    page = " ".join(text(applied).split())
    assert "Recorded 1 delivery(ies). 1 line(s) were left out" in page
    assert "<code>SKNOPE</code>" in page and "No parcel has the reference &#39;SKNOPE&#39;" in page
    assert f"<code>{parcel.reference}</code>" not in page and "Record 1 delivery" not in page
    session.expire_all()
    assert session.get(Claim, parcel.claim_id).status == "delivered"


def test_the_maintainer_corrects_the_address_of_a_returned_parcel(client, session, settings):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    person, parcel = shipped_parcel(session, settings)
    exceptions.mark_returned(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        reference=parcel.reference,
    )
    sign_in_as(client, person)
    page = text(client.get("/claim"))
    assert "Correct the address" in page and "your parcel came back to us" in page
    assert "Cancel my claim" in page
    path = f"/claim/{parcel.claim_id}/address"
    saved = client.post(
        path,
        data={
            "country": "DE",
            "address_street_address": "Marienplatz 8",
            "address_postal_code": "80331",
            "address_city": "München",
            "recipient_name": "Ada Demo",
            "phone": "089 1234567",
            "csrf_token": csrf_token(client, path),
        },
    )
    assert saved.status_code == 302
    session.expire_all()
    current = session.exec(select(Shipment).order_by(Shipment.id.desc())).first()
    assert current.purpose == "reship" and current.reference != parcel.reference
    assert session.get(Claim, parcel.claim_id).status == "redeemed"


def test_the_ship_form_makes_staff_choose_a_carrier(shipping, session, settings):
    # It preselected DHL: a parcel scanned in a hurry left "with DHL" whatever carried it.
    stock_famous_project(session, {USB_A: 2, USB_C: 2})
    _person, parcel = redeem_parcel(session, settings)
    print_labels(session, settings, [parcel.claim_id])
    desk = text(shipping.get("/staff/shipping"))
    select_tag = desk.split('name="carrier"', 1)[1].split("</select>", 1)[0]
    token = csrf_token(shipping, "/staff/shipping")

    def ship_with(carrier):
        return shipping.post(
            "/staff/shipping/ship",
            data={
                "reference": parcel.reference,
                "carrier": carrier,
                "tracking_number": "1Z999AA10123456784",
                "csrf_token": token,
            },
        )

    unchosen, unknown, chosen = ship_with(""), ship_with("Hermes"), ship_with("UPS")

    assert " required" in select_tag.split(">", 1)[0]
    assert '><option value="">Choose a carrier…</option><option value="DHL">' in select_tag
    assert "selected" not in select_tag
    assert unchosen.status_code == 400 and "Choose the carrier." in text(unchosen)
    assert unknown.status_code == 400 and "Not a valid choice." in text(unknown)
    assert chosen.status_code == 302
    session.expire_all()
    assert session.get(Shipment, parcel.id).carrier == "UPS"


def test_damaged_keys_are_reported_on_the_parcel_they_came_in(shipping, client, session, settings):
    stock_famous_project(session, {USB_A: 6, USB_C: 6})
    person, first = shipped_parcel(session, settings, items={USB_A: 1, USB_C: 1})
    fulfilment.record_delivery(session=session, actor=ACTOR, reference=first.reference)
    [usb_c] = exceptions.report_damaged(
        session=session, actor=ACTOR, reference=first.reference, sku=USB_C, reason="Cracked"
    )
    second = exceptions.approve_replacement(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        exception_id=usb_c.id,
    )
    print_labels(session, settings, [first.claim_id])
    ship(session, settings, second.reference, tracking_number="2")
    fulfilment.record_delivery(session=session, actor=ACTOR, reference=second.reference)
    path = f"/staff/shipping/parcels/{first.reference}"

    page = text(shipping.get(path))
    token = csrf_token(shipping, path)
    too_many = shipping.post(
        f"{path}/damaged",
        data={"sku": USB_A, "quantity": "2", "reason": "Bent", "csrf_token": token},
    )
    reported = shipping.post(
        f"{path}/damaged",
        data={"sku": USB_A, "quantity": "1", "reason": "Bent plug", "csrf_token": token},
    )

    assert "Request replacement keys" in page
    assert "not reported damaged yet: Titan Security Key USB-A/NFC × 1." in page
    assert too_many.status_code == 400
    assert f"Parcel {first.reference} has 1 TITAN-USB-A-NFC key(s) not reported" in text(too_many)
    assert reported.status_code == 302
    assert "Request replacement keys" not in text(shipping.get(path))  # nothing left to report
    event = session.exec(
        select(AuditEvent)
        .where(AuditEvent.action == "parcel.damaged")
        .order_by(AuditEvent.id.desc())
    ).first()
    assert (event.subject_id, event.details["shipment"], event.details["sku"]) == (
        str(first.claim_id),
        first.reference,
        USB_A,
    )
    assert event.details["quantity"] == 1 and event.actor_kind == "staff"
    sign_in_as(client, person)
    claim_page = text(client.get("/claim"))
    assert "a damaged key was reported (Titan Security Key USB-C/NFC)." in claim_page
    assert (
        "a damaged key was reported (Titan Security Key USB-A/NFC). A replacement is waiting"
        in (" ".join(claim_page.split()))
    )


def test_an_imported_manifest_lists_the_lines_it_left_out(shipping, session, settings, mailbox):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    parcels = [redeem_parcel(session, settings)[1] for _ in range(2)]
    print_labels(session, settings, [parcels[0].claim_id])
    manifest = (
        f"{parcels[0].reference},ups,1Z999AA10123456784\n"
        f"{parcels[1].reference},UPS,1Z999AA10123456785\n"
        "SKNOPE,Hermes,H1\n"
    )
    token = csrf_token(shipping, "/staff/shipping")

    applied = shipping.post(
        "/staff/shipping/manifest/apply", data={"manifest": manifest, "csrf_token": token}
    )

    assert applied.status_code == 200
    page = " ".join(text(applied).split())
    assert "Shipped 1 parcel(s); their maintainers are emailed a tracking link." in page
    assert "2 line(s) were left out" in page
    assert f"<code>{parcels[1].reference}</code>" in page
    assert "the parcel is redeemed, not waiting to ship" in page
    assert (
        "&#39;Hermes&#39; is not a carrier we ship with; the carriers are DHL, UPS, FedEx." in page
    )
    assert f"<code>{parcels[0].reference}</code>" not in page and "Ship 1 parcel" not in page
    session.expire_all()
    assert session.get(Shipment, parcels[0].id).carrier == "UPS"
    assert "https://www.ups.com/track?tracknum=1Z999AA10123456784" in (
        mailbox.messages[-1].get_content()
    )


def test_the_label_forms_offer_the_layout_of_the_settings(app_factory, session):
    app = app_factory(label_layout="a4")
    settings = app.extensions["keys_settings"]
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    waiting, printed = (redeem_parcel(session, settings)[1] for _ in range(2))
    print_labels(session, settings, [printed.claim_id])
    desk = app.test_client()
    sign_in_as(desk, make_staff(session, roles=[StaffRole.SHIPPING]))

    page = text(desk.get("/staff/shipping"))
    started = desk.post(
        "/staff/shipping/labels",
        data={
            "claim_ids": str(waiting.claim_id),
            "csrf_token": csrf_token(desk, "/staff/shipping"),
        },
    )

    for select_id in ("layout", "reprint-layout"):
        options = page.split(f'id="{select_id}"', 1)[1].split("</select>", 1)[0]
        assert '<option selected value="a4">A4, two labels a sheet</option>' in options
        assert options.count("selected") == 1
    assert started.status_code == 302  # a form sent without a layout takes the setting's
    [run] = [r for r in session.exec(select(LabelRun)).all() if r.claim_ids == [waiting.claim_id]]
    assert run.layout == "a4"


def test_printing_parcels_another_desk_took_meanwhile_names_them(shipping, session, settings):
    # The page said "'5' is not a valid choice for this field." (a claim id).
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    taken, free = (redeem_parcel(session, settings)[1] for _ in range(2))
    token = csrf_token(shipping, "/staff/shipping")
    print_labels(session, settings, [taken.claim_id])  # another desk, a moment ago

    refused = shipping.post(
        "/staff/shipping/labels",
        data={"claim_ids": [str(taken.claim_id), str(free.claim_id)], "csrf_token": token},
    )

    page = " ".join(text(refused).split())
    assert refused.status_code == 400
    assert (
        f"Parcel(s) {taken.reference} were printed, taken into another label run or cancelled "
        "meanwhile, so nothing was printed. The parcels still waiting stay selected" in page
    )
    assert "not a valid choice" not in page
    assert re.search(rf'<input checked[^>]* value="{free.claim_id}"', page)
    assert len(session.exec(select(LabelRun)).all()) == 1  # the other desk's run only
    assert session.get(Claim, free.claim_id).status == "redeemed"
    # An id no row can have is not looked up (PostgreSQL refused it: a 500).
    beyond = shipping.post(
        "/staff/shipping/labels",
        data={"claim_ids": [str(2**31), str(free.claim_id)], "csrf_token": token},
    )
    assert beyond.status_code == 400 and "is not a valid choice" in text(beyond)


def test_reprinting_labels_shipped_meanwhile_names_them(shipping, session, settings):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    gone, kept = (redeem_parcel(session, settings)[1] for _ in range(2))
    print_labels(session, settings, [gone.claim_id, kept.claim_id])
    token = csrf_token(shipping, "/staff/shipping")
    ship(session, settings, gone.reference)  # another desk, a moment ago

    refused = shipping.post(
        "/staff/shipping/reprint",
        data={
            "reprint-claim_ids": [str(gone.claim_id), str(kept.claim_id)],
            "reprint-layout": "4x6",
            "csrf_token": token,
        },
    )

    page = " ".join(text(refused).split())
    assert refused.status_code == 400
    assert f"Parcel(s) {gone.reference} were shipped, voided or cancelled meanwhile" in page
    assert re.search(rf'<input checked[^>]* value="{kept.claim_id}"', page)
    assert "<details open>" in page
    assert len(session.exec(select(LabelRun)).all()) == 1  # the first print only


def test_a_reprint_from_the_desk_prints_the_labels_again_and_moves_nothing(
    shipping, session, settings
):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    _person, parcel = redeem_parcel(session, settings)
    print_labels(session, settings, [parcel.claim_id])
    token = csrf_token(shipping, "/staff/shipping")

    started = shipping.post(
        "/staff/shipping/reprint",
        data={
            "reprint-claim_ids": str(parcel.claim_id),
            "reprint-layout": "letter",
            "csrf_token": token,
        },
    )
    run = session.exec(select(LabelRun).where(LabelRun.reprint)).one()  # rendered at commit
    session.expire_all()

    assert started.status_code == 302 and started.location.endswith(f"/runs/{run.id}")
    page = " ".join(text(shipping.get(started.location)).split())
    assert f"Reprint {run.id}" in page and "The PDF is ready" in page
    assert "A reprint changes nothing: the parcels still wait to ship." in page
    pdf = PdfReader(io.BytesIO(shipping.get(f"{started.location}/labels.pdf").data))
    assert parcel.reference in pdf.pages[0].extract_text()
    assert (run.layout, run.claim_ids, run.printed) == ("letter", [parcel.claim_id], 1)
    assert session.get(Claim, parcel.claim_id).status == "label_printed"
    actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert actions.count("labels.reprinted") == 1 and actions.count("labels.downloaded") == 1


def test_the_queue_shows_parcels_old_enough_for_the_age_filter(shipping, session, settings):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    old, new = (redeem_parcel(session, settings)[1] for _ in range(2))
    session.execute(
        sa.update(Shipment)
        .where(Shipment.id == old.id)
        .values(created_at=utcnow() - timedelta(days=8))
    )

    week = text(shipping.get("/staff/shipping?min_age_days=7"))
    day = text(shipping.get("/staff/shipping?min_age_days=1"))

    assert old.reference in week and new.reference not in week
    assert "1 of 2 waiting parcel(s) shown" in week
    assert old.reference in day and new.reference not in day


PDF_COLUMN = re.compile(r"label_run\.pdf\b")  # not label_run.pdf_erased_at


def test_the_run_page_leaves_the_pdf_in_the_database_until_it_is_downloaded(
    shipping, session, settings, connection
):
    # It loaded the whole PDF on every two-second refresh.
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    _person, parcel = redeem_parcel(session, settings)
    run = print_labels(session, settings, [parcel.claim_id])
    statements = []

    def seen(_conn, _cursor, statement, *_args):
        statements.append(statement)

    sa.event.listen(connection, "before_cursor_execute", seen)
    try:
        page = shipping.get(f"/staff/shipping/runs/{run.id}")
        read_on_the_page = [s for s in statements if PDF_COLUMN.search(s)]
        statements.clear()
        download = shipping.get(f"/staff/shipping/runs/{run.id}/labels.pdf")
    finally:
        sa.event.remove(connection, "before_cursor_execute", seen)

    assert "The PDF is ready" in text(page) and read_on_the_page == []
    assert download.data.startswith(b"%PDF")
    assert any(PDF_COLUMN.search(s) for s in statements)  # read when it is downloaded


def test_scanning_a_voided_label_names_the_parcels_reference_now(shipping, session, settings):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    _person, parcel = redeem_parcel(session, settings)
    print_labels(session, settings, [parcel.claim_id])
    old = parcel.reference
    now = fulfilment.void_label(
        session=session, actor=ACTOR, reference=old, reason="Torn"
    ).reference
    print_labels(session, settings, [parcel.claim_id])
    token = csrf_token(shipping, "/staff/shipping")

    scanned = shipping.post(
        "/staff/shipping/ship",
        data={
            "reference": old,
            "carrier": "DHL",
            "tracking_number": "00340434161234567890",
            "csrf_token": token,
        },
    )
    found = shipping.get(f"/staff/shipping/parcel?reference={old}")

    message = f"The label {old} was voided: the parcel&#39;s reference is now {now}."
    assert scanned.status_code == 400 and message in text(scanned)
    assert found.status_code == 404 and message in text(found)
    assert session.get(Claim, parcel.claim_id).status == "label_printed"


def test_damaged_keys_of_one_claim_are_one_decision_on_the_replacements_page(
    client, session, settings
):
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    _person, parcel = shipped_parcel(session, settings)
    fulfilment.record_delivery(session=session, actor=ACTOR, reference=parcel.reference)
    reported = [
        exceptions.report_damaged(
            session=session, actor=ACTOR, reference=parcel.reference, sku=sku, reason=reason
        )[0]
        for sku, reason in ((USB_A, "Bent plug"), (USB_C, "Cracked case"))
    ]
    sign_in_as(client, make_staff(session, roles=[StaffRole.PROGRAMME]))

    page = " ".join(text(client.get("/staff/replacements")).split())
    approved = client.post(
        f"/staff/replacements/{reported[1].id}/approve",
        data={"reason": "", "csrf_token": csrf_token(client, "/staff/replacements")},
    )

    assert page.count('data-testid="replacement"') == 1
    assert f"Damaged keys <code>{parcel.reference}</code>" in page
    assert "2 keys, decided together and replaced in one parcel" in page
    assert "Titan Security Key USB-A/NFC, reported" in page and ": Bent plug" in page
    assert "Titan Security Key USB-C/NFC, reported" in page and ": Cracked case" in page
    assert (
        "Replacement: Titan Security Key USB-A/NFC × 1, Titan Security Key USB-C/NFC × 1, "
        "to Germany." in page
    )
    assert approved.status_code == 302
    session.expire_all()
    replacement = session.exec(select(Shipment).where(Shipment.purpose == "replacement")).one()
    assert replacement.items == {USB_A: 1, USB_C: 1}
    assert {e.replacement for e in session.exec(select(ParcelException)).all()} == {"approved"}
