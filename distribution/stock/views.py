"""The stock desk: receiving and adjusting stock."""

from __future__ import annotations

from flask import (
    Blueprint,
    flash,
    redirect,
    render_template,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user

from accounts.access import staff_required
from accounts.models import StaffRole
from accounts.services import actor_for
from core.db import get_session
from core.mail import get_mailer
from core.settings import get_settings
from distribution.errors import (
    InvalidMovement,
)
from distribution.stock import services as stock
from distribution.stock.forms import AdjustStockForm, ReceiveStockForm, with_models

bp = Blueprint("stock", __name__)


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
            return redirect(url_for("stock.stock_desk"))
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
                mailer=get_mailer(),
                settings=get_settings(),
                actor=actor_for(current_user),
                sku=form.sku.data,
                quantity=form.quantity.data,
                reason=form.reason.data,
            )
        except InvalidMovement as problem:
            form.quantity.errors = [problem.message]
        else:
            flash(f"Adjusted {form.sku.data} by {form.quantity.data:+,}.", "success")
            return redirect(url_for("stock.stock_desk"))
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
