"""The after-commit queue: side effects run once, after the outermost commit, and a rolled-back
savepoint drops only what was registered inside it."""

from __future__ import annotations

import json
import logging

import pytest

from core.after_commit import on_commit
from distribution.claims import services as claims
from tests.factories import ACTOR, USB_A, make_owner, stock_famous_project


def state_changes(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (line["action"], line["subject_id"])
        for line in (json.loads(r.getMessage()) for r in caplog.records)
        if line.get("event") == "state_change"
    ]


def test_a_cancel_that_frees_keys_for_one_of_two_waiting_tells_the_first_at_once(
    session, mailer, settings, mailbox, caplog
):
    """Keys for one, two people waiting: the first is offered a code inside a savepoint that
    commits, the second's reservation is refused inside one that rolls back. Only the second's
    attempt is forgotten: the cancel's and the offer's log lines are written and the first
    waiter's code reaches the SMTP server when the transaction commits, not later by cron."""
    caplog.set_level(logging.INFO, logger="keys.state_change")
    stock_famous_project(session, {USB_A: 2})  # one claim's worth
    holder, first, second = (make_owner(session, "famous", country="DE") for _ in range(3))
    holding = claims.issue_claim_code(
        session=session, mailer=mailer, settings=settings, actor=ACTOR, maintainer=holder
    )
    assert isinstance(holding, claims.IssuedCode)
    for person in (first, second):
        place = claims.issue_claim_code(
            session=session, mailer=mailer, settings=settings, actor=ACTOR, maintainer=person
        )
        assert isinstance(place, claims.WaitlistPlace)
    session.commit()
    mailbox.messages.clear()
    caplog.clear()

    claims.cancel_claim(
        session=session,
        mailer=mailer,
        settings=settings,
        actor=ACTOR,
        maintainer=holder,
        claim_id=holding.claim.id,
    )
    offered = claims.active_claim(session=session, maintainer=first)
    assert offered is not None
    assert mailbox.messages == [] and state_changes(caplog) == []  # nothing before the commit

    session.commit()

    (mail,) = mailbox.to(first.email)
    assert "Your claim code" in mail["Subject"]
    assert mailbox.to(second.email) == []
    changes = state_changes(caplog)
    assert ("claim.cancelled", str(holding.claim.id)) in changes
    assert ("claim.issued", str(offered.id)) in changes


def test_a_released_savepoint_waits_for_the_outer_commit(session):
    ran: list[str] = []
    with session.begin_nested():
        on_commit(session, lambda: ran.append("inside"))
    assert ran == []
    session.commit()
    assert ran == ["inside"]


def test_a_rolled_back_savepoint_forgets_only_its_own_work(session):
    ran: list[str] = []
    on_commit(session, lambda: ran.append("before"))
    with session.begin_nested():
        on_commit(session, lambda: ran.append("kept"))
    nested = session.begin_nested()
    on_commit(session, lambda: ran.append("dropped"))
    with session.begin_nested():
        on_commit(session, lambda: ran.append("dropped with its parent"))
    nested.rollback()
    on_commit(session, lambda: ran.append("after"))
    session.commit()
    assert ran == ["before", "kept", "after"]


def test_a_rollback_runs_nothing_and_the_next_transaction_starts_empty(session):
    ran: list[str] = []
    on_commit(session, lambda: ran.append("rolled back"))
    session.rollback()
    session.commit()
    assert ran == []
    on_commit(session, lambda: ran.append("committed"))
    session.commit()
    assert ran == ["committed"]


def test_a_failing_callback_does_not_stop_the_others(session, caplog):
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("relay gone")

    on_commit(session, fail)
    on_commit(session, lambda: ran.append("still"))
    session.commit()
    assert ran == ["still"]
    assert "An after-commit callback failed" in caplog.text
