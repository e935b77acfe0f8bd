"""Input validation for claims and stock; the redemption form is built per destination."""

from __future__ import annotations

from collections.abc import Mapping

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    Field,
    HiddenField,
    SelectField,
    StringField,
    TelField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from accounts.forms import MultiCheckboxField, WholeNumberField
from distribution.addresses import AddressField, address_fields
from distribution.models import TRACKING_NUMBER_MAX_LENGTH, KeyModel
from settings import get_settings

ADDRESS_PREFIX = "address_"
QUANTITY_PREFIX = "quantity_"
# What the address library's error codes mean to the person filling in the form.
_ADDRESS_MESSAGES = {
    "required": "Enter the {label}.",
    "invalid": "Check the {label}: it does not look right for this country.",
    "forbidden": "Leave the {label} empty for this country.",
    "not_served": "We cannot ship there.",
}


class ShippingForm(FlaskForm):
    """Who receives the parcel and how the carrier reaches them; the address is added per
    country by ``shipping_form_for``."""

    country = HiddenField()
    recipient_name = StringField(
        "Name on the label, in Latin letters",
        validators=[DataRequired("Enter the name for the label."), Length(max=100)],
    )
    recipient_name_local = StringField(
        "Name in your own script (optional)", validators=[Optional(), Length(max=200)]
    )
    phone = TelField(
        "Phone number, for the carrier",
        validators=[
            DataRequired("Enter a phone number: carriers call if they cannot deliver."),
            Length(max=40),
        ],
    )

    def address(self) -> dict[str, str]:
        """The address fields in the library's names, with the country and the name."""
        values = {
            name.removeprefix(ADDRESS_PREFIX): field.data or ""
            for name, field in self._fields.items()
            if name.startswith(ADDRESS_PREFIX)
        }
        return {**values, "country_code": self.country.data, "name": self.recipient_name.data}

    def explain_address_errors(
        self, errors: Mapping[str, str], messages: Mapping[str, str] | None = None
    ) -> None:
        """Put each problem beside its field, once: a field that already shows an error keeps
        it. ``messages`` holds the checks' own wording where it is clearer than the codes'."""
        for name, code in errors.items():
            field = self._field_for(name) or self.recipient_name
            if field.errors:
                continue
            label = field.label.text.lower()
            message = (messages or {}).get(name) or _ADDRESS_MESSAGES.get(
                code, "Check this field."
            ).format(label=label)
            field.errors = [message]

    def _field_for(self, name: str) -> Field | None:
        if name in ("name", "name_latin"):
            return self.recipient_name
        if name == "phone":
            return self.phone
        field: Field | None = self._fields.get(ADDRESS_PREFIX + name)
        return field


class RedemptionForm(ShippingForm):
    code = StringField(
        "Claim code",
        validators=[DataRequired("Enter the claim code from your email."), Length(max=60)],
    )
    # Made by the page (32 characters); the column keeps 64.
    idempotency_key = HiddenField(
        validators=[
            Length(
                max=64, message="The form was changed on its way. Reload the page, then send it."
            )
        ]
    )

    def quantities(self) -> dict[str, int]:
        return {
            name.removeprefix(QUANTITY_PREFIX): int(field.data or 0)
            for name, field in self._fields.items()
            if name.startswith(QUANTITY_PREFIX)
        }


def shipping_form_for(
    base: type[ShippingForm],
    *,
    country: str,
    models: list[KeyModel] | None = None,
    allowance: int = 0,
) -> type[ShippingForm]:
    """A form class with the country's address fields (in its order, with its labels) and,
    for a redemption, a quantity per key model."""

    class CountryForm(base):  # type: ignore[valid-type,misc]
        pass

    for model in models or []:
        setattr(
            CountryForm,
            QUANTITY_PREFIX + model.sku,
            WholeNumberField(
                model.name,
                default=0,
                validators=[
                    NumberRange(min=0, max=allowance, message=f"Choose between 0 and {allowance}.")
                ],
            ),
        )
    for spec in address_fields(country):
        if spec.name != "name":
            setattr(CountryForm, ADDRESS_PREFIX + spec.name, _address_field(spec))
    return CountryForm


def _address_field(spec: AddressField) -> Field:
    validators = (
        [DataRequired(f"Enter the {spec.label.lower()}.")] if spec.required else [Optional()]
    )
    description = f"For example {spec.example}" if spec.example else ""
    if spec.choices:
        return SelectField(
            spec.label,
            choices=[SelectChoice("", "Choose…")]
            + [SelectChoice(value, label) for value, label in spec.choices],
            validators=validators,
            description=description,
        )
    return StringField(
        spec.label, validators=[*validators, Length(max=200)], description=description
    )


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


def _reason_field(shortest: int, *, stripped: bool = False) -> TextAreaField:
    """A few words of why, ``shortest`` characters at least (``stripped``: blanks around them
    not counted)."""
    return TextAreaField(
        "Reason",
        filters=[lambda text: text.strip() if isinstance(text, str) else text] if stripped else [],
        validators=[
            DataRequired("Say why, in a few words."),
            Length(min=shortest, max=1000, message=f"Between {shortest} and 1,000 characters."),
        ],
    )


class ReasonForm(FlaskForm):
    """Voiding a label, a returned or lost parcel, a decision: a few words of why."""

    reason = _reason_field(3)


class KeyAcceptanceForm(FlaskForm):
    """Counting a flagged key as a Titan: why, in at least as many characters as the service
    (distribution.activation.accept_key) asks for, blanks around it not counted."""

    reason = _reason_field(5, stripped=True)


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


class ErasureForm(FlaskForm):
    """A maintainer asks for their personal data to be erased: a deliberate, confirmed step."""

    confirm = BooleanField(
        "I understand that my names, phone numbers and addresses are erased and cannot be "
        "brought back",
        validators=[DataRequired("Tick the box to confirm that you want them erased.")],
    )
