"""Claims: issuing, redeeming, cancelling, expiring and the waiting list, with their messages."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from accounts.services import actor_for
from adapters.addresses import validate_address
from core.audit import AuditEvent
from core.mail import OutboxMailer, OutboxMessage
from distribution.claims import codes
from distribution.claims import services as claims
from distribution.errors import (
    AlreadyClaimed,
    ClaimLocked,
    ClaimNotFound,
    CodeExpired,
    CodeTypo,
    CodeUnknown,
    CodeUsed,
    InvalidChoice,
    NotEligible,
)
from distribution.models import Claim, ClaimStatus, Shipment, WaitlistEntry
from distribution.stock import services as stock
from eligibility.services import ensure_project
from tests.factories import (
    ACTOR,
    USB_A,
    USB_C,
    import_statistics,
    make_maintainer,
    make_owner,
    receive_keys,
)

A, C = USB_A, USB_C
BERLIN = {
    "country_code": "DE",
    "city": "Berlin",
    "postal_code": "10117",
    "street_address": "Unter den Linden 1",
    "name": "Ada Demo",
}


@pytest.fixture
def mailer():
    return OutboxMailer()


@pytest.fixture
def programme(session):
    """Statistics in which the project "famous" is critical, and 4 keys of each model."""
    ensure_project(session=session, name="famous")
    import_statistics(session, "project,downloads\nfamous,9\nx,1\n")
    receive_keys(session, {A: 4, C: 4}, "B1")


def eligible(session, **details):
    return make_owner(session, "famous", country=details.pop("country", "DE"), **details)


def issue(session, mailer, settings, maintainer):
    return claims.issue_claim_code(
        session=session,
        mailer=mailer,
        settings=settings,
        actor=actor_for(maintainer),
        maintainer=maintainer,
    )


def redeem(session, mailer, settings, maintainer, code, items=None, key="form-1"):
    return claims.redeem_claim(
        session=session,
        mailer=mailer,
        settings=settings,
        actor=actor_for(maintainer),
        maintainer=maintainer,
        code=code,
        items=items or {A: 1, C: 1},
        recipient=claims.Recipient(
            validate_address(BERLIN, served=settings.countries), "+49301234567", "Ada Demo"
        ),
        idempotency_key=key,
    )


def outbox(session, maintainer):
    return session.exec(
        select(OutboxMessage).where(OutboxMessage.recipient == maintainer.email)
    ).all()


def test_an_eligible_maintainer_gets_a_code_that_reserves_keys(
    session, settings, mailer, programme
):
    maintainer = eligible(session)
    issued = issue(session, mailer, settings, maintainer)

    assert codes.normalize(issued.code)
    assert issued.claim.code_hash == codes.code_hash(issued.code)
    assert issued.code.replace("-", "") not in issued.claim.code_hash
    assert (issued.claim.status, issued.claim.keys_reserved) == ("issued", 2)
    assert issued.claim.expires_at - issued.claim.issued_at == timedelta(days=30)
    assert stock.stock_figures(session=session).reserved == 2
    assert issued.code in outbox(session, maintainer)[-1].body

    with pytest.raises(AlreadyClaimed, match="claimed your keys already"):
        issue(session, mailer, settings, maintainer)


def test_a_maintainer_who_is_not_eligible_gets_the_reasons(session, settings, mailer, programme):
    outsider = make_maintainer(session, country="BR")
    with pytest.raises(NotEligible) as refusal:
        issue(session, mailer, settings, outsider)
    assert "Brazil" in refusal.value.message
    assert session.exec(select(Claim)).all() == []


def test_when_keys_run_out_people_wait_and_freed_keys_are_offered_in_order(
    session, settings, mailer, programme
):
    holders = [eligible(session) for _ in range(4)]
    issued = [issue(session, mailer, settings, m) for m in holders]  # 8 keys: all of them
    first, second = eligible(session), eligible(session)
    assert issue(session, mailer, settings, first) == claims.WaitlistPlace(1)
    assert issue(session, mailer, settings, second) == claims.WaitlistPlace(2)
    assert issue(session, mailer, settings, first) == claims.WaitlistPlace(1)  # not twice

    claims.cancel_claim(
        session=session,
        mailer=mailer,
        settings=settings,
        actor=ACTOR,
        maintainer=holders[0],
        claim_id=issued[0].claim.id,
    )

    offered = claims.active_claim(session=session, maintainer=first)
    assert offered is not None and offered.status == "issued"
    assert "Your claim code" in outbox(session, first)[-1].subject
    assert claims.active_claim(session=session, maintainer=second) is None
    assert (
        session.exec(select(WaitlistEntry).where(WaitlistEntry.maintainer_id == first.id))
        .one()
        .claim_id
        == offered.id
    )


def test_redeeming_allocates_the_chosen_models(session, settings, mailer, programme):
    maintainer = eligible(session)
    issued = issue(session, mailer, settings, maintainer)

    shipment = redeem(session, mailer, settings, maintainer, issued.code, {A: 2})

    claim = session.get(Claim, issued.claim.id)
    assert (claim.status, claim.keys_reserved) == ("redeemed", 0)
    assert claims.items_of(session=session, claim=claim) == {A: 2}
    assert shipment.country == "DE" and shipment.address_lines[-1] == "GERMANY"
    figures = stock.stock_figures(session=session)
    assert (figures.reserved, figures.allocated, figures.available) == (0, 2, 6)
    assert figures.models[0].available == 2
    assert "Unter den Linden 1" in outbox(session, maintainer)[-1].body


def test_a_double_submitted_redemption_makes_one_shipment(session, settings, mailer, programme):
    maintainer = eligible(session)
    issued = issue(session, mailer, settings, maintainer)
    first = redeem(session, mailer, settings, maintainer, issued.code, key="same-form")
    again = redeem(session, mailer, settings, maintainer, issued.code, key="same-form")
    assert again.id == first.id
    assert len(session.exec(select(Shipment)).all()) == 1
    with pytest.raises(CodeUsed, match="already used"):
        redeem(session, mailer, settings, maintainer, issued.code, key="another-form")


def test_a_redemption_that_finds_its_code_spent_holds_no_keys(session, settings, mailer, programme):
    """Two requests redeem one code at once (a double click reaching two servers) and the
    second read the code as unspent before the first committed. Its view answers and commits
    as for any refused form, so the refusal must leave nothing behind."""
    maintainer = eligible(session)
    issued = issue(session, mailer, settings, maintainer)
    before = stock.stock_figures(session=session)
    # The first request spends the code; this session still holds the claim as issued.
    session.execute(
        sa.update(Claim).where(col(Claim.id) == issued.claim.id).values(status="redeemed"),
        execution_options={"synchronize_session": False},
    )
    with pytest.raises(CodeUsed, match="changed a moment ago"):
        redeem(session, mailer, settings, maintainer, issued.code, key="second-tab")
    after = stock.stock_figures(session=session)
    assert (after.reserved, after.allocated) == (before.reserved, before.allocated) == (2, 0)


def test_wrong_expired_and_foreign_codes_get_distinct_messages(
    session, settings, mailer, programme
):
    owner, other = eligible(session), eligible(session)
    issued = issue(session, mailer, settings, owner)
    typo = issued.code[:-3] + ("0" if issued.code[-3] != "0" else "1") + issued.code[-2:]
    with pytest.raises(CodeTypo, match="mistyped"):
        redeem(session, mailer, settings, owner, typo)
    never = codes.new_code()
    with pytest.raises(CodeUnknown) as unknown:
        redeem(session, mailer, settings, owner, never)
    with pytest.raises(CodeUnknown) as foreign:
        redeem(session, mailer, settings, other, issued.code)
    assert unknown.value.message == foreign.value.message  # nothing about other people

    claim = session.get(Claim, issued.claim.id)
    claim.expires_at = claim.issued_at - timedelta(seconds=1)
    session.flush()
    with pytest.raises(CodeExpired, match="expired on"):
        redeem(session, mailer, settings, owner, issued.code)


@pytest.mark.parametrize("items", [{A: 3}, {A: 1, C: 2}, {A: 0}, {A: -1, C: 2}])
def test_a_choice_outside_the_allowance_is_refused(session, settings, mailer, programme, items):
    maintainer = eligible(session)
    issued = issue(session, mailer, settings, maintainer)
    with pytest.raises(InvalidChoice, match="between 1 and 2 keys"):
        redeem(session, mailer, settings, maintainer, issued.code, items)
    assert session.get(Claim, issued.claim.id).status == "issued"


def test_cancelling_returns_the_keys_until_the_parcel_ships(session, settings, mailer, programme):
    maintainer = eligible(session)
    issued = issue(session, mailer, settings, maintainer)
    redeem(session, mailer, settings, maintainer, issued.code, {C: 2})
    claims.cancel_claim(
        session=session,
        mailer=mailer,
        settings=settings,
        actor=ACTOR,
        maintainer=maintainer,
        claim_id=issued.claim.id,
    )
    figures = stock.stock_figures(session=session)
    assert (figures.allocated, figures.available) == (0, 8)
    assert session.get(Claim, issued.claim.id).status == ClaimStatus.CANCELLED
    # Sent again (its answer lost), the cancel answers the same and gives nothing back twice.
    again = claims.cancel_claim(
        session=session,
        mailer=mailer,
        settings=settings,
        actor=ACTOR,
        maintainer=maintainer,
        claim_id=issued.claim.id,
    )
    assert again.status == ClaimStatus.CANCELLED
    assert stock.stock_figures(session=session) == figures
    assert len(cancellations(session, issued.claim.id)) == 1
    # With the claim cancelled the maintainer may claim again.
    assert issue(session, mailer, settings, maintainer).claim.status == "issued"


def test_a_cancel_that_lost_the_race_to_its_twin_answers_like_it(
    session, settings, mailer, programme
):
    """A double click reaches two servers: both read the claim as issued, and the first
    cancels it. The second must neither fail nor give the keys back a second time."""
    maintainer = eligible(session)
    issued = issue(session, mailer, settings, maintainer)
    before = stock.stock_figures(session=session)
    # The twin cancels it; this session still holds the claim as issued.
    session.execute(
        sa.update(Claim).where(col(Claim.id) == issued.claim.id).values(status="cancelled"),
        execution_options={"synchronize_session": False},
    )

    claim = claims.cancel_claim(
        session=session,
        mailer=mailer,
        settings=settings,
        actor=ACTOR,
        maintainer=maintainer,
        claim_id=issued.claim.id,
    )

    assert claim.status == ClaimStatus.CANCELLED
    assert stock.stock_figures(session=session) == before  # the twin gave them back
    assert cancellations(session, issued.claim.id) == []  # the twin's, not recorded here


def cancellations(session, claim_id):
    return session.exec(
        select(AuditEvent).where(
            AuditEvent.action == "claim.cancelled", AuditEvent.subject_id == str(claim_id)
        )
    ).all()


def test_a_redemption_form_answers_only_for_the_claim_it_was_sent_for(
    session, settings, mailer, programme
):
    maintainer = eligible(session)
    old = issue(session, mailer, settings, maintainer)
    redeem(session, mailer, settings, maintainer, old.code, key="form-1")
    claims.cancel_claim(
        session=session,
        mailer=mailer,
        settings=settings,
        actor=ACTOR,
        maintainer=maintainer,
        claim_id=old.claim.id,
    )
    new = issue(session, mailer, settings, maintainer)

    with pytest.raises(claims.FormSentBefore, match="claim you have since cancelled"):
        redeem(session, mailer, settings, maintainer, old.code, key="form-1")
    with pytest.raises(claims.FormSentBefore, match="with another code"):
        redeem(session, mailer, settings, maintainer, new.code, key="form-1")
    with pytest.raises(CodeTypo):
        redeem(session, mailer, settings, maintainer, "not a code", key="form-1")
    assert session.get(Claim, new.claim.id).status == ClaimStatus.ISSUED
    assert len(session.exec(select(Shipment)).all()) == 1


def test_expiring_codes_frees_their_keys_once(session, settings, mailer, programme):
    maintainer = eligible(session)
    issued = issue(session, mailer, settings, maintainer)
    later = issued.claim.expires_at + timedelta(minutes=1)
    assert claims.expire_claims(session=session, mailer=mailer, settings=settings, now=later) == 1
    assert claims.expire_claims(session=session, mailer=mailer, settings=settings, now=later) == 0
    assert session.get(Claim, issued.claim.id).status == "expired"
    assert stock.stock_figures(session=session).available == 8


def test_only_the_owner_sees_a_claim(session, settings, mailer, programme):
    owner, other = eligible(session), eligible(session)
    issued = issue(session, mailer, settings, owner)
    with pytest.raises(ClaimNotFound, match="no such claim"):
        claims.cancel_claim(
            session=session,
            mailer=mailer,
            settings=settings,
            actor=ACTOR,
            maintainer=other,
            claim_id=issued.claim.id,
        )


def test_the_address_can_change_until_the_label_is_printed(session, settings, mailer, programme):
    maintainer = eligible(session)
    issued = issue(session, mailer, settings, maintainer)
    redeem(session, mailer, settings, maintainer, issued.code)
    tokyo = validate_address(
        {
            "country_code": "JP",
            "name": "Ada Demo",
            "street_address": "1-1 Marunouchi",
            "city": "Chiyoda-ku",
            "country_area": "Tokyo",
            "postal_code": "1000005",
        },
        served=settings.countries,
    )
    shipment = claims.change_address(
        session=session,
        actor=ACTOR,
        maintainer=maintainer,
        claim_id=issued.claim.id,
        recipient=claims.Recipient(tokyo, "+81312345678", "Ada Demo"),
    )
    assert shipment.country == "JP" and "Chiyoda-ku" in " ".join(shipment.address_lines)

    claim = session.get(Claim, issued.claim.id)
    claim.status = ClaimStatus.LABEL_PRINTED.value
    session.flush()
    with pytest.raises(ClaimLocked, match="label is printed"):
        claims.change_address(
            session=session,
            actor=ACTOR,
            maintainer=maintainer,
            claim_id=claim.id,
            recipient=claims.Recipient(tokyo, "+81312345678", "Ada Demo"),
        )


def test_a_waiting_maintainer_who_is_no_longer_eligible_is_skipped(
    session, settings, mailer, programme
):
    holders = [eligible(session) for _ in range(4)]
    issued = [issue(session, mailer, settings, m) for m in holders]
    moved_away, next_in_line = eligible(session), eligible(session)
    issue(session, mailer, settings, moved_away)
    issue(session, mailer, settings, next_in_line)
    moved_away.country = "BR"
    session.flush()

    claims.cancel_claim(
        session=session,
        mailer=mailer,
        settings=settings,
        actor=ACTOR,
        maintainer=holders[0],
        claim_id=issued[0].claim.id,
    )

    assert claims.active_claim(session=session, maintainer=moved_away) is None
    assert claims.active_claim(session=session, maintainer=next_in_line) is not None
