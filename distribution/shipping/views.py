"""The shipping desk: the queue, label runs, shipping, manifests, deliveries, parcel incidents."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlmodel import Session
from wtforms.fields.choices import SelectChoice

from accounts.access import staff_required
from accounts.forms import ConfirmForm
from accounts.models import StaffRole
from accounts.services import actor_for
from core import formats, tasks
from core.actors import Actor
from core.countries import country_name
from core.db import get_session
from core.mail import get_mailer
from core.settings import get_settings
from distribution.claims import services as claims
from distribution.errors import (
    ClaimLocked,
    InvalidShipping,
    NoKeysLeft,
    ParcelNotFound,
)
from distribution.models import CLAIM_LIFECYCLE, ClaimStatus, LabelRun, Shipment
from distribution.shipping import exceptions, fulfilment, label_runs
from distribution.shipping.forms import (
    DamagedKeyForm,
    DeliveriesForm,
    FindParcelForm,
    LabelRunForm,
    ManifestForm,
    NoteForm,
    QueueFilterForm,
    ReasonForm,
    ReprintForm,
    ShipForm,
)
from distribution.stock import services as stock
from web.security import MAX_ROW_ID

bp = Blueprint("shipping", __name__)


@bp.get("/staff/shipping")
@staff_required(StaffRole.SHIPPING)
def shipping_desk() -> ResponseReturnValue:
    return _render_shipping(LabelRunForm(formdata=None))


@bp.post("/staff/shipping/labels")
@staff_required(StaffRole.SHIPPING)
def print_labels() -> ResponseReturnValue:
    """Start a run of the selected parcels' labels (or of all the filter shows)."""
    session = get_session()
    queue = _queue(session)
    form = LabelRunForm()
    form.claim_ids.choices = _parcel_choices(queue.parcels)
    if not form.validate_on_submit():
        _name_parcels_gone(
            form,
            queue.parcels,
            "were printed, taken into another label run or cancelled meanwhile, so nothing was "
            "printed. The parcels still waiting stay selected: print them now.",
        )
        return _render_shipping(form), 400
    ids = [q.claim_id for q in queue.parcels] if form.everything.data else form.claim_ids.data
    run = label_runs.start_run(
        session=session, actor=actor_for(current_user), claim_ids=ids, layout=form.layout.data
    )
    return _follow(run)


@bp.post("/staff/shipping/reprint")
@staff_required(StaffRole.SHIPPING)
def reprint_labels() -> ResponseReturnValue:
    """Print the labels of parcels that wait to ship once more (audited; nothing moves)."""
    session = get_session()
    form = ReprintForm(prefix="reprint")
    printed = _printed(session)
    form.claim_ids.choices = _parcel_choices(printed)
    if not form.validate_on_submit():
        _name_parcels_gone(
            form,
            printed,
            "were shipped, voided or cancelled meanwhile, so nothing was printed again. The "
            "labels still waiting to ship stay selected: print them now.",
        )
        return _render_shipping(LabelRunForm(formdata=None), reprint=form), 400
    run = label_runs.start_run(
        session=session,
        actor=actor_for(current_user),
        claim_ids=form.claim_ids.data,
        layout=form.layout.data,
        reprint=True,
    )
    return _follow(run)


def _name_parcels_gone(
    form: LabelRunForm | ReprintForm, offered: list[fulfilment.QueuedParcel], what_happened: str
) -> None:
    """Selected parcels the page showed that another desk took meanwhile: say which, by their
    references (not "'5' is not a valid choice", a claim id), and keep the others selected.
    Nothing is printed, so staff see the change before any label is made."""
    chosen = form.claim_ids.data or []
    still = {parcel.claim_id for parcel in offered}
    gone = fulfilment.parcels_of_claims(
        session=get_session(),
        # An id past any row's names no claim (and would overflow PostgreSQL's parameter).
        claim_ids=[i for i in chosen if i not in still and 0 < i <= MAX_ROW_ID],
        base_url=get_settings().base_url,
    )
    if gone:  # otherwise ids that name no parcel at all: the field's own error stands
        references = ", ".join(parcel.label.reference for parcel in gone)
        form.claim_ids.data = [claim_id for claim_id in chosen if claim_id in still]
        form.claim_ids.errors = []
        form.form_errors.append(f"Parcel(s) {references} {what_happened}")


def _follow(run: LabelRun) -> ResponseReturnValue:
    """Have a consumer render the run once this request's commit made it visible; show its
    progress."""
    tasks.enqueue(session=get_session(), name=label_runs.RENDER_TASK, subject_id=run.id)
    return redirect(url_for("shipping.label_run", run_id=run.id))


