"""Staff's second factor on the web: after the password, register a first key (and receive the
recovery codes) or present one, or type a recovery code; and each staff member's own keys.

Between the password and the key, the session holds only who passed the password, for
``PENDING_FOR``; nobody is signed in until the key. A first key is registered only in a
browser that opened the staff member's enrolment link (``accounts.enrolment``): the session
keeps the link's token until the key spends it."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import (
    Blueprint,
    flash,
    jsonify,
    redirect,
    render_template,
    url_for,
)
from flask import session as cookie
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_user

from accounts import enrolment, second_factor, security_keys, services, sessions
from accounts.access import (
    current_staff,
    staff_required,
    webauthn_metadata,
)
from accounts.errors import AccountsError, InvalidCredentials
from accounts.forms import ConfirmForm, RecoveryCodeForm, StaffSignInForm
from accounts.models import Staff
from adapters import webauthn
from core.db import discard_changes, get_session, utcnow
from core.settings import get_settings
from web.security import STAFF_SIGN_IN_PER_IP, credential_in, json_object, json_refusal, limiter

bp = Blueprint("staff_keys", __name__)

PENDING_FOR = timedelta(minutes=10)
_PENDING = "staff_pending"
_CODES = "staff_recovery_codes"
_ENROLMENT = "staff_enrolment"


def start_second_factor(staff: Staff, next_page: str) -> ResponseReturnValue:
    """The password was right: remember who, and ask for the key (or a first key)."""
    cookie[_PENDING] = {"id": staff.get_id(), "since": utcnow().isoformat(), "next": next_page}
    sessions.rotate()  # the password step is a step of signing in
    return redirect(url_for("staff_keys.second_step"))


def _pending() -> Staff | None:
    pending = cookie.get(_PENDING)
    if not isinstance(pending, dict):
        return None
    since = datetime.fromisoformat(str(pending.get("since", "")) or "1970-01-01T00:00:00+00:00")
    if since < utcnow() - PENDING_FOR:
        return None
    user = services.load_user(session=get_session(), user_id=str(pending.get("id", "")))
    return user if isinstance(user, Staff) and user.active else None


def _finish(staff: Staff) -> str:
    """Sign the staff member in; where they were going."""
    pending = cookie.pop(_PENDING, {})
    login_user(staff)
    return str(pending.get("next") or url_for("accounts.staff_home"))


def _refused(status: int, message: str) -> ResponseReturnValue:
    return json_refusal(status, "Not signed in", message)


_SIGN_IN_FIRST = "Sign in with your email and password first (it lasts 10 minutes)."
_NEEDS_LINK = (
    "Your first key needs the enrolment link an administrator sends you by email. Open it in "
    "this browser, then sign in again."
)


@bp.get("/staff/enrol/<token>")
@limiter.limit(STAFF_SIGN_IN_PER_IP)
def enrol(token: str) -> ResponseReturnValue:
    """An enrolment link, opened: this browser may register the first key, after the password.
    (Opening it spends nothing: mail scanners that fetch links must not use it up.)"""
    try:
        staff = enrolment.check_link(session=get_session(), token=token)
    except AccountsError as problem:
        return render_template(
            "accounts/enrolment_problem.html", problem=problem
        ), problem.status_code
    cookie[_ENROLMENT] = token
    pending = _pending()
    if pending is not None and pending.id == staff.id:  # past the password already
        return redirect(url_for("staff_keys.second_step"))
    form = StaffSignInForm(formdata=None, email=staff.email)
    return render_template("accounts/staff_enrol_link.html", staff=staff, form=form)


def _enrolment_token(staff: Staff) -> str | None:
    """The enrolment link this browser opened, if it is ``staff``'s and still good."""
    token = cookie.get(_ENROLMENT)
    if not isinstance(token, str):
        return None
    try:
        enrolled = enrolment.check_link(session=get_session(), token=token)
    except AccountsError:
        return None
    return token if enrolled.id == staff.id else None


@bp.get("/staff/sign-in/key")
def second_step() -> ResponseReturnValue:
    staff = _pending()
    if staff is None:
        flash(_SIGN_IN_FIRST, "info")
        return redirect(url_for("accounts.staff_sign_in"))
    if second_factor.has_keys(session=get_session(), staff=staff):
        template = "accounts/staff_second_step.html"
    elif _enrolment_token(staff) is None:
        # The password alone: it may be stolen, so it cannot register the first key.
        return render_template("accounts/staff_enrol_needed.html", staff=staff), 403
    else:
        template = "accounts/staff_enrol.html"
    return render_template(
        template, staff=staff, form=ConfirmForm(), recovery_form=RecoveryCodeForm(formdata=None)
    )


@bp.post("/api/staff/sign-in/key/options")
@limiter.limit(STAFF_SIGN_IN_PER_IP)
def sign_in_options() -> ResponseReturnValue:
    staff = _pending()
    if staff is None:
        return _refused(401, _SIGN_IN_FIRST)
    options, token = second_factor.sign_in_options(
        session=get_session(), settings=get_settings(), staff=staff
    )
    return jsonify(token=token, publicKey=options)


@bp.post("/api/staff/sign-in/key")
@limiter.limit(STAFF_SIGN_IN_PER_IP)
def sign_in_with_key() -> ResponseReturnValue:
    staff, body = _pending(), (json_object() or {})
    if staff is None:
        return _refused(401, _SIGN_IN_FIRST)
    try:
        second_factor.verify_key(
            session=get_session(),
            settings=get_settings(),
            staff=staff,
            token=str(body.get("token", "")),
            response=credential_in(body),
        )
    except webauthn.WebAuthnError as problem:
        return _refused(problem.status_code, problem.message)
    return jsonify(next=_finish(staff))


