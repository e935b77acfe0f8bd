"""My claim: one page that says where the maintainer stands, from the decision to the keys."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from accounts.access import current_maintainer, maintainer_required
from accounts.forms import ConfirmForm
from core.db import get_session
from core.settings import get_settings
from distribution.journey.pages import my_claim_page

bp = Blueprint("journey", __name__)


@bp.get("/claim")
@maintainer_required
def my_claim() -> ResponseReturnValue:
    page = my_claim_page(
        session=get_session(), settings=get_settings(), maintainer=current_maintainer()
    )
    return render_template("distribution/my_claim.html", form=ConfirmForm(), **vars(page))