@bp.get("/staff/shipping/runs/<int:run_id>")
@staff_required(StaffRole.SHIPPING)
def label_run(run_id: int) -> ResponseReturnValue:
    view = label_runs.get_run(session=get_session(), run_id=run_id)
    return render_template("distribution/label_run.html", view=view)


@bp.get("/staff/shipping/runs/<int:run_id>/labels.pdf")
@staff_required(StaffRole.SHIPPING)
def label_run_pdf(run_id: int) -> ResponseReturnValue:
    run, pdf = label_runs.run_pdf(
        session=get_session(), actor=actor_for(current_user), run_id=run_id
    )
    response = make_response(pdf)
    response.headers["Content-Type"] = "application/pdf"
    response.headers["Content-Disposition"] = (
        f'attachment; filename="labels-{run.id}-{run.created_at:%Y%m%d-%H%M}.pdf"'
    )
    return response


@bp.get("/staff/shipping/parcel")
@staff_required(StaffRole.SHIPPING, StaffRole.PROGRAMME)
def find_parcel() -> ResponseReturnValue:
    form = FindParcelForm(formdata=request.args)
    if form.validate():
        try:
            _claim, shipment = fulfilment.find_parcel(
                session=get_session(), reference=form.reference.data
            )
        except ParcelNotFound as problem:
            form.reference.errors = [problem.message]
        else:
            return redirect(url_for("shipping.parcel", reference=shipment.reference))
    return _render_shipping(LabelRunForm(formdata=None), find=form), 404


@bp.get("/staff/shipping/parcels/<reference>")
@staff_required(StaffRole.SHIPPING, StaffRole.PROGRAMME)
def parcel(reference: str) -> ResponseReturnValue:
    return _render_parcel(reference)


@bp.post("/staff/shipping/parcels/<reference>/<action>")
@staff_required(StaffRole.SHIPPING)
def parcel_action(reference: str, action: str) -> ResponseReturnValue:
    """Void the label, record the delivery, a return, a loss or a damaged key."""
    if action not in _PARCEL_ACTIONS:
        abort(404)
    session = get_session()
    claim, shipment = fulfilment.find_parcel(session=session, reference=reference)
    form_class, act = _PARCEL_ACTIONS[action]
    form = _with_keys(form_class(), shipment)
    if form.validate_on_submit():
        try:
            done = act(session, actor_for(current_user), shipment.reference, form)
        except (ClaimLocked, InvalidShipping) as problem:
            form.form_errors.append(problem.message)
        else:
            flash(done, "success")
            current = claims.shipment_of(session=session, claim=claim) or shipment
            return redirect(url_for("shipping.parcel", reference=current.reference))
    return _render_parcel(reference, **{action: form}), 400


def _void(session: Session, actor: Actor, reference: str, form: FlaskForm) -> str:
    shipment = fulfilment.void_label(
        session=session, actor=actor, reference=reference, reason=_reason(form)
    )
    return f"Label voided; the parcel is back in the queue as {shipment.reference}."


def _deliver(session: Session, actor: Actor, reference: str, _form: FlaskForm) -> str:
    fulfilment.record_delivery(session=session, actor=actor, reference=reference)
    return "Delivery recorded."


def _returned(session: Session, actor: Actor, reference: str, form: FlaskForm) -> str:
    exceptions.mark_returned(
        session=session,
        mailer=get_mailer(),
        settings=get_settings(),
        actor=actor,
        reference=reference,
        note=_reason(form),
    )
    return (
        "Returned to sender: the keys are back in stock, held for the maintainer, who is "
        "asked to correct the address."
    )


def _lost(session: Session, actor: Actor, reference: str, form: FlaskForm) -> str:
    exceptions.mark_lost(
        session=session, mailer=get_mailer(), actor=actor, reference=reference, reason=_reason(form)
    )
    return "Written off as lost; a replacement waits for programme staff."


def _damaged(session: Session, actor: Actor, reference: str, form: FlaskForm) -> str:
    damaged = cast(DamagedKeyForm, form)
    reported = exceptions.report_damaged(
        session=session,
        actor=actor,
        reference=reference,
        sku=damaged.sku.data,
        quantity=damaged.quantity.data,
        reason=_reason(form),
    )
    return f"{len(reported)} damaged key(s) recorded; the replacement waits for programme staff."


def _reason(form: FlaskForm) -> str:
    return str(cast(ReasonForm | NoteForm, form).reason.data or "")


