"""Page read-models: what a page that gathers many facts shows, read in one place, so that its
view stays a paragraph (read input, one call, render)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session

from accounts.models import Maintainer, SecurityKey
from core.settings import Settings
from distribution.claims import services as claims
from distribution.claims.decision import Decision, decide
from distribution.models import CLAIM_LIFECYCLE, Claim, ClaimAction, ParcelException, Shipment
from distribution.shipping import exceptions, fulfilment
from distribution.stock import services as stock


@dataclass(frozen=True)
class MyClaimPage:
    """Where a maintainer stands: the decision while they hold no claim; else the claim, what
    they can do with it now, its parcel, what went wrong with it and the keys counted."""

    claim: Claim | None
    decision: Decision | None
    waiting: int | None
    model_names: dict[str, str]
    actions: frozenset[ClaimAction] = frozenset()
    timeline: list[claims.TimelineStep] = field(default_factory=list)
    items: dict[str, int] = field(default_factory=dict)
    shipment: Shipment | None = None
    exceptions: list[ParcelException] = field(default_factory=list)
    acceptances: list[SecurityKey] = field(default_factory=list)
    cancellable: bool = False


def my_claim_page(*, session: Session, settings: Settings, maintainer: Maintainer) -> MyClaimPage:
    claim = claims.active_claim(session=session, maintainer=maintainer)
    waiting = claims.waitlist_position(session=session, maintainer=maintainer)
    model_names = {model.sku: model.name for model in stock.key_models(session=session)}
    if claim is None:
        decision = decide(
            session=session, settings=settings, maintainer=maintainer, country=maintainer.country
        )
        return MyClaimPage(None, decision, waiting, model_names)
    return MyClaimPage(
        claim,
        None,
        waiting,
        model_names,
        actions=CLAIM_LIFECYCLE.actions(claim.status),
        timeline=claims.timeline(session=session, claim=claim),
        items=claims.items_of(session=session, claim=claim),
        shipment=claims.shipment_of(session=session, claim=claim),
        exceptions=exceptions.exceptions_of(session=session, claim=claim),
        acceptances=fulfilment.acceptances(session=session, claim=claim),
        cancellable=claims.cancellable(session=session, claim=claim),
    )
