"""Form widgets every package uses: whole numbers that fit a column, checkbox lists, a reason
in a few words, and the status code a form answers with."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectMultipleField, TextAreaField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget


def form_status(form: FlaskForm) -> int:
    """400 when a submitted form has errors, so scripts and tests see the refusal."""
    return 400 if form.errors else 200


_LARGEST_NUMBER = 2**63 - 1


class WholeNumberField(IntegerField):
    """An integer field for the numbers people type here (counts, totals, ids), which never
    come near 2**63. A longer number is refused as too large: WTForms' NumberRange compares
    through ``math.isnan``, which overflows on an integer past about 10**308 (a 500)."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        if valuelist and _too_large(valuelist[0]):
            raise ValueError("That number is far too large.")  # the data keeps its default
        super().process_formdata(valuelist)


def _too_large(text: Any) -> bool:
    try:
        return abs(int(text)) > _LARGEST_NUMBER
    except (TypeError, ValueError):
        return False  # not a number at all: IntegerField says so


class MultiCheckboxField(SelectMultipleField):
    """Several choices as checkboxes."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def reason_field(shortest: int, *, stripped: bool = False) -> TextAreaField:
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