_ParcelAction = Callable[[Session, Actor, str, FlaskForm], str]
_PARCEL_ACTIONS: dict[str, tuple[type[FlaskForm], _ParcelAction]] = {
    "void": (ReasonForm, _void),
    "deliver": (ConfirmForm, _deliver),
    "returned": (NoteForm, _returned),
    "lost": (ReasonForm, _lost),
    "damaged": (DamagedKeyForm, _damaged),
}


def _with_keys(form: FlaskForm, shipment: Shipment) -> FlaskForm:
    """The damaged-key form offers the keys the parcel held."""
    if isinstance(form, DamagedKeyForm):
        names = {m.sku: m.name for m in stock.key_models(session=get_session())}
        form.sku.choices = [
            SelectChoice(sku, names.get(sku, sku)) for sku in sorted(shipment.items)
        ]
    return form


def _render_parcel(reference: str, **given: FlaskForm) -> str:
    session = get_session()
    claim, shipment = fulfilment.find_parcel(session=session, reference=reference)
    forms = {
        name: given.get(name) or _with_keys(form_class(formdata=None), shipment)
        for name, (form_class, _act) in _PARCEL_ACTIONS.items()
    }
    return render_template(
        "distribution/parcel.html",
        claim=claim,
        actions=CLAIM_LIFECYCLE.actions(claim.status),
        shipment=shipment,
        current=claims.shipment_of(session=session, claim=claim),
        parcels=claims.shipments_of(session=session, claim=claim),
        timeline=claims.timeline(session=session, claim=claim),
        exceptions=exceptions.exceptions_of(session=session, claim=claim),
        acceptances=fulfilment.acceptances(session=session, claim=claim),
        damage_reportable=exceptions.damage_reportable(
            session=session, claim=claim, shipment=shipment
        ),
        forms=forms,
        model_names={m.sku: m.name for m in stock.key_models(session=session)},
    )


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
            return redirect(url_for("shipping.shipping_desk"))
    return _render_shipping(LabelRunForm(formdata=None), ship=form), 400


@bp.post("/staff/shipping/manifest")
@staff_required(StaffRole.SHIPPING)
def manifest_preview() -> ResponseReturnValue:
    form = ManifestForm()
    if not form.validate_on_submit():
        return _render_shipping(LabelRunForm(formdata=None), manifest=form), 400
    lines = fulfilment.read_manifest(
        session=get_session(), settings=get_settings(), text=form.manifest.data
    )
    return render_template("distribution/manifest.html", lines=lines, form=form)


@bp.post("/staff/shipping/manifest/apply")
@staff_required(StaffRole.SHIPPING)
def manifest_apply() -> ResponseReturnValue:
    form = ManifestForm()
    if not form.validate_on_submit():
        return redirect(url_for("shipping.shipping_desk"))
    lines = fulfilment.apply_manifest(
        session=get_session(),
        mailer=get_mailer(),
        settings=get_settings(),
        actor=actor_for(current_user),
        text=form.manifest.data,
    )
    # The lines left out are listed again, each with its reason: a count alone cannot be fixed.
    return render_template("distribution/manifest.html", lines=lines, form=form, applied=True)


@bp.post("/staff/shipping/deliveries")
@staff_required(StaffRole.SHIPPING)
def deliveries_preview() -> ResponseReturnValue:
    form = DeliveriesForm()
    if not form.validate_on_submit():
        return _render_shipping(LabelRunForm(formdata=None), deliveries=form), 400
    lines = fulfilment.read_deliveries(session=get_session(), text=form.deliveries.data)
    return render_template("distribution/deliveries.html", lines=lines, form=form)


@bp.post("/staff/shipping/deliveries/apply")
@staff_required(StaffRole.SHIPPING)
def deliveries_apply() -> ResponseReturnValue:
    form = DeliveriesForm()
    if not form.validate_on_submit():
        return redirect(url_for("shipping.shipping_desk"))
    lines = fulfilment.apply_deliveries(
        session=get_session(), actor=actor_for(current_user), text=form.deliveries.data
    )
    return render_template("distribution/deliveries.html", lines=lines, form=form, applied=True)


@bp.get("/staff/replacements")
@staff_required(StaffRole.PROGRAMME)
def replacements() -> ResponseReturnValue:
    return _render_replacements()


