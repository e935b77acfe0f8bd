"""Jinja filters for every template: ``{{ claim.created_at|day }}``, ``{{ count|number }}``.

They are ``core.formats`` under the same names, so a template writes a date exactly as a
message or an email does; how each reads is decided there, not here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

from core import formats

FILTERS: dict[str, Callable[..., Any]] = {
    "day": formats.day,
    "day_and_time": formats.day_and_time,
    "time_of_day": formats.time_of_day,
    "short_day": formats.short_day,
    "short_day_and_time": formats.short_day_and_time,
    "stamp": formats.stamp,
    "precise_stamp": formats.precise_stamp,
    "number": formats.number,
}


def init_app(app: Flask) -> None:
    """Register the filters on ``app``'s templates."""
    for name, function in FILTERS.items():
        app.add_template_filter(function, name)
