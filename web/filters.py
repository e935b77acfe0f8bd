"""Jinja filters for every template: ``{{ claim.created_at|day }}``, ``{{ count|number }}``.

They are ``core.formats`` under the same names, so a template writes a date exactly as a
message or an email does; how each reads is decided there, not here."""

from __future__ import annotations

from flask import Flask

from core import formats


def init_app(app: Flask) -> None:
    """Register the filters on ``app``'s templates."""
    for name, function in formats.FILTERS.items():
        app.add_template_filter(function, name)
