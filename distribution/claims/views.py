"""The maintainer's claim: the eligibility decision, the claim code, redemption, the address and
cancelling; and the staff's appeal review, which weighs the same decision."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TypeVar, cast

from flask import (
    Blueprint,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user

from accounts.access import (
    current_maintainer,
    maintainer_rate_key,
    maintainer_required,
    staff_required,
)
from accounts.forms import ConfirmForm
from accounts.models import StaffRole
from accounts.services import actor_for, set_maintainer_country
from adapters.addresses import (
    InvalidAddress,
    normalize_phone,
    recipient_name_latin,
    validate_address,
)
from core.countries import country_name, display_code, normalize_country, served_choices
from core.db import get_session
from core.mail import get_mailer
from core.settings import get_settings
from distribution.claims import services as claims
from distribution.claims.decision import decide
from distribution.claims.forms import RedemptionForm, ShippingForm, shipping_form_for
from distribution.claims.pages import redemption_page
from distribution.errors import (
    AlreadyClaimed,
    ClaimLocked,
    CodeExpired,
    CodeTypo,
    CodeUnknown,
    CodeUsed,
    FormSentBefore,
    InvalidChoice,
    NoKeysLeft,
)
from eligibility import appeals
from eligibility.forms import (
    AppealDecisionForm,
    CountryForm,
)
from eligibility.models import APPEAL_LIFECYCLE
from web.forms import form_status
from web.security import limiter

bp = Blueprint("claims", __name__)


T = TypeVar("T")


CODE_ENTRY_PER_MAINTAINER = "10 per hour"


CODE_ENTRY_PER_IP = "30 per hour"


_CODE_PROBLEMS = (CodeTypo, CodeUnknown, CodeExpired, CodeUsed)


@bp.get("/eligibility")
@maintainer_required
def my_eligibility() -> ResponseReturnValue:
    return _render_mine(CountryForm(country=current_maintainer().country))


@bp.post("/eligibility/country")
@maintainer_required
def set_country() -> ResponseReturnValue:
    form = CountryForm()
    if not form.validate_on_submit():
        return _render_mine(form), 400
    set_maintainer_country(
        session=get_session(),
        actor=actor_for(current_user),
        maintainer=current_maintainer(),
        country=normalize_country(form.country.data),
    )
    flash(f"Saved: keys would be shipped to {country_name(form.country.data)}.", "success")
    return redirect(url_for("claims.my_eligibility"))


def _render_mine(country_form: CountryForm) -> str:
    session, maintainer = get_session(), current_maintainer()
    decision = decide(
        session=session,
        settings=get_settings(),
        maintainer=maintainer,
        country=maintainer.country,
    )
    return render_template(
        "eligibility/mine.html",
        decision=decision,
        country_form=country_form,
        appeals=appeals.appeals_of(session=session, maintainer=maintainer),
        country_name=country_name,
        display_code=display_code,
    )


def _country() -> str:
    """The destination chosen on the page (served countries only; the profile's by default)."""
    served = get_settings().countries
    wanted = (request.values.get("country") or current_maintainer().country or served[0]).upper()
    wanted = "GB" if wanted == "UK" else wanted
    return wanted if wanted in served else served[0]


@bp.post("/claim/code")
@maintainer_required
@limiter.limit(CODE_ENTRY_PER_MAINTAINER, key_func=maintainer_rate_key)
@limiter.limit(CODE_ENTRY_PER_IP)
def get_code() -> ResponseReturnValue:
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("journey.my_claim"))
    try:
        outcome = claims.issue_claim_code(
            session=get_session(),
            mailer=get_mailer(),
            settings=get_settings(),
            actor=actor_for(current_user),
            maintainer=current_maintainer(),
        )
    except AlreadyClaimed:
        # Most often the code page reloaded (which sends the form again): the code is in the
        # email, and My claim shows where things stand.
        flash("You have a claim already. Your code is in the email we sent.", "info")
        return redirect(url_for("journey.my_claim"))
    if isinstance(outcome, claims.WaitlistPlace):
        flash(
            f"All keys are promised right now. You are number {outcome.position} on the "
            "waiting list: we email you a code as soon as keys come free.",
            "info",
        )
        return redirect(url_for("journey.my_claim"))
    # Shown once, on this page and in the email; only its hash is kept.
    return render_template("distribution/code.html", issued=outcome)


@bp.route("/claim/redeem", methods=["GET", "POST"])
@maintainer_required
@limiter.limit(CODE_ENTRY_PER_MAINTAINER, key_func=maintainer_rate_key, methods=["POST"])
@limiter.limit(CODE_ENTRY_PER_IP, methods=["POST"])
def redeem() -> ResponseReturnValue:
    session, settings, maintainer = get_session(), get_settings(), current_maintainer()
    country = _country()
    page = redemption_page(session=session, settings=settings, country=country)
    form_class = shipping_form_for(
        RedemptionForm, country=country, models=page.models, allowance=page.allowance
    )
    form = cast(
        RedemptionForm,
        form_class(
            country=country,
            code=request.args.get("code", ""),
            idempotency_key=secrets.token_urlsafe(24),
            recipient_name=maintainer.display_name,
        ),
    )
    status = 200
    recipient = None
    if request.method == "POST":
        # Both checks run, so every problem shows at once rather than in rounds.
        valid = form.validate_on_submit()
        recipient = _recipient(form, settings.countries)
        status = 200 if valid and recipient else 400
    if recipient is not None and status == 200:
        try:
            shipment = claims.redeem_claim(
                session=session,
                mailer=get_mailer(),
                settings=settings,
                actor=actor_for(current_user),
                maintainer=maintainer,
                code=form.code.data,
                items=form.quantities(),
                recipient=recipient,
                idempotency_key=form.idempotency_key.data or secrets.token_urlsafe(24),
            )
        except FormSentBefore as problem:
            # Its key answers for the claim it was first sent for: shown again, it is a fresh
            # form, so the new code entered in it is redeemed.
            form.idempotency_key.data = secrets.token_urlsafe(24)
            form.code.errors = [problem.message]
            status = problem.status_code
        except _CODE_PROBLEMS as problem:
            form.code.errors = [problem.message]
            status = problem.status_code
        except (InvalidChoice, NoKeysLeft) as problem:
            form.form_errors.append(problem.message)
            status = problem.status_code
        else:
            flash(
                f"Thank you: your keys will be shipped to {country_name(shipment.country)}. "
                "We emailed you a confirmation.",
                "success",
            )
            return redirect(url_for("journey.my_claim"))
    return render_template("distribution/redeem.html", form=form, **vars(page)), status


