"""Lifecycles: which actions a status allows, the refusal a person reads, and what the loser of
a race is told."""

from __future__ import annotations

import pytest

from distribution.errors import ClaimLocked, CodeUsed
from distribution.models import CLAIM_LIFECYCLE, ClaimAction, ClaimStatus

S = ClaimStatus

# The life of a claim as DESIGN.md draws it; the action table must produce exactly these moves.
DESIGN = {
    S.ISSUED: {S.REDEEMED, S.EXPIRED, S.CANCELLED},
    S.REDEEMED: {S.LABEL_PRINTED, S.CANCELLED},
    S.LABEL_PRINTED: {S.SHIPPED, S.REDEEMED, S.CANCELLED},
    S.SHIPPED: {S.DELIVERED, S.RETURNED, S.LOST},
    S.DELIVERED: {S.ACTIVATED, S.REDEEMED},
    S.RETURNED: {S.REDEEMED, S.CANCELLED},
    S.LOST: {S.REDEEMED},
    S.ACTIVATED: {S.REDEEMED},
    S.EXPIRED: set(),
    S.CANCELLED: set(),
}


def test_the_action_table_draws_the_life_of_a_claim():
    assert CLAIM_LIFECYCLE.transitions() == {s: frozenset(to) for s, to in DESIGN.items()}


def test_a_page_asks_which_actions_a_status_allows():
    assert CLAIM_LIFECYCLE.actions("label_printed") == {
        ClaimAction.CANCEL,
        ClaimAction.REPRINT_LABEL,
        ClaimAction.VOID_LABEL,
        ClaimAction.SHIP,
    }
    assert CLAIM_LIFECYCLE.actions("cancelled") == frozenset()
    assert CLAIM_LIFECYCLE.statuses_allowing(ClaimAction.CHANGE_ADDRESS) == ("redeemed", "returned")


def test_a_refused_action_says_why_in_the_tables_words():
    with pytest.raises(ClaimLocked, match="Parcel SK1 is shipped: only a parcel with a printed"):
        CLAIM_LIFECYCLE.goes_to(ClaimAction.SHIP, "shipped", subject="parcel SK1")
    assert CLAIM_LIFECYCLE.goes_to(ClaimAction.SHIP, "label_printed", subject="x") == S.SHIPPED
    # An action that leaves the status as it is goes to where it stands.
    assert CLAIM_LIFECYCLE.goes_to(ClaimAction.REPRINT_LABEL, "label_printed", subject="x") == (
        S.LABEL_PRINTED
    )


def test_the_loser_of_a_race_is_told_what_the_winner_did():
    lost = CLAIM_LIFECYCLE.lost_race(ClaimAction.SHIP, "shipped", subject="parcel SK1")
    assert isinstance(lost, ClaimLocked)
    assert lost.message == "Parcel SK1 was shipped a moment ago by someone else. Reload the page."
    # Cancelled by the maintainer while the desk shipped: the desk reads what happened instead.
    lost = CLAIM_LIFECYCLE.lost_race(ClaimAction.SHIP, "cancelled", subject="parcel SK1")
    assert lost.message == "Parcel SK1 was cancelled a moment ago. Reload the page."
    # An action with its own error keeps it for the race too.
    lost = CLAIM_LIFECYCLE.lost_race(ClaimAction.REDEEM, "redeemed", subject="claim 3")
    assert isinstance(lost, CodeUsed) and "changed a moment ago" in lost.message
    # Nothing in the table went there: say where it stands now.
    lost = CLAIM_LIFECYCLE.lost_race(ClaimAction.REDEEM, "expired", subject="claim 3")
    assert lost.message == "Claim 3 changed a moment ago: it is now expired. Reload the page."
