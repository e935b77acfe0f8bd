"""Forms of the key review."""

from __future__ import annotations

from flask_wtf import FlaskForm

from web.forms import reason_field


class KeyAcceptanceForm(FlaskForm):
    """Counting a flagged key as a Titan: why, in at least as many characters as the service
    (distribution.activation.accept_key) asks for, blanks around it not counted."""

    reason = reason_field(5, stripped=True)
