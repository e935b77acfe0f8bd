"""Personal data kept no longer than needed: which parcels the purge erases and which it must
leave alone, what stays for the reports, the copies in mail and label PDFs, the download of
everything held about a maintainer, and erasure on request."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from accounts.models import ErasureRequest, Maintainer, SecurityKey
from core.audit import AuditEvent
from core.db import utcnow
from core.mail import OutboxMailer, OutboxMessage
from distribution.claims import services as claims
from distribution.errors import ClaimLocked, PersonalDataErased
from distribution.models import (
    Claim,
    ClaimAction,
    LabelRun,
    ParcelException,
    StockMovement,
)
from distribution.privacy import services as personal_data
from distribution.shipping import exceptions, fulfilment, label_runs
from distribution.stock import services as stock
from tests.factories import (
    ACTOR,
    BERLIN,
    USB_A,
    USB_C,
    print_labels,
    redeem_parcel,
    ship,
    stock_famous_project,
)

PHONE = "+49301234567"  # what redeem_parcel gives every parcel
OLD = 31  # days: past the default retention period of 30


@pytest.fixture
def stocked(session):
    stock_famous_project(session, {USB_A: 30, USB_C: 30})


def age(session, claim_id, days=OLD):
    """Move everything that happened to a claim ``days`` into the past, as if it had happened
    then: its dates, its parcels', its problems' and those of the mail it caused."""
    past = timedelta(days=days)
    claim = session.get(Claim, claim_id)
    for name in ("issued_at", "expires_at", "redeemed_at", "activated_at", "closed_at"):
        if getattr(claim, name):
            setattr(claim, name, getattr(claim, name) - past)
    for parcel in claims.shipments_of(session=session, claim=claim):
        for name in ("created_at", "shipped_at", "delivered_at"):
            if getattr(parcel, name):
                setattr(parcel, name, getattr(parcel, name) - past)
    for problem in exceptions.exceptions_of(session=session, claim=claim):
        problem.reported_at -= past
        if problem.decided_at:
            problem.decided_at -= past
    email = session.get(Maintainer, claim.maintainer_id).email
    for message in session.exec(select(OutboxMessage).where(OutboxMessage.recipient == email)):
        message.created_at -= past
    session.flush()


def parcels(session, settings, count, *, printed=0):
    """``count`` redeemed parcels; the first ``printed`` of them printed in one label run."""
    made = [redeem_parcel(session, settings)[1] for _ in range(count)]
    if printed:
        print_labels(session, settings, [parcel.claim_id for parcel in made[:printed]])
    return made


def deliver(session, reference):
    fulfilment.record_delivery(session=session, actor=ACTOR, reference=reference)


def activate(session, claim_id):
    claims.transition_claim(
        session, session.get(Claim, claim_id), ClaimAction.ACTIVATE, actor=ACTOR
    )


def lose(session, reference):
    return exceptions.mark_lost(
        session=session, mailer=OutboxMailer(), actor=ACTOR, reference=reference, reason="Gone"
    )


def purge(session, settings, **changes):
    return personal_data.purge_personal_data(
        session=session, settings=settings.replace(**changes) if changes else settings, actor=ACTOR
    )


def parcel_of(session, claim_id):
    session.expire_all()
    return claims.shipment_of(session=session, claim=session.get(Claim, claim_id))


def ledger(session):
    figures = stock.stock_figures(session=session)
    assert figures.reconciles
    rows = session.exec(select(sa.func.count()).select_from(StockMovement)).one()
    return figures.on_hand, figures.reserved, figures.allocated, figures.available, rows


def erased_events(session):
    return session.exec(
        select(AuditEvent)
        .where(AuditEvent.action == "personal_data.erased")
        .order_by(col(AuditEvent.id))
    ).all()


def test_the_purge_erases_settled_claims_and_leaves_every_parcel_that_may_still_need_one(
    session, settings, stocked
):
    made = parcels(session, settings, 11, printed=10)
    (
        activated,
        activated_lately,
        delivered,
        lost_declined,
        lost_waiting,
        returned,
        on_its_way,
        damaged_waiting,
        printed,
        cancelled,
        waiting_for_label,
    ) = made
    for parcel in made[:8]:
        ship(session, settings, parcel.reference)
    for parcel in (activated, activated_lately, delivered, damaged_waiting):
        deliver(session, parcel.reference)
    for parcel in (activated, activated_lately, damaged_waiting):
        activate(session, parcel.claim_id)
    declined = lose(session, lost_declined.reference)
    exceptions.decline_replacement(
        session=session,
        mailer=OutboxMailer(),
        actor=ACTOR,
        exception_id=declined.id,
        note="Out of stock",
    )
    lose(session, lost_waiting.reference)
    exceptions.mark_returned(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        reference=returned.reference,
    )
    exceptions.report_damaged(
        session=session, actor=ACTOR, reference=damaged_waiting.reference, sku=USB_A, reason="Bent"
    )
    owner = session.get(Maintainer, session.get(Claim, cancelled.claim_id).maintainer_id)
    claims.cancel_claim(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        maintainer=owner,
        claim_id=cancelled.claim_id,
    )
    for parcel in made:
        if parcel is not activated_lately:
            age(session, parcel.claim_id)
    before = ledger(session)

    summary = purge(session, settings)

    erased = {p.claim_id for p in (activated, delivered, lost_declined, cancelled)}
    assert (summary.claims, summary.shipments) == (4, 4)
    for parcel in made:
        now = parcel_of(session, parcel.claim_id)
        if parcel.claim_id in erased:
            assert now.personal_data_erased_at is not None, now.reference
            assert (now.recipient_name, now.recipient_name_local, now.phone) == ("", "", "")
            assert (now.address, now.address_lines, now.tracking_number) == ({}, [], "")
            # What the reports count stays.
            assert (now.reference, now.country, now.items) == (
                parcel.reference,
                "DE",
                {USB_A: 1, USB_C: 1},
            )
        else:
            assert now.personal_data_erased_at is None, now.reference
            assert now.address_lines[0] == "Ada Demo" and now.phone == PHONE
    assert parcel_of(session, activated.claim_id).carrier == "DHL"
    assert parcel_of(session, activated.claim_id).shipped_at is not None
    assert session.get(Claim, activated.claim_id).status == "activated"
    assert ledger(session) == before  # erasing an address moves no key

    events = erased_events(session)
    assert sorted(int(e.subject_id) for e in events) == sorted(erased)
    for event in events:
        assert event.details["reason"] == "retention"
        written = json.dumps(event.details)
        assert "Linden" not in written and PHONE not in written and "Ada" not in written


def test_a_second_run_finds_nothing_to_do(session, settings, stocked):
    (parcel,) = parcels(session, settings, 1)
    owner = session.get(Maintainer, session.get(Claim, parcel.claim_id).maintainer_id)
    claims.cancel_claim(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        maintainer=owner,
        claim_id=parcel.claim_id,
    )
    age(session, parcel.claim_id)

    first = purge(session, settings)
    events = len(session.exec(select(AuditEvent)).all())
    second = purge(session, settings)

    assert (first.claims, first.shipments) == (1, 1)
    assert (second.claims, second.shipments, second.label_runs) == (0, 0, 0)
    assert len(session.exec(select(AuditEvent)).all()) == events


def test_the_period_is_the_setting_and_a_new_delivery_restarts_it(session, settings, stocked):
    (parcel,) = parcels(session, settings, 1, printed=1)
    ship(session, settings, parcel.reference)
    deliver(session, parcel.reference)
    activate(session, parcel.claim_id)
    age(session, parcel.claim_id, days=10)

    assert purge(session, settings).claims == 0  # 10 days < 30
    # A replacement delivered a day ago: the address was needed until then.
    parcel_of(session, parcel.claim_id).delivered_at = utcnow() - timedelta(days=1)
    assert purge(session, settings, personal_data_days=7).claims == 0
    parcel_of(session, parcel.claim_id).delivered_at = utcnow() - timedelta(days=8)
    assert purge(session, settings, personal_data_days=7).claims == 1


def test_label_pdfs_go_once_older_than_the_period(session, settings, stocked):
    first, second = parcels(session, settings, 2)
    old_run = print_labels(session, settings, [first.claim_id])
    new_run = print_labels(session, settings, [second.claim_id])
    session.get(LabelRun, old_run.id).finished_at -= timedelta(days=OLD)
    session.flush()

    summary = purge(session, settings)

    session.expire_all()
    assert summary.label_runs == 1
    assert session.get(LabelRun, old_run.id).pdf is None
    assert session.get(LabelRun, old_run.id).pdf_erased_at is not None
    assert session.get(LabelRun, new_run.id).pdf is not None
    with pytest.raises(PersonalDataErased, match="erased on .* under the retention policy"):
        label_runs.run_pdf(session=session, actor=ACTOR, run_id=old_run.id)
    # The parcel itself still waits to ship: its own address is untouched.
    assert parcel_of(session, first.claim_id).personal_data_erased_at is None


def test_mail_that_repeated_the_address_is_erased_with_it(session, settings, stocked):
    (parcel,) = parcels(session, settings, 1, printed=1)
    ship(session, settings, parcel.reference)
    deliver(session, parcel.reference)
    age(session, parcel.claim_id)
    owner = session.get(Maintainer, session.get(Claim, parcel.claim_id).maintainer_id)

    purge(session, settings)

    bodies = {
        m.purpose: m.body
        for m in session.exec(select(OutboxMessage).where(OutboxMessage.recipient == owner.email))
    }
    assert "Linden" not in bodies["claim_redeemed"]
    assert "retention policy" in bodies["claim_redeemed"]
    assert "00340434161234567890" not in bodies["parcel_shipped"]
    assert "claim code" in bodies["claim_code"]  # held no address: left as it was


def test_an_erased_parcel_cannot_be_printed_or_replaced(session, settings, stocked):
    delivered, printed = parcels(session, settings, 2, printed=2)
    ship(session, settings, delivered.reference)
    deliver(session, delivered.reference)
    age(session, delivered.claim_id)
    purge(session, settings)
    # By hand: no path of the app erases a parcel waiting to ship, but if one were...
    parcel_of(session, printed.claim_id).personal_data_erased_at = utcnow()
    session.flush()

    with pytest.raises(ClaimLocked, match="no replacement can be sent"):
        exceptions.report_damaged(
            session=session, actor=ACTOR, reference=delivered.reference, sku=USB_A, reason="Bent"
        )
    with pytest.raises(ClaimLocked, match="cannot be printed: its address was erased on"):
        label_runs.start_run(
            session=session, actor=ACTOR, claim_ids=[printed.claim_id], layout="4x6", reprint=True
        )


def owner_of(session, parcel):
    return session.get(Maintainer, session.get(Claim, parcel.claim_id).maintainer_id)


def request(session, maintainer):
    return personal_data.request_erasure(session=session, actor=ACTOR, maintainer=maintainer)


def test_erasure_on_request_takes_what_is_not_in_flight_at_once(session, settings, stocked):
    first, second = parcels(session, settings, 2, printed=1)
    ship(session, settings, first.reference)
    exceptions.mark_returned(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        reference=first.reference,
    )
    person = owner_of(session, first)
    before = ledger(session)

    outcome = request(session, person)

    returned = parcel_of(session, first.claim_id)
    assert returned.personal_data_erased_at is not None  # back with us: nothing in flight
    assert returned.address_lines == [] and returned.phone == ""
    assert parcel_of(session, second.claim_id).address_lines  # someone else's
    assert (outcome.claims_erased, outcome.claims_waiting) == ([first.claim_id], [])
    assert outcome.request.completed_at is not None
    session.expire_all()
    person = session.get(Maintainer, person.id)
    # The display name goes; the PyPI username and email stay (see the module's docstring).
    assert person.display_name == "" and person.username and person.email
    assert ledger(session) == before
    actions = [
        e.action
        for e in session.exec(
            select(AuditEvent).where(col(AuditEvent.action).startswith("personal_data."))
        )
    ]
    assert actions == [
        "personal_data.erased",
        "personal_data.erasure_requested",
        "personal_data.erasure_completed",
    ]


def test_a_parcel_in_flight_keeps_its_address_until_its_claim_ends(session, settings, stocked):
    (parcel,) = parcels(session, settings, 1, printed=1)
    ship(session, settings, parcel.reference)
    person = owner_of(session, parcel)

    outcome = request(session, person)
    again = request(session, person)

    assert (outcome.claims_erased, outcome.claims_waiting) == ([], [parcel.claim_id])
    assert again.request.id == outcome.request.id  # one open request, however often asked
    assert parcel_of(session, parcel.claim_id).address_lines
    [view] = personal_data.erasure_requests(session=session)
    assert (view.username, view.claims_waiting) == (person.username, [parcel.claim_id])
    assert purge(session, settings).requests_completed == 0

    deliver(session, parcel.reference)
    summary = purge(session, settings)  # the same day: a request does not wait 30 days

    assert (summary.claims, summary.requests_completed) == (1, 1)
    assert parcel_of(session, parcel.claim_id).personal_data_erased_at is not None
    assert session.get(ErasureRequest, outcome.request.id).completed_at is not None
    assert personal_data.pending_erasure(session=session, maintainer=person) is None


def test_a_lost_parcel_waiting_for_its_replacement_is_in_flight(session, settings, stocked):
    (parcel,) = parcels(session, settings, 1, printed=1)
    ship(session, settings, parcel.reference)
    lose(session, parcel.reference)

    outcome = request(session, owner_of(session, parcel))

    assert outcome.claims_waiting == [parcel.claim_id]
    problem = session.exec(select(ParcelException)).one()
    replacement = exceptions.approve_replacement(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        exception_id=problem.id,
    )
    assert replacement.address_lines == parcel_of(session, parcel.claim_id).address_lines != []


def test_the_download_holds_everything_about_the_person_and_nobody_else(session, settings, stocked):
    (parcel,) = parcels(session, settings, 1, printed=1)
    _other_person, other = redeem_parcel(
        session, settings, address={**BERLIN, "street_address": "Pariser Platz 2", "name": "Bo"}
    )
    ship(session, settings, parcel.reference)
    person = owner_of(session, parcel)
    session.add(
        SecurityKey(
            maintainer_id=person.id,
            credential_id="cred-id-of-the-key",
            public_key=b"cose-public-key",
            name="Blue key",
            aaguid="42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3",
            attestation_format="packed",
            attestation_object=b"attestation-blob",
            client_data=b"client-data-blob",
            model="Google Titan Security Key v2",
            outcome="titan",
            created_at=utcnow(),
        )
    )
    session.flush()

    document = personal_data.export_personal_data(session=session, actor=ACTOR, maintainer=person)

    assert document["profile"]["email"] == person.email
    assert [r["project"] for r in document["project_roles"]] == ["famous"]
    [claim] = document["claims"]
    assert claim["items"] == {USB_A: 1, USB_C: 1}
    [sent] = claim["parcels"]
    assert sent["address_lines"][:2] == ["Ada Demo", "Unter den Linden 1"]
    assert (sent["phone"], sent["tracking_number"]) == (PHONE, "00340434161234567890")
    assert document["security_keys"][0]["name"] == "Blue key"
    assert "claim_redeemed" in [m["purpose"] for m in document["mail"]]
    actions = [e["action"] for e in document["audit_events"]]
    assert {"maintainer.created", "claim.issued", "shipment.created", "claim.shipped"} <= set(
        actions
    )
    written = json.dumps(document)
    assert "Pariser Platz" not in written and other.reference not in written
    assert "cred-id-of-the-key" not in written and "attestation-blob" not in written
    downloaded = session.exec(
        select(AuditEvent).where(AuditEvent.action == "personal_data.downloaded")
    ).one()
    assert downloaded.subject_id == str(person.id)


def test_purge_personal_data_from_the_command_line(app, session, settings, stocked):
    (parcel,) = parcels(session, settings, 1)
    claims.cancel_claim(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        maintainer=owner_of(session, parcel),
        claim_id=parcel.claim_id,
    )
    age(session, parcel.claim_id)
    session.commit()
    runner = app.test_cli_runner()

    first = runner.invoke(args=["claims", "purge-personal-data", "--json"])
    second = runner.invoke(args=["claims", "purge-personal-data", "--json"])
    words = runner.invoke(args=["claims", "purge-personal-data"])

    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert {k: report[k] for k in ("claims", "shipments")} == {"claims": 1, "shipments": 1}
    assert report["cutoff"] < (utcnow() - timedelta(days=29)).isoformat()
    assert {k: json.loads(second.output)[k] for k in ("claims", "shipments")} == {
        "claims": 0,
        "shipments": 0,
    }
    assert words.exit_code == 0 and "Erased the personal data of 0 parcel(s)" in words.output
    assert parcel_of(session, parcel.claim_id).personal_data_erased_at is not None
