"""A maintainer's personal data: download everything held about them, ask for its erasure; and
the erasure requests as programme staff see them."""

from __future__ import annotations

import json

from flask import Blueprint, flash, make_response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from accounts.access import (
    current_maintainer,
    maintainer_required,
    staff_required,
)
from accounts.models import StaffRole
from accounts.services import actor_for
from core.db import get_session, utcnow
from distribution.privacy import services as personal_data
from distribution.privacy.forms import ErasureForm

bp = Blueprint("personal_data", __name__)


@bp.get("/account/data")
@maintainer_required
def my_data() -> ResponseReturnValue:
    return _render(ErasureForm(formdata=None))


@bp.get("/account/data/download")
@maintainer_required
def download() -> ResponseReturnValue:
    document = personal_data.export_personal_data(
        session=get_session(), actor=actor_for(current_user), maintainer=current_maintainer()
    )
    response = make_response(json.dumps(document, indent=2, ensure_ascii=False))
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    response.headers["Content-Disposition"] = (
        f'attachment; filename="security-key-giveaway-my-data-{utcnow():%Y-%m-%d}.json"'
    )
    return response


@bp.post("/account/data/erase")
@maintainer_required
def erase() -> ResponseReturnValue:
    form = ErasureForm()
    if not form.validate_on_submit():
        return _render(form), 400
    outcome = personal_data.request_erasure(
        session=get_session(), actor=actor_for(current_user), maintainer=current_maintainer()
    )
    if outcome.claims_waiting:
        flash(
            "We erased what could go now. A parcel of yours is still waiting to be sent or on "
            "its way, so we keep its address until the claim ends, and erase it then. Your "
            "request is recorded, and programme staff can see it.",
            "info",
        )
    else:
        flash("Your names, phone numbers and addresses are erased.", "success")
    return redirect(url_for("personal_data.my_data"))


def _render(form: ErasureForm) -> str:
    return render_template(
        "distribution/my_data.html",
        form=form,
        pending=personal_data.pending_erasure(
            session=get_session(), maintainer=current_maintainer()
        ),
    )


@bp.get("/staff/erasure-requests")
@staff_required(StaffRole.PROGRAMME, StaffRole.VIEWER)
def erasure_requests() -> ResponseReturnValue:
    return render_template(
        "distribution/erasure_requests.html",
        requests=personal_data.erasure_requests(session=get_session()),
    )
