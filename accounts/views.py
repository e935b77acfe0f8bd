"""Pages for signing in and out, the maintainer's account, staff management and the audit log."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_user, logout_user
from werkzeug.exceptions import TooManyRequests

from accounts import enrolment, second_factor, security_keys, services, sessions
from accounts.access import (
    current_maintainer,
    current_staff,
    current_staff_roles,
    email_rate_key,
    maintainer_required,
    staff_required,
)
from accounts.errors import (
    InvalidCredentials,
    LastAdmin,
    SignInLinkExpired,
    SignInLinkInvalid,
    SignInLinkUsed,
    StaffEmailTaken,
)
from accounts.forms import (
    AuditFilterForm,
    ConfirmForm,
    EndSessionForm,
    SignInLinkForm,
    StaffCreateForm,
    StaffEditForm,
    StaffSignInForm,
)
from accounts.key_views import start_second_factor
from accounts.models import Staff, StaffRole
from core.actors import ActorKind
from core.audit import AuditFilter, search_audit_events
from core.db import get_session
from core.mail import get_mailer, recent_outbox
from core.settings import get_settings
from web.forms import form_status
from web.security import (
    SIGN_IN_LINK_PER_ADDRESS,
    SIGN_IN_LINK_PER_IP,
    STAFF_FAILURES_PER_ACCOUNT,
    STAFF_FAILURES_PER_CLIENT,
    STAFF_SIGN_IN_PER_IP,
    count,
    counted_any,
    limiter,
    retry_after,
    used_up,
)

bp = Blueprint("accounts", __name__)

_LINK_PROBLEMS = (SignInLinkInvalid, SignInLinkExpired, SignInLinkUsed)
_NEXT_LENGTH = 1000


def _safe_next(default: str) -> str:
    """Where to go after signing in: only a path on this site, never another origin."""
    target = request.args.get("next", "")
    if (
        target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        # No CR or LF (a Location header cannot hold them) and no tab, which browsers drop:
        # "/<tab>/evil.example" would become "//evil.example", another site.
        and target.isprintable()
        and len(target) <= _NEXT_LENGTH  # it waits in the session cookie for the key
    ):
        return target
    return default


@bp.get("/")
def index() -> ResponseReturnValue:
    if current_user.is_authenticated:
        target = "accounts.staff_home" if current_user.is_staff else "accounts.account"
        return redirect(url_for(target))
    return render_template("accounts/index.html")


# --- maintainers ------------------------------------------------------------------------------


@bp.route("/sign-in", methods=["GET", "POST"])
@limiter.limit(SIGN_IN_LINK_PER_IP, methods=["POST"])
def sign_in() -> ResponseReturnValue:
    form = SignInLinkForm()
    if form.validate_on_submit():
        # Per address, links are counted, not requests refused: a stranger asking in someone's
        # name must not stop them signing in. The answer is the same either way; past the
        # limit nothing more is mailed, and the links mailed already still work.
        if count(SIGN_IN_LINK_PER_ADDRESS, "sign-in-link", email_rate_key()):
            services.request_sign_in_link(session=get_session(), email=form.email.data)
        return redirect(url_for("accounts.sign_in_sent"))
    return render_template("accounts/sign_in.html", form=form), form_status(form)


@bp.get("/sign-in/sent")
def sign_in_sent() -> ResponseReturnValue:
    return render_template("accounts/sign_in_sent.html")


@bp.route("/sign-in/link/<token>", methods=["GET", "POST"])
@limiter.limit(SIGN_IN_LINK_PER_IP)
def sign_in_link(token: str) -> ResponseReturnValue:
    # Opening the link only shows a button: mail scanners that fetch links must not spend it.
    form = ConfirmForm()
    try:
        if form.validate_on_submit():
            maintainer = services.use_sign_in_link(session=get_session(), token=token)
            login_user(maintainer)
            flash(f"Signed in as {maintainer.username}.", "success")
            return redirect(url_for("accounts.account"))
        maintainer = services.check_sign_in_link(session=get_session(), token=token)
    except _LINK_PROBLEMS as problem:
        return render_template(
            "accounts/link_problem.html", problem=problem, form=SignInLinkForm(formdata=None)
        ), problem.status_code
    return render_template("accounts/sign_in_link.html", form=form, maintainer=maintainer)


@bp.get("/account")
@maintainer_required
def account() -> ResponseReturnValue:
    maintainer = current_maintainer()
    return render_template(
        "accounts/account.html",
        maintainer=maintainer,
        **_sessions_page(ActorKind.MAINTAINER, maintainer.id, "accounts.end_session"),
    )


@bp.post("/account/sessions/end")
@maintainer_required
def end_session() -> ResponseReturnValue:
    _end_own_session(ActorKind.MAINTAINER, current_maintainer().id)
    return redirect(url_for("accounts.account"))


@bp.post("/sign-out")
def sign_out() -> ResponseReturnValue:
    # CSRF-protected like every POST, so a third-party page cannot sign anyone out.
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("accounts.index"))


# --- staff ------------------------------------------------------------------------------------


@bp.route("/staff/sign-in", methods=["GET", "POST"])
@limiter.limit(STAFF_SIGN_IN_PER_IP, methods=["POST"])
def staff_sign_in() -> ResponseReturnValue:
    form = StaffSignInForm()
    if form.validate_on_submit():
        account, client = email_rate_key(), get_remote_address()
        _refuse_guessing(account, client)
        try:
            staff = services.authenticate_staff(
                session=get_session(), email=form.email.data, password=form.password.data
            )
        except InvalidCredentials as problem:
            count(STAFF_FAILURES_PER_CLIENT, "staff-failures", account, client)
            count(STAFF_FAILURES_PER_ACCOUNT, "staff-failures", account)
            form.password.errors.append(problem.message)
            return render_template("accounts/staff_sign_in.html", form=form), 401
        next_page = _safe_next(url_for("accounts.staff_home"))
        if second_factor.signed_in_without_key(
            session=get_session(), settings=get_settings(), staff=staff
        ):
            login_user(staff)
            flash(
                "Demo mode: you signed in without a security key. Outside the demo, staff "
                "register a key and present it after their password.",
                "warning",
            )
            return redirect(next_page)
        return start_second_factor(staff, next_page)
    return render_template("accounts/staff_sign_in.html", form=form), form_status(form)


def _refuse_guessing(account: str, client: str) -> None:
    """Wrong passwords are counted per account and client, so that a stranger's guesses stop
    the stranger and not the owner; and per account, with a much higher ceiling that, once
    reached, stops only the clients that guessed wrong (a client that has not failed may
    still try: the owner, from their own address). Every guess still needs the key after."""
    per_client = ("staff-failures", account, client)
    if used_up(STAFF_FAILURES_PER_CLIENT, *per_client):
        raise TooManyRequests(retry_after=retry_after(STAFF_FAILURES_PER_CLIENT, *per_client))
    account_wide = ("staff-failures", account)
    if used_up(STAFF_FAILURES_PER_ACCOUNT, *account_wide) and counted_any(
        STAFF_FAILURES_PER_CLIENT, *per_client
    ):
        raise TooManyRequests(retry_after=retry_after(STAFF_FAILURES_PER_ACCOUNT, *account_wide))


@bp.get("/staff/")
@staff_required()
def staff_home() -> ResponseReturnValue:
    return render_template("accounts/staff_home.html", roles=current_staff_roles())


@bp.get("/staff/people")
@staff_required(StaffRole.ADMIN)
def staff_list() -> ResponseReturnValue:
    people = services.list_staff(session=get_session())
    return render_template("accounts/staff_list.html", people=people)


@bp.route("/staff/people/new", methods=["GET", "POST"])
@staff_required(StaffRole.ADMIN)
def staff_create() -> ResponseReturnValue:
    form = StaffCreateForm()
    if form.validate_on_submit():
        password = services.generate_password()
        try:
            staff = services.create_staff(
                session=get_session(),
                actor=services.actor_for(current_user),
                email=form.email.data,
                name=form.name.data,
                roles=form.selected_roles,
                password=password,
            )
        except StaffEmailTaken as problem:
            form.email.errors.append(problem.message)
        else:
            _send_enrolment_link(staff, reset=False)
            # Shown once, never stored in clear: the admin hands it over and it can be reset.
            return render_template(
                "accounts/staff_password.html",
                staff=staff,
                password=password,
                enrolment_hours=get_settings().staff_enrolment_hours,
            )
    return render_template("accounts/staff_form.html", form=form, staff=None), form_status(form)


@bp.route("/staff/people/<int:staff_id>", methods=["GET", "POST"])
@staff_required(StaffRole.ADMIN)
def staff_edit(staff_id: int) -> ResponseReturnValue:
    session = get_session()
    staff = services.get_staff(session=session, staff_id=staff_id)
    form = StaffEditForm(obj=staff)
    if request.method == "GET":
        form.roles.data = sorted(services.roles_of(session=session, staff=staff))
    if form.validate_on_submit():
        try:
            services.update_staff(
                session=session,
                actor=services.actor_for(current_user),
                staff_id=staff_id,
                name=form.name.data,
                roles=form.selected_roles,
                active=form.active.data,
            )
        except LastAdmin as problem:
            form.roles.errors = [problem.message]
        else:
            flash(f"Saved {staff.name}.", "success")
            return redirect(url_for("accounts.staff_list"))
    return render_template(
        "accounts/staff_form.html",
        form=form,
        staff=staff,
        keys=security_keys.keys_of(session=session, owner=staff),
        reset_form=ConfirmForm(),
    ), form_status(form)


@bp.post("/staff/people/<int:staff_id>/sessions/end")
@staff_required(StaffRole.ADMIN)
def staff_end_sessions(staff_id: int) -> ResponseReturnValue:
    if not ConfirmForm().validate_on_submit():
        abort(400, "The form expired. Go back, reload the page and try again.")
    staff = services.get_staff(session=get_session(), staff_id=staff_id)
    ended = sessions.end_sessions(
        session=get_session(),
        actor=services.actor_for(current_user),
        owner_kind=ActorKind.STAFF,
        owner_id=staff_id,
    )
    flash(f"Signed {staff.name} out of {ended} session(s).", "success")
    return redirect(url_for("accounts.staff_edit", staff_id=staff_id))


@bp.post("/staff/people/<int:staff_id>/keys/reset")
@staff_required(StaffRole.ADMIN)
def staff_reset_keys(staff_id: int) -> ResponseReturnValue:
    """Their keys and recovery codes stop working, they are signed out everywhere, and a new
    enrolment link is emailed to them: for a lost keyring, or a key someone else registered."""
    if not ConfirmForm().validate_on_submit():
        abort(400, "The form expired. Go back, reload the page and try again.")
    staff = services.get_staff(session=get_session(), staff_id=staff_id)
    _send_enrolment_link(staff, reset=True)
    hours = get_settings().staff_enrolment_hours
    flash(
        f"{staff.name}'s keys and recovery codes no longer work and they are signed out "
        f"everywhere. An enrolment link is on its way to {staff.email}: it works once, for "
        f"{hours} hours, to register a new key.",
        "success",
    )
    return redirect(url_for("accounts.staff_edit", staff_id=staff_id))


def _send_enrolment_link(staff: Staff, *, reset: bool) -> None:
    settings = get_settings()
    issue = second_factor.reset_keys if reset else enrolment.issue_link
    issue(
        session=get_session(),
        actor=services.actor_for(current_user),
        staff=staff,
        valid_for=timedelta(hours=settings.staff_enrolment_hours),
        mailer=get_mailer(),
        base_url=settings.base_url,
    )


@bp.get("/staff/sessions")
@staff_required()
def staff_sessions() -> ResponseReturnValue:
    return render_template(
        "accounts/staff_sessions.html",
        **_sessions_page(ActorKind.STAFF, current_staff().id, "accounts.staff_end_session"),
    )


@bp.post("/staff/sessions/end")
@staff_required()
def staff_end_session() -> ResponseReturnValue:
    _end_own_session(ActorKind.STAFF, current_staff().id)
    return redirect(url_for("accounts.staff_sessions"))


def _sessions_page(kind: ActorKind, owner_id: int | None, end: str) -> dict[str, object]:
    """Where the signed-in person is signed in, and the forms that end those sessions."""
    listed = sessions.sessions_of(session=get_session(), owner_kind=kind, owner_id=owner_id or 0)
    current = sessions.current_id()
    return {
        "sessions": listed,
        "current": sessions.session_key(current) if current else "",
        "end_endpoint": end,
        "end_form": EndSessionForm(formdata=None),
    }


def _end_own_session(kind: ActorKind, owner_id: int | None) -> None:
    form = EndSessionForm()
    if not form.validate_on_submit():
        abort(400, "Choose a session to end, from the list of where you are signed in.")
    others = form.which.data == "others"
    ended = sessions.end_sessions(
        session=get_session(),
        actor=services.actor_for(current_user),
        owner_kind=kind,
        owner_id=owner_id or 0,
        only=None if others else form.which.data,
        keep=sessions.current_id() if others else None,
    )
    if others:
        flash(f"Signed out of {ended} other session(s).", "success")
    else:
        flash("That session is signed out." if ended else "That session had ended already.", "info")


@bp.post("/staff/people/<int:staff_id>/password")
@staff_required(StaffRole.ADMIN)
def staff_reset_password(staff_id: int) -> ResponseReturnValue:
    if not ConfirmForm().validate_on_submit():
        abort(400, "The form expired. Go back, reload the page and try again.")
    password = services.generate_password()
    staff = services.reset_staff_password(
        session=get_session(),
        actor=services.actor_for(current_user),
        staff_id=staff_id,
        password=password,
    )
    return render_template(
        "accounts/staff_password.html", staff=staff, password=password, reset=True
    )


@bp.get("/staff/audit")
@staff_required(StaffRole.ADMIN, StaffRole.VIEWER)
def audit_log() -> ResponseReturnValue:
    form = AuditFilterForm(request.args)
    events = []
    if form.validate():
        events = search_audit_events(
            session=get_session(),
            audit_filter=AuditFilter(
                action=form.action.data or "",
                actor_kind=form.actor_kind.data or "",
                subject_kind=form.subject_kind.data or "",
                subject_id=form.subject_id.data or "",
                since=_start_of(form.since.data),
                until=_start_of(form.until.data, days=1),
            ),
            before_id=form.before.data,
        )
    return render_template("accounts/audit_log.html", form=form, events=events), form_status(form)


def _start_of(day: date | None, days: int = 0) -> datetime | None:
    """Midnight UTC at the start of ``day`` (plus ``days``), for inclusive date filters; no
    bound past the calendar's end (the day after 9999-12-31 is not a date)."""
    if day is None:
        return None
    try:
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=days)
    except OverflowError:
        return None


# --- development outbox -----------------------------------------------------------------------


@bp.get("/dev/outbox")
def dev_outbox() -> ResponseReturnValue:
    """The mail the demo has 'sent', so a newcomer can click their sign-in link."""
    if get_settings().mail_backend != "outbox":
        abort(404)
    return render_template("accounts/outbox.html", messages=recent_outbox(session=get_session()))
