"""Forms of the stock desk: receiving and adjusting stock."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    SelectField,
    StringField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange

from distribution.models import KeyModel
from web.forms import WholeNumberField


class ReceiveStockForm(FlaskForm):
    sku = SelectField("Model", validators=[DataRequired("Choose a model.")])
    quantity = WholeNumberField(
        "Keys in the batch",
        validators=[
            DataRequired("Enter how many keys arrived."),
            NumberRange(min=1, max=100_000, message="Between 1 and 100,000."),
        ],
    )
    reference = StringField(
        "Delivery note or batch reference",
        validators=[DataRequired("Enter the reference on the delivery note."), Length(max=100)],
    )


class AdjustStockForm(FlaskForm):
    sku = SelectField("Model", validators=[DataRequired("Choose a model.")])
    quantity = WholeNumberField(
        "Change (negative to remove keys)",
        validators=[
            DataRequired("Enter the change, e.g. -2."),
            NumberRange(min=-100_000, max=100_000, message="Between -100,000 and 100,000."),
        ],
    )
    reason = StringField(
        "Reason",
        validators=[
            DataRequired("Say why the count changes."),
            Length(min=5, max=1000, message="At least 5 characters."),
        ],
    )


def with_models(form: ReceiveStockForm | AdjustStockForm, models: list[KeyModel]) -> None:
    form.sku.choices = [SelectChoice(m.sku, m.name) for m in models]