@bp.route("/claim/<int:claim_id>/address", methods=["GET", "POST"])
@maintainer_required
def change_address(claim_id: int) -> ResponseReturnValue:
    session, settings, maintainer = get_session(), get_settings(), current_maintainer()
    claim = claims.get_claim(session=session, maintainer=maintainer, claim_id=claim_id)
    shipment = claims.shipment_of(session=session, claim=claim)
    country = (
        _country()
        if "country" in request.values
        else (shipment.country if shipment else _country())
    )
    form_class = shipping_form_for(ShippingForm, country=country)
    current = {
        f"address_{k}": v
        for k, v in (shipment.address if shipment else {}).items()
        if shipment and country == shipment.country
    }
    form = form_class(
        country=country,
        phone=shipment.phone if shipment else "",
        recipient_name=shipment.recipient_name if shipment else maintainer.display_name,
        recipient_name_local=shipment.recipient_name_local if shipment else "",
        **current,
    )
    status = 200
    recipient = None
    if request.method == "POST":
        valid = form.validate_on_submit()
        recipient = _recipient(form, settings.countries)
        status = 200 if valid and recipient else 400
    if recipient is not None and status == 200:
        try:
            claims.change_address(
                session=session,
                actor=actor_for(current_user),
                maintainer=maintainer,
                claim_id=claim.id or 0,
                recipient=recipient,
            )
        except ClaimLocked as problem:
            form.form_errors.append(problem.message)
            status = problem.status_code
        else:
            flash("The new address is saved.", "success")
            return redirect(url_for("journey.my_claim"))
    return render_template(
        "distribution/address.html",
        form=form,
        claim=claim,
        country=country,
        countries=served_choices(settings.countries),
    ), status


@bp.post("/claim/<int:claim_id>/cancel")
@maintainer_required
def cancel(claim_id: int) -> ResponseReturnValue:
    if ConfirmForm().validate_on_submit():
        # Sent again (a lost response, a double click), the answer is the first one's.
        claim = claims.cancel_claim(
            session=get_session(),
            mailer=get_mailer(),
            settings=get_settings(),
            actor=actor_for(current_user),
            maintainer=current_maintainer(),
            claim_id=claim_id,
        )
        # The code names it: from an old page, the claim cancelled may not be the one shown.
        flash(
            f"Your claim with the code ending …{claim.code_hint} is cancelled, and its keys "
            "went back to the programme.",
            "info",
        )
    return redirect(url_for("journey.my_claim"))


def _recipient(form: ShippingForm, served: tuple[str, ...]) -> claims.Recipient | None:
    """The validated address, phone and names, or None with every problem shown beside its
    field (including those the form's own checks found first)."""
    errors: dict[str, str] = {}
    messages: dict[str, str] = {}

    def checked(check: Callable[[], T]) -> T | None:
        try:
            return check()
        except InvalidAddress as problem:
            errors.update(problem.errors)
            # A name or phone check explains itself better than a generic line would.
            messages.update(
                {key: problem.message for key in problem.errors if key in ("name_latin", "phone")}
            )
            return None

    name = checked(lambda: recipient_name_latin(form.recipient_name.data or ""))
    phone = checked(lambda: normalize_phone(form.phone.data or "", country=form.country.data))
    address = checked(lambda: validate_address(form.address(), served=served))
    form.explain_address_errors(errors, messages)
    if name is None or phone is None or address is None:
        return None
    return claims.Recipient(address, phone, name, form.recipient_name_local.data or "")


# --- staff ------------------------------------------------------------------------------------


@bp.route("/staff/appeals/<int:appeal_id>", methods=["GET", "POST"])
@staff_required(StaffRole.PROGRAMME)
def appeal_review(appeal_id: int) -> ResponseReturnValue:
    session, settings = get_session(), get_settings()
    appeal, maintainer = appeals.get_appeal_and_appellant(session=session, appeal_id=appeal_id)
    form = AppealDecisionForm()
    if form.validate_on_submit():
        appeals.decide_appeal(
            session=session,
            mailer=get_mailer(),
            actor=actor_for(current_user),
            appeal_id=appeal_id,
            grant=form.decision.data == "grant",
            reason=form.reason.data,
            base_url=settings.base_url,
        )
        flash(f"Appeal {appeal_id} {appeal.status}; the maintainer was emailed.", "success")
        return redirect(url_for("eligibility.appeal_queue"))
    decision = decide(
        session=session, settings=settings, maintainer=maintainer, country=maintainer.country
    )
    return render_template(
        "eligibility/appeal_review.html",
        appeal=appeal,
        actions=APPEAL_LIFECYCLE.actions(appeal.status),
        maintainer=maintainer,
        decision=decision,
        form=form,
    ), form_status(form)
