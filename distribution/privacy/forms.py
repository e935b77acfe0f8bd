"""Forms of erasure requests."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField
from wtforms.validators import DataRequired


class ErasureForm(FlaskForm):
    """A maintainer asks for their personal data to be erased: a deliberate, confirmed step."""

    confirm = BooleanField(
        "I understand that my names, phone numbers and addresses are erased and cannot be "
        "brought back",
        validators=[DataRequired("Tick the box to confirm that you want them erased.")],
    )
