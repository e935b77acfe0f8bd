"""My claim: one page that says where the maintainer stands, from the decision to the keys."""

from __future__ import annotations

from flask import (
    Blueprint,
    render_template,
)
from flask.typing import ResponseReturnValue

from accounts.access import (
    current_maintainer,
    maintainer_required,
)
from accounts.forms import ConfirmForm
from core.db import get_session
from core.settings import get_settings
from distribution.claims import services as claims
from distribution.claims.decision import decide
from distribution.models import CLAIM_LIFECYCLE
from distribution.shipping import exceptions, fulfilment
from distribution.stock import services as stock

bp = Blueprint("journey", __name__)


# --- maintainers ------------------------------------------------------------------------------


@bp.get("/claim")
@maintainer_required
def my_claim() -> ResponseReturnValue:
    session, settings, maintainer = get_session(), get_settings(), current_maintainer()
    claim = claims.active_claim(session=session, maintainer=maintainer)
    return render_template(
        "distribution/my_claim.html",
        claim=claim,
        actions=CLAIM_LIFECYCLE.actions(claim.status) if claim else frozenset(),
        timeline=claims.timeline(session=session, claim=claim) if claim else [],
        items=claims.items_of(session=session, claim=claim) if claim else {},
        shipment=claims.shipment_of(session=session, claim=claim) if claim else None,
        decision=None
        if claim
        else decide(
            session=session, settings=settings, maintainer=maintainer, country=maintainer.country
        ),
        waiting=claims.waitlist_position(session=session, maintainer=maintainer),
        exceptions=exceptions.exceptions_of(session=session, claim=claim) if claim else [],
        acceptances=fulfilment.acceptances(session=session, claim=claim) if claim else [],
        cancellable=claim is not None and claims.cancellable(session=session, claim=claim),
        form=ConfirmForm(),
        model_names={model.sku: model.name for model in stock.key_models(session=session)},
    )
