"""Claim pages for maintainers (get a code, redeem it, follow the claim), the stock desk and
the shipping desk."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TypeVar, cast

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlmodel import Session
from wtforms.fields.choices import SelectChoice

from accounts.forms import ConfirmForm
from accounts.models import Maintainer, StaffRole
from accounts.services import actor_for
from db import get_session, utcnow
from distribution import claims, fulfilment, stock
from distribution.addresses import (
    InvalidAddress,
    normalize_phone,
    recipient_name_latin,
    validate_address,
)
from distribution.errors import (
    AlreadyClaimed,
    ClaimLocked,
    CodeExpired,
    CodeTypo,
    CodeUnknown,
    CodeUsed,
    InvalidChoice,
    InvalidMovement,
    InvalidShipping,
    NoKeysLeft,
    ParcelNotFound,
)
from distribution.forms import (
    AdjustStockForm,
    LabelRunForm,
    ManifestForm,
    ReceiveStockForm,
    RedemptionForm,
    ShipForm,
    ShippingForm,
    shipping_form_for,
    with_models,
)
from distribution.labels import LabelSettings, render_run
from distribution.models import ClaimStatus
from eligibility.countries import country_name, served_choices
from eligibility.decisions import decide
from mail import get_mailer
from security import limiter, maintainer_required, staff_required
from settings import get_settings

bp = Blueprint("distribution", __name__)
T = TypeVar("T")

CODE_ENTRY_PER_MAINTAINER = "10 per hour"
CODE_ENTRY_PER_IP = "30 per hour"
_CODE_PROBLEMS = (CodeTypo, CodeUnknown, CodeExpired, CodeUsed)


def _me() -> Maintainer:
    return cast(Maintainer, current_user._get_current_object())


def _maintainer_key() -> str:
    return f"maintainer:{current_user.get_id()}"


def _country() -> str:
    """The destination chosen on the page (served countries only; the profile's by default)."""
    served = get_settings().countries
    wanted = (request.values.get("country") or _me().country or served[0]).upper()
    wanted = "GB" if wanted == "UK" else wanted
    return wanted if wanted in served else served[0]


# --- maintainers ------------------------------------------------------------------------------


@bp.get("/claim")
@maintainer_required
def my_claim() -> ResponseReturnValue:
    session, settings, maintainer = get_session(), get_settings(), _me()
    claim = claims.active_claim(session=session, maintainer=maintainer)
    return render_template(
        "distribution/my_claim.html",
        claim=claim,
        timeline=claims.timeline(session=session, claim=claim) if claim else [],
        items=claims.items_of(session=session, claim=claim) if claim else {},
        shipment=claims.shipment_of(session=session, claim=claim) if claim else None,
        decision=None
        if claim
        else decide(
            session=session, settings=settings, maintainer=maintainer, country=maintainer.country
        ),
        waiting=claims.waitlist_position(session=session, maintainer=maintainer),
        form=ConfirmForm(),
        model_names={model.sku: model.name for model in stock.key_models(session=session)},
    )


@bp.post("/claim/code")
@maintainer_required
@limiter.limit(CODE_ENTRY_PER_MAINTAINER, key_func=_maintainer_key)
@limiter.limit(CODE_ENTRY_PER_IP)
def get_code() -> ResponseReturnValue:
    if not ConfirmForm().validate_on_submit():
        return redirect(url_for("distribution.my_claim"))
    try:
        outcome = claims.issue_claim_code(
            session=get_session(),
            mailer=get_mailer(),
            settings=get_settings(),
            actor=actor_for(current_user),
            maintainer=_me(),
        )
    except AlreadyClaimed:
        # Most often the code page reloaded (which sends the form again): the code is in the
        # email, and My claim shows where things stand.
        flash("You have a claim already. Your code is in the email we sent.", "info")
        return redirect(url_for("distribution.my_claim"))
    if isinstance(outcome, claims.WaitlistPlace):
        flash(
            f"All keys are promised right now. You are number {outcome.position} on the "
            "waiting list: we email you a code as soon as keys come free.",
            "info",
        )
        return redirect(url_for("distribution.my_claim"))
    # Shown once, on this page and in the email; only its hash is kept.
    return render_template("distribution/code.html", issued=outcome)


@bp.route("/claim/redeem", methods=["GET", "POST"])
@maintainer_required
@limiter.limit(CODE_ENTRY_PER_MAINTAINER, key_func=_maintainer_key, methods=["POST"])
@limiter.limit(CODE_ENTRY_PER_IP, methods=["POST"])
def redeem() -> ResponseReturnValue:
    session, settings, maintainer = get_session(), get_settings(), _me()
    country = _country()
    models = stock.key_models(session=session)
    form_class = shipping_form_for(
        RedemptionForm, country=country, models=models, allowance=settings.keys_per_maintainer
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
            return redirect(url_for("distribution.my_claim"))
    figures = stock.stock_figures(session=session)
    return render_template(
        "distribution/redeem.html",
        form=form,
        country=country,
        countries=served_choices(settings.countries),
        models=models,
        available={m.sku: figures.available_of(m.sku) for m in models},
        allowance=settings.keys_per_maintainer,
    ), status


@bp.route("/claim/<int:claim_id>/address", methods=["GET", "POST"])
@maintainer_required
def change_address(claim_id: int) -> ResponseReturnValue:
    session, settings, maintainer = get_session(), get_settings(), _me()
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
            return redirect(url_for("distribution.my_claim"))
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
        claims.cancel_claim(
            session=get_session(),
            mailer=get_mailer(),
            settings=get_settings(),
            actor=actor_for(current_user),
            maintainer=_me(),
            claim_id=claim_id,
        )
        flash("Your claim is cancelled and the keys went back to the programme.", "info")
    return redirect(url_for("distribution.my_claim"))


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


@bp.get("/staff/stock")
@staff_required(StaffRole.PROGRAMME, StaffRole.VIEWER)
def stock_desk() -> ResponseReturnValue:
    return _render_stock(ReceiveStockForm(), AdjustStockForm())


@bp.post("/staff/stock/receive")
@staff_required(StaffRole.PROGRAMME)
def receive_stock() -> ResponseReturnValue:
    form = ReceiveStockForm()
    with_models(form, stock.key_models(session=get_session()))
    if form.validate_on_submit():
        try:
            stock.receive_stock(
                session=get_session(),
                actor=actor_for(current_user),
                sku=form.sku.data,
                quantity=form.quantity.data,
                reference=form.reference.data,
            )
        except InvalidMovement as problem:
            form.reference.errors = [problem.message]
        else:
            flash(f"Received {form.quantity.data:,} × {form.sku.data}.", "success")
            return redirect(url_for("distribution.stock_desk"))
    return _render_stock(form, AdjustStockForm(formdata=None)), 400


@bp.post("/staff/stock/adjust")
@staff_required(StaffRole.PROGRAMME)
def adjust_stock() -> ResponseReturnValue:
    form = AdjustStockForm()
    with_models(form, stock.key_models(session=get_session()))
    if form.validate_on_submit():
        try:
            stock.adjust_stock(
                session=get_session(),
                actor=actor_for(current_user),
                sku=form.sku.data,
                quantity=form.quantity.data,
                reason=form.reason.data,
            )
        except InvalidMovement as problem:
            form.quantity.errors = [problem.message]
        else:
            flash(f"Adjusted {form.sku.data} by {form.quantity.data:+,}.", "success")
            return redirect(url_for("distribution.stock_desk"))
    return _render_stock(ReceiveStockForm(formdata=None), form), 400


def _render_stock(receive: ReceiveStockForm, adjust: AdjustStockForm) -> str:
    session = get_session()
    models = stock.key_models(session=session)
    with_models(receive, models)
    with_models(adjust, models)
    return render_template(
        "distribution/stock.html",
        figures=stock.stock_figures(session=session),
        movements=stock.recent_movements(session=session),
        receive_form=receive,
        adjust_form=adjust,
    )


# --- fulfilment -------------------------------------------------------------------------------


@bp.get("/staff/shipping")
@staff_required(StaffRole.SHIPPING)
def shipping_desk() -> ResponseReturnValue:
    return _render_shipping(ShipForm(), ManifestForm(), LabelRunForm())


@bp.post("/staff/shipping/labels")
@staff_required(StaffRole.SHIPPING)
def print_labels() -> ResponseReturnValue:
    """Render the selected parcels' labels; they become label_printed once the PDF is made."""
    session, settings = get_session(), get_settings()
    queued = _waiting(session)
    form = LabelRunForm()
    form.claim_ids.choices = _parcel_choices(queued)
    if not form.validate_on_submit():
        return _render_shipping(ShipForm(formdata=None), ManifestForm(formdata=None), form), 400
    chosen = [q for q in queued if q.claim_id in set(form.claim_ids.data)]
    pdf = render_run(
        [q.label for q in chosen],
        settings=LabelSettings.from_settings(settings),
        layout=form.layout.data,
    )
    fulfilment.mark_labels_printed(
        session=session, actor=actor_for(current_user), claim_ids=[q.claim_id for q in chosen]
    )
    response = make_response(pdf)
    response.headers["Content-Type"] = "application/pdf"
    response.headers["Content-Disposition"] = (
        f'attachment; filename="labels-{utcnow():%Y%m%d-%H%M}.pdf"'
    )
    return response


@bp.post("/staff/shipping/ship")
@staff_required(StaffRole.SHIPPING)
def ship_parcel() -> ResponseReturnValue:
    form = ShipForm()
    form.carrier.choices = _carriers()
    if form.validate_on_submit():
        try:
            shipment = fulfilment.ship_parcel(
                session=get_session(),
                mailer=get_mailer(),
                settings=get_settings(),
                actor=actor_for(current_user),
                reference=form.reference.data,
                carrier=form.carrier.data,
                tracking_number=form.tracking_number.data,
            )
        except (ParcelNotFound, ClaimLocked, InvalidShipping) as problem:
            form.reference.errors = [problem.message]
        else:
            flash(f"Parcel {shipment.reference} shipped with {shipment.carrier}.", "success")
            return redirect(url_for("distribution.shipping_desk"))
    return _render_shipping(form, ManifestForm(formdata=None), LabelRunForm(formdata=None)), 400


@bp.post("/staff/shipping/manifest")
@staff_required(StaffRole.SHIPPING)
def manifest_preview() -> ResponseReturnValue:
    form = ManifestForm()
    if not form.validate_on_submit():
        return _render_shipping(ShipForm(formdata=None), form, LabelRunForm(formdata=None)), 400
    lines = fulfilment.read_manifest(session=get_session(), text=form.manifest.data)
    return render_template("distribution/manifest.html", lines=lines, form=form)


@bp.post("/staff/shipping/manifest/apply")
@staff_required(StaffRole.SHIPPING)
def manifest_apply() -> ResponseReturnValue:
    form = ManifestForm()
    if not form.validate_on_submit():
        return redirect(url_for("distribution.shipping_desk"))
    lines = fulfilment.apply_manifest(
        session=get_session(),
        mailer=get_mailer(),
        settings=get_settings(),
        actor=actor_for(current_user),
        text=form.manifest.data,
    )
    shipped = sum(1 for line in lines if not line.problem)
    flash(f"Shipped {shipped} parcel(s); {len(lines) - shipped} line(s) left out.", "success")
    return redirect(url_for("distribution.shipping_desk"))


def _waiting(session: Session) -> list[fulfilment.QueuedParcel]:
    return fulfilment.parcels_with_status(
        session=session, status=ClaimStatus.REDEEMED, base_url=get_settings().base_url
    )


def _parcel_choices(queued: list[fulfilment.QueuedParcel]) -> list[SelectChoice]:
    return [
        SelectChoice(
            q.claim_id,
            f"{q.label.reference} — {q.label.recipient_lines[-1].title()}, "
            f"{q.label.key_count} key{'s' if q.label.key_count != 1 else ''}",
        )
        for q in queued
    ]


def _carriers() -> list[SelectChoice]:
    return [SelectChoice(name, name) for name, _url in get_settings().carrier_tracking_urls]


def _render_shipping(ship: ShipForm, manifest: ManifestForm, run: LabelRunForm) -> str:
    queued = _waiting(get_session())
    ship.carrier.choices = _carriers()
    run.claim_ids.choices = _parcel_choices(queued)
    return render_template(
        "distribution/shipping.html",
        queued=queued,
        ship_form=ship,
        manifest_form=manifest,
        run_form=run,
    )
