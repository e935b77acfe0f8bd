"""Forms of the shipping desk: label runs, reprints, shipping, manifests, deliveries, incidents."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    HiddenField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from core.settings import get_settings
from distribution.models import TRACKING_NUMBER_MAX_LENGTH
from web.forms import MultiCheckboxField, WholeNumberField, reason_field


class ShipForm(FlaskForm):
    reference = StringField(
        "Parcel reference (scan the barcode)",
        validators=[DataRequired("Scan or type the reference on the label."), Length(max=40)],
    )
    carrier = SelectField("Carrier", validators=[DataRequired("Choose the carrier.")])
    tracking_number = StringField(
        "Tracking number",
        validators=[
            DataRequired("Enter the carrier's tracking number."),
            Length(max=TRACKING_NUMBER_MAX_LENGTH),
        ],
    )


class ManifestForm(FlaskForm):
    manifest = TextAreaField(
        "Carrier manifest (CSV: reference, carrier, tracking number)",
        validators=[
            DataRequired("Paste the manifest."),
            Length(max=500_000, message="A manifest has at most 500,000 characters."),
        ],
    )


_LAYOUTS = [
    SelectChoice("4x6", "4×6 in thermal"),
    SelectChoice("a4", "A4, two labels a sheet"),
    SelectChoice("letter", "US Letter, two a sheet"),
]


def _default_layout() -> str:
    """KEYS_LABEL_LAYOUT: the forms offer it first, and a form sent without one gets it."""
    return get_settings().label_layout


class LabelRunForm(FlaskForm):
    """Selected parcels, or every parcel the queue's filter shows (``everything``)."""

    claim_ids = MultiCheckboxField("Parcels to put on labels", coerce=int)
    layout = SelectField("Layout", choices=_LAYOUTS, default=_default_layout)
    everything = HiddenField()

    def validate_claim_ids(self, field: MultiCheckboxField) -> None:
        # Not DataRequired: it would mark every checkbox required, and a browser then refuses
        # the form unless all of them are ticked.
        if not field.data and not self.everything.data:
            raise ValidationError("Select at least one parcel.")


class ReprintForm(FlaskForm):
    claim_ids = MultiCheckboxField("Labels to print again", coerce=int)
    layout = SelectField("Layout", choices=_LAYOUTS, default=_default_layout)

    def validate_claim_ids(self, field: MultiCheckboxField) -> None:
        if not field.data:
            raise ValidationError("Select at least one label.")


_AGES = [
    SelectChoice(0, "Any age"),
    SelectChoice(1, "Waiting 1 day or more"),
    SelectChoice(3, "Waiting 3 days or more"),
    SelectChoice(7, "Waiting a week or more"),
]


class QueueFilterForm(FlaskForm):
    """The queue's filter, in the address bar (a GET form: nothing changes)."""

    class Meta:
        csrf = False

    country = SelectField("Destination", validators=[Optional()])
    sku = SelectField("Model", validators=[Optional()])
    min_age_days = SelectField("Age", coerce=int, choices=_AGES, validators=[Optional()])


class FindParcelForm(FlaskForm):
    class Meta:
        csrf = False

    reference = StringField(
        "Parcel reference (scan the barcode)",
        validators=[DataRequired("Scan or type the reference on the label."), Length(max=40)],
    )


class ReasonForm(FlaskForm):
    """Voiding a label, a returned or lost parcel, a decision: a few words of why."""

    reason = reason_field(3)


class NoteForm(FlaskForm):
    reason = TextAreaField("Note (optional)", validators=[Optional(), Length(max=1000)])


class DamagedKeyForm(ReasonForm):
    sku = SelectField("Damaged key", validators=[DataRequired("Choose the damaged key.")])
    # At most the parcel's keys of that model not reported yet: the service says how many.
    quantity = WholeNumberField(
        "How many keys of that model",
        default=1,
        validators=[
            DataRequired("Enter how many keys of that model arrived damaged."),
            NumberRange(min=1, max=10, message="Between 1 and 10."),
        ],
    )


class DeliveriesForm(FlaskForm):
    deliveries = TextAreaField(
        "Delivery events (CSV: reference, delivered at)",
        validators=[
            DataRequired("Paste the delivery events."),
            Length(max=500_000, message="At most 500,000 characters."),
        ],
    )
