"""Label runs: one live run per claim, progress recorded as pages are done, claims moved only
when the PDF is complete, failures and dead processes let go of their claims."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from pypdf import PdfReader
from sqlmodel import select

from adapters.addresses import validate_address
from core.audit import AuditEvent
from core.db import utcnow
from core.mail import OutboxMailer
from distribution.claims import services as claims
from distribution.errors import ClaimLocked, RunNotFound
from distribution.models import Claim, LabelRun, Shipment
from distribution.shipping import fulfilment, label_runs
from distribution.shipping.labels import LabelError
from tests.factories import (
    ACTOR,
    BERLIN,
    USB_A,
    USB_C,
    database_on,
    print_labels,
    redeem_parcel,
    stock_famous_project,
)


@pytest.fixture
def waiting(session, settings):
    """Three redeemed claims waiting for labels; their maintainers by claim id."""
    stock_famous_project(session, {USB_A: 6, USB_C: 6})
    people = {}
    for _ in range(3):
        person, shipment = redeem_parcel(session, settings)
        people[shipment.claim_id] = person
    return people


def queue_ids(session, settings):
    return [
        q.claim_id
        for q in fulfilment.label_queue(session=session, base_url=settings.base_url).parcels
    ]


def test_a_run_moves_its_claims_only_once_the_pdf_is_complete(session, settings, waiting):
    ids = list(waiting)
    run = label_runs.start_run(session=session, actor=ACTOR, claim_ids=ids[:2], layout="4x6")

    assert (run.status, run.pages_done, run.pages_total) == ("rendering", 0, 4)
    assert queue_ids(session, settings) == ids[2:]  # in a live run: not offered again
    assert {session.get(Claim, i).status for i in ids} == {"redeemed"}
    with pytest.raises(ClaimLocked, match="1 of the 2 selected parcels changed"):
        label_runs.start_run(session=session, actor=ACTOR, claim_ids=ids[1:], layout="4x6")
    assert len(session.exec(select(LabelRun)).all()) == 1  # the refused run left nothing

    seen = []
    done = label_runs.execute_run(
        database=database_on(session),
        settings=settings,
        run_id=run.id,
        on_progress=lambda pages, total: seen.append((pages, total)),
    )
    session.expire_all()

    assert seen[0] == (0, 4) and seen[-1] == (4, 4)
    assert (done.status, done.printed, done.skipped, done.pages_done) == ("done", 2, [], 4)
    reader = PdfReader(io.BytesIO(done.pdf))
    assert len(reader.pages) == 4
    references = [
        session.exec(select(Shipment).where(Shipment.claim_id == i)).one().reference
        for i in ids[:2]
    ]
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert all(reference in text for reference in references)
    assert [session.get(Claim, i).status for i in ids] == [
        "label_printed",
        "label_printed",
        "redeemed",
    ]
    assert all(session.get(Claim, i).label_run_id is None for i in ids)
    printed = session.exec(select(AuditEvent).where(AuditEvent.action == "labels.printed")).one()
    assert printed.details["references"] == references


def test_a_claim_cancelled_during_the_run_is_named_for_the_bin(session, settings, waiting):
    ids = list(waiting)
    run = label_runs.start_run(session=session, actor=ACTOR, claim_ids=ids, layout="a4")
    claims.cancel_claim(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        maintainer=waiting[ids[0]],
        claim_id=ids[0],
    )
    session.flush()

    done = label_runs.execute_run(database=database_on(session), settings=settings, run_id=run.id)
    session.expire_all()

    cancelled = session.exec(select(Shipment).where(Shipment.claim_id == ids[0])).one()
    assert done.skipped == [cancelled.reference] and done.printed == 2
    assert session.get(Claim, ids[0]).status == "cancelled"
    assert len(PdfReader(io.BytesIO(done.pdf)).pages) == 3  # 6 panels, two to an A4 sheet


def test_the_address_cannot_change_under_the_printer(session, settings, waiting):
    claim_id = next(iter(waiting))
    label_runs.start_run(session=session, actor=ACTOR, claim_ids=[claim_id], layout="4x6")
    with pytest.raises(ClaimLocked, match="being printed right now"):
        claims.change_address(
            session=session,
            actor=ACTOR,
            maintainer=waiting[claim_id],
            claim_id=claim_id,
            recipient=claims.Recipient(
                validate_address(BERLIN, served=settings.countries), "+49301234567", "Ada"
            ),
        )


def test_a_failed_run_says_why_and_lets_go_of_its_claims(session, settings, waiting):
    ids = list(waiting)
    broken = session.exec(select(Shipment).where(Shipment.claim_id == ids[0])).one()
    broken.reference = "SKÄ"  # not ASCII: no Code128 can carry it
    session.flush()
    run = label_runs.start_run(session=session, actor=ACTOR, claim_ids=ids, layout="4x6")

    with pytest.raises(LabelError):
        label_runs.execute_run(database=database_on(session), settings=settings, run_id=run.id)
    session.expire_all()

    failed = session.get(LabelRun, run.id)
    assert failed.status == "failed" and "Code128" in failed.error and failed.pdf is None
    assert {session.get(Claim, i).status for i in ids} == {"redeemed"}
    assert queue_ids(session, settings) == ids
    with pytest.raises(RunNotFound, match="no PDF"):
        label_runs.run_pdf(session=session, actor=ACTOR, run_id=run.id)


def test_a_run_whose_process_died_gives_its_claims_back(session, settings, waiting):
    ids = list(waiting)
    dead = label_runs.start_run(session=session, actor=ACTOR, claim_ids=ids, layout="4x6")
    dead.heartbeat_at = utcnow() - LabelRun.STALE_AFTER - timedelta(seconds=1)
    session.flush()

    view = label_runs.get_run(session=session, run_id=dead.id)
    assert view.interrupted and not view.rendering
    assert queue_ids(session, settings) == ids
    again = label_runs.start_run(session=session, actor=ACTOR, claim_ids=ids, layout="4x6")
    assert {session.get(Claim, i).label_run_id for i in ids} == {again.id}


def test_a_reprint_changes_nothing_but_is_audited(session, settings, waiting):
    ids = list(waiting)
    with pytest.raises(ClaimLocked):  # nothing printed yet to print again
        label_runs.start_run(
            session=session, actor=ACTOR, claim_ids=ids[:1], layout="4x6", reprint=True
        )
    print_labels(session, settings, ids[:1])

    again = print_labels(session, settings, ids[:1], reprint=True, layout="letter")

    assert again.status == "done" and again.reprint and again.printed == 1
    assert len(PdfReader(io.BytesIO(again.pdf)).pages) == 1  # label and slip share a sheet
    assert session.get(Claim, ids[0]).status == "label_printed"
    actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert actions.count("labels.printed") == 1 and actions.count("labels.reprinted") == 1


def test_a_reprint_names_the_parcels_voided_or_shipped_while_it_rendered(
    session, settings, waiting
):
    ids = list(waiting)
    print_labels(session, settings, ids)
    voided, shipped, kept = (
        session.exec(select(Shipment).where(Shipment.claim_id == i)).one().reference for i in ids
    )
    run = label_runs.start_run(
        session=session, actor=ACTOR, claim_ids=ids, layout="4x6", reprint=True
    )

    def meanwhile(done: int, _total: int) -> None:
        """The desk voids one label and ships another parcel once the reprint renders."""
        if done:
            return
        fulfilment.void_label(session=session, actor=ACTOR, reference=voided, reason="torn")
        fulfilment.ship_parcel(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=ACTOR,
            reference=shipped,
            carrier="DHL",
            tracking_number="00340434161234567890",
        )
        session.flush()

    done = label_runs.execute_run(
        database=database_on(session), settings=settings, run_id=run.id, on_progress=meanwhile
    )

    # All three labels were printed again; the voided and the shipped one are for the bin.
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(done.pdf)).pages)
    assert all(reference in text for reference in (voided, shipped, kept))
    assert (done.printed, sorted(done.skipped)) == (1, sorted([voided, shipped]))
