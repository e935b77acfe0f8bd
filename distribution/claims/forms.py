"""Forms of the claim pages: the shipping address, built per country, and redemption."""

from __future__ import annotations

from collections.abc import Mapping

from flask_wtf import FlaskForm
from wtforms import (
    Field,
    HiddenField,
    SelectField,
    StringField,
    TelField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from adapters.addresses import AddressField, address_fields
from distribution.models import KeyModel
from web.forms import WholeNumberField

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
