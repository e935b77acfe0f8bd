"""Activation pages: maintainers register the keys they received (a small static script talks
to two JSON endpoints) and remove those that do not count; programme staff review keys that are
not counted as Titans."""

from __future__ import annotations

import hashlib

from flask import (
    Blueprint,
    flash,
    jsonify,
    redirect,
    render_template,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_user

from accounts.access import (
    current_maintainer,
    maintainer_rate_key,
    maintainer_required,
    staff_required,
    webauthn_metadata,
)
from accounts.forms import ConfirmForm
from accounts.models import StaffRole
from accounts.services import actor_for, normalize_email
from adapters import webauthn
from core.db import get_session
from core.settings import get_settings
from distribution.activation import services as activation
from distribution.activation.forms import KeyAcceptanceForm
from web.security import (
    KEY_SIGN_IN_PER_CLIENT,
    SIGN_IN_LINK_PER_IP,
    credential_in,
    json_object,
    json_refusal,
    limiter,
)

bp = Blueprint("activation", __name__)

REGISTRATIONS_PER_MAINTAINER = "30 per hour"
PYPI_TWO_FACTOR = "https://pypi.org/manage/account/two-factor/"


@bp.get("/claim/keys")
@maintainer_required
def my_keys() -> ResponseReturnValue:
    return _render_my_keys()


@bp.post("/claim/keys/<int:key_id>/remove")
@maintainer_required
def remove_key(key_id: int) -> ResponseReturnValue:
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("activation.my_keys"))
    try:
        activation.remove_key(
            session=get_session(),
            actor=actor_for(current_user),
            maintainer=current_maintainer(),
            key_id=key_id,
        )
    except activation.KeyProblem as problem:
        flash(problem.message, "error")
        return _render_my_keys(), problem.status_code
    flash("Key removed. You can no longer sign in with it here.", "success")
    return redirect(url_for("activation.my_keys"))


def _render_my_keys() -> str:
    return render_template(
        "distribution/keys.html",
        progress=activation.progress(session=get_session(), maintainer=current_maintainer()),
        form=ConfirmForm(),
        pypi_url=PYPI_TWO_FACTOR,
    )


@bp.post("/api/claim/keys/options")
@maintainer_required
@limiter.limit(REGISTRATIONS_PER_MAINTAINER, key_func=maintainer_rate_key)
def registration_options() -> ResponseReturnValue:
    options, token = activation.begin_registration(
        session=get_session(), settings=get_settings(), maintainer=current_maintainer()
    )
    return jsonify(token=token, publicKey=options)


@bp.post("/api/claim/keys")
@maintainer_required
@limiter.limit(REGISTRATIONS_PER_MAINTAINER, key_func=maintainer_rate_key)
def register_key() -> ResponseReturnValue:
    body = json_object()
    if body is None:
        return _refused(400, "Send the key's answer as a JSON object.")
    try:
        done = activation.finish_registration(
            session=get_session(),
            settings=get_settings(),
            metadata=webauthn_metadata(),
            actor=actor_for(current_user),
            maintainer=current_maintainer(),
            token=str(body.get("token", "")),
            response=credential_in(body),
            name=str(body.get("name", "")),
        )
    except (webauthn.WebAuthnError, activation.KeyProblem) as problem:
        # Answered here, not by the error handler, so the spent challenge stays spent.
        return _refused(problem.status_code, problem.message)
    flash(done.message, "success" if done.key.counts_as_titan else "info")
    if done.activated:
        flash("All your keys are registered: your claim is complete. Thank you!", "success")
    return jsonify(
        outcome=done.key.outcome,
        message=done.message,
        activated=done.activated,
        next=url_for("activation.my_keys"),
    )


# --- signing in with a key ---------------------------------------------------------------------

_NOT_IN = "You are not signed in"


def _json_email_key() -> str:
    """Per address and client: a stranger asking for someone's key sign-in stops only the
    stranger (the per-IP limit bounds how many addresses one client tries)."""
    email = normalize_email(str((json_object() or {}).get("email", "")))[:320]
    digest = hashlib.sha256(email.encode()).hexdigest()
    return f"key-sign-in:{digest}:{get_remote_address()}"


@bp.post("/api/sign-in/key/options")
@limiter.limit(SIGN_IN_LINK_PER_IP)
@limiter.limit(KEY_SIGN_IN_PER_CLIENT, key_func=_json_email_key)
def sign_in_options() -> ResponseReturnValue:
    email = str((json_object() or {}).get("email", "")).strip()
    if "@" not in email:
        return _refused(400, "Enter the email address of your PyPI account first.", _NOT_IN)
    options, token = activation.begin_sign_in(
        session=get_session(), settings=get_settings(), email=email
    )
    return jsonify(token=token, publicKey=options)


@bp.post("/api/sign-in/key")
@limiter.limit(SIGN_IN_LINK_PER_IP)
def sign_in_with_key() -> ResponseReturnValue:
    body = json_object()
    if body is None:
        return _refused(400, "Send the key's answer as a JSON object.", _NOT_IN)
    try:
        maintainer = activation.finish_sign_in(
            session=get_session(),
            settings=get_settings(),
            token=str(body.get("token", "")),
            response=credential_in(body),
        )
    except webauthn.WebAuthnError as problem:
        return _refused(problem.status_code, problem.message, _NOT_IN)
    login_user(maintainer)
    flash(f"Signed in as {maintainer.username} with your security key.", "success")
    return jsonify(next=url_for("accounts.account"))


def _refused(
    status: int, message: str, title: str = "The key was not registered"
) -> ResponseReturnValue:
    return json_refusal(status, title, message)


@bp.get("/staff/keys")
@staff_required(StaffRole.PROGRAMME, StaffRole.VIEWER)
def flagged_keys() -> ResponseReturnValue:
    return render_template(
        "distribution/flagged_keys.html", keys=activation.flagged_keys(session=get_session())
    )


@bp.get("/staff/keys/<int:key_id>")
@staff_required(StaffRole.PROGRAMME, StaffRole.VIEWER)
def key_detail(key_id: int) -> ResponseReturnValue:
    return _render_key(key_id, KeyAcceptanceForm(formdata=None))


@bp.post("/staff/keys/<int:key_id>/accept")
@staff_required(StaffRole.PROGRAMME)
def accept_key(key_id: int) -> ResponseReturnValue:
    form = KeyAcceptanceForm()
    if form.validate_on_submit():
        try:
            activation.accept_key(
                session=get_session(),
                actor=actor_for(current_user),
                key_id=key_id,
                reason=form.reason.data or "",
            )
        except activation.KeyProblem as problem:
            form.reason.errors = [problem.message]
        else:
            flash("The key counts as a Titan activation now.", "success")
            return redirect(url_for("activation.key_detail", key_id=key_id))
    return _render_key(key_id, form), 400


def _render_key(key_id: int, form: KeyAcceptanceForm) -> str:
    session = get_session()
    review = activation.review_key(session=session, key_id=key_id, metadata=webauthn_metadata())
    return render_template("distribution/key_detail.html", review=review, form=form)