@bp.post("/staff/sign-in/recovery")
@limiter.limit(STAFF_SIGN_IN_PER_IP)
def sign_in_with_recovery_code() -> ResponseReturnValue:
    staff = _pending()
    if staff is None:
        flash(_SIGN_IN_FIRST, "info")
        return redirect(url_for("accounts.staff_sign_in"))
    form = RecoveryCodeForm()
    if form.validate_on_submit():
        try:
            left = second_factor.use_recovery_code(
                session=get_session(),
                settings=get_settings(),
                staff=staff,
                code=form.code.data or "",
            )
        except InvalidCredentials as problem:
            form.code.errors = [problem.message]
        else:
            flash(
                f"Signed in with a recovery code; {left} left. Register a new key on My keys.",
                "warning" if left < 3 else "info",
            )
            return redirect(_finish(staff))
    return render_template(
        "accounts/staff_second_step.html", staff=staff, form=ConfirmForm(), recovery_form=form
    ), 401


@bp.post("/api/staff/keys/options")
@limiter.limit(STAFF_SIGN_IN_PER_IP)
def registration_options() -> ResponseReturnValue:
    registering = _registering()
    if registering is None:
        return _refused_registration()
    staff, _link = registering
    options, token = second_factor.registration_options(
        session=get_session(), settings=get_settings(), staff=staff
    )
    return jsonify(token=token, publicKey=options)


@bp.post("/api/staff/keys")
@limiter.limit(STAFF_SIGN_IN_PER_IP)
def register_key() -> ResponseReturnValue:
    registering, body = _registering(), (json_object() or {})
    if registering is None:
        return _refused_registration()
    staff, link = registering
    try:
        _key, codes = second_factor.register(
            session=get_session(),
            settings=get_settings(),
            metadata=webauthn_metadata(),
            staff=staff,
            token=str(body.get("token", "")),
            response=credential_in(body),
            name=str(body.get("name", "")),
            enrolment_token=link,
        )
    except (webauthn.WebAuthnError, security_keys.KeyProblem) as problem:
        return _refused(problem.status_code, problem.message)
    except AccountsError as problem:  # the link was spent meanwhile: store no key
        discard_changes()
        return _refused(problem.status_code, problem.message)
    if link is not None:  # enrolment: the key just proved the second factor
        cookie.pop(_ENROLMENT, None)
        _finish(staff)
    if codes:
        cookie[_CODES] = codes  # shown once, on the next page, then dropped
        return jsonify(message="Key registered.", next=url_for("staff_keys.recovery_codes"))
    flash("Key registered.", "success")
    return jsonify(message="Key registered.", next=url_for("staff_keys.my_keys"))


def _registering() -> tuple[Staff, str | None] | None:
    """Who may register a key now: a staff member signed in (adding a key), or one past the
    password without a key yet, in the browser that opened their enrolment link (its token
    comes with them, to be spent). None: nobody."""
    if current_user.is_authenticated and current_user.is_staff:
        return current_staff(), None
    staff = _pending()
    if staff is None or second_factor.has_keys(session=get_session(), staff=staff):
        return None
    link = _enrolment_token(staff)
    return None if link is None else (staff, link)


def _refused_registration() -> ResponseReturnValue:
    staff = _pending()
    if staff is not None and not second_factor.has_keys(session=get_session(), staff=staff):
        return _refused(403, _NEEDS_LINK)
    return _refused(401, _SIGN_IN_FIRST)


@bp.get("/staff/recovery-codes")
@staff_required()
def recovery_codes() -> ResponseReturnValue:
    codes = cookie.pop(_CODES, [])
    if not codes:
        return redirect(url_for("staff_keys.my_keys"))
    return render_template("accounts/recovery_codes.html", codes=codes)


@bp.get("/staff/my-keys")
@staff_required()
def my_keys() -> ResponseReturnValue:
    return _render_keys()


@bp.post("/staff/my-keys/<int:key_id>/remove")
@staff_required()
def remove_key(key_id: int) -> ResponseReturnValue:
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("staff_keys.my_keys"))
    staff = current_staff()
    try:
        second_factor.remove_key(
            session=get_session(), actor=services.actor_for(staff), staff=staff, key_id=key_id
        )
    except security_keys.KeyProblem as problem:
        flash(problem.message, "error")
        return _render_keys(), problem.status_code
    flash("Key removed.", "success")
    return redirect(url_for("staff_keys.my_keys"))


@bp.post("/staff/my-keys/recovery-codes")
@staff_required()
def new_recovery_codes() -> ResponseReturnValue:
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("staff_keys.my_keys"))
    staff = current_staff()
    cookie[_CODES] = second_factor.issue_recovery_codes(
        session=get_session(), settings=get_settings(), staff=staff
    )
    return redirect(url_for("staff_keys.recovery_codes"))


def _render_keys() -> str:
    staff = current_staff()
    session = get_session()
    return render_template(
        "accounts/staff_keys.html",
        keys=security_keys.keys_of(session=session, owner=staff),
        codes_left=second_factor.recovery_codes_left(session=session, staff=staff),
        form=ConfirmForm(),
        demo=get_settings().demo_mode,
    )