@bp.post("/staff/replacements/<int:exception_id>/<decision>")
@staff_required(StaffRole.PROGRAMME)
def decide_replacement(exception_id: int, decision: str) -> ResponseReturnValue:
    if decision not in ("approve", "decline"):
        abort(404)
    form = ReasonForm() if decision == "decline" else NoteForm()
    if form.validate_on_submit():
        session, actor, note = get_session(), actor_for(current_user), form.reason.data or ""
        try:
            if decision == "approve":
                parcel = exceptions.approve_replacement(
                    session=session,
                    mailer=get_mailer(),
                    settings=get_settings(),
                    actor=actor,
                    exception_id=exception_id,
                    note=note,
                )
                flash(f"Replacement {parcel.reference} is in the shipping queue.", "success")
            else:
                exceptions.decline_replacement(
                    session=session,
                    mailer=get_mailer(),
                    actor=actor,
                    exception_id=exception_id,
                    note=note,
                )
                flash("Replacement declined; the maintainer is told why.", "info")
        except (ClaimLocked, NoKeysLeft, InvalidShipping, ParcelNotFound) as problem:
            form.form_errors.append(problem.message)
        else:
            return redirect(url_for("shipping.replacements"))
    return _render_replacements(exception_id, decision, form), 400


def _render_replacements(
    failed_id: int | None = None, decision: str = "", failed: FlaskForm | None = None
) -> str:
    session = get_session()
    return render_template(
        "distribution/replacements.html",
        waiting=exceptions.open_replacements(session=session),
        failed_id=failed_id,
        decision=decision,
        failed=failed,
        approve_form=NoteForm(formdata=None),
        decline_form=ReasonForm(formdata=None),
        model_names={m.sku: m.name for m in stock.key_models(session=session)},
    )


def _queue_filter(session: Session) -> tuple[QueueFilterForm, fulfilment.QueueFilter]:
    """The filter in the address bar (an unknown value just means "any")."""
    form = QueueFilterForm(formdata=request.args)
    form.country.choices = [SelectChoice("", "Any destination")] + [
        SelectChoice(code, country_name(code)) for code in get_settings().countries
    ]
    form.sku.choices = [SelectChoice("", "Any model")] + [
        SelectChoice(m.sku, m.name) for m in stock.key_models(session=session)
    ]
    if not form.validate():
        return QueueFilterForm(formdata=None), fulfilment.QueueFilter()
    return form, fulfilment.QueueFilter(
        country=form.country.data or "",
        sku=form.sku.data or "",
        min_age_days=form.min_age_days.data or 0,
    )


def _queue(session: Session) -> fulfilment.Queue:
    _form, wanted = _queue_filter(session)
    return fulfilment.label_queue(session=session, base_url=get_settings().base_url, wanted=wanted)


def _printed(session: Session) -> list[fulfilment.QueuedParcel]:
    return fulfilment.parcels_with_status(
        session=session, status=ClaimStatus.LABEL_PRINTED, base_url=get_settings().base_url
    )


def _parcel_choices(parcels: list[fulfilment.QueuedParcel]) -> list[SelectChoice]:
    return [
        SelectChoice(
            q.claim_id,
            f"{q.label.reference} — {q.label.recipient_lines[-1].title()}, "
            f"{q.label.key_count} key{'s' if q.label.key_count != 1 else ''}, "
            f"waiting since {formats.short_day(q.queued_at)}",
        )
        for q in parcels
    ]


def _carriers() -> list[SelectChoice]:
    # No carrier is preselected: a parcel must not leave "with DHL" because nobody chose.
    return [SelectChoice("", "Choose a carrier…")] + [
        SelectChoice(name, name) for name in get_settings().carriers
    ]


# The queue page lists this many parcels; "print all shown" takes every one the filter admits.
QUEUE_PAGE = 200


def _render_shipping(
    run: LabelRunForm,
    *,
    reprint: ReprintForm | None = None,
    ship: ShipForm | None = None,
    manifest: ManifestForm | None = None,
    deliveries: DeliveriesForm | None = None,
    find: FindParcelForm | None = None,
) -> str:
    session = get_session()
    filter_form, _wanted = _queue_filter(session)
    queue = _queue(session)
    printed = _printed(session)
    run.claim_ids.choices = _parcel_choices(queue.parcels[:QUEUE_PAGE])
    reprint = reprint or ReprintForm(formdata=None, prefix="reprint")
    reprint.claim_ids.choices = _parcel_choices(printed)
    ship = ship or ShipForm(formdata=None)
    ship.carrier.choices = _carriers()
    return render_template(
        "distribution/shipping.html",
        queue=queue,
        page_size=QUEUE_PAGE,
        filter_form=filter_form,
        printed=printed,
        runs=label_runs.recent_runs(session=session),
        run_form=run,
        reprint_form=reprint,
        ship_form=ship,
        manifest_form=manifest or ManifestForm(formdata=None),
        deliveries_form=deliveries or DeliveriesForm(formdata=None),
        find_form=find or FindParcelForm(formdata=None),
        country_name=country_name,
        model_names={m.sku: m.name for m in stock.key_models(session=session)},
    )
