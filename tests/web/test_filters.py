"""Every template can write dates and numbers through the filters of ``core.formats``."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask

MOMENT = datetime(2026, 12, 7, 14, 5, 9, tzinfo=UTC)


def test_the_formats_are_filters_of_every_template(app: Flask):
    template = app.jinja_env.from_string(
        "{{ at|day }} | {{ at|day_and_time }} | {{ at|time_of_day }} | {{ at|short_day }} | "
        "{{ at|short_day_and_time }} | {{ at|stamp }} | {{ at|precise_stamp }} | {{ n|number }}"
    )
    assert template.render(at=MOMENT, n=12345) == (
        "7 December 2026 | 7 December 2026, 14:05 UTC | 14:05 UTC | 7 Dec 2026 | "
        "7 Dec 2026, 14:05 UTC | 2026-12-07 14:05 UTC | 2026-12-07 14:05:09 UTC | 12,345"
    )
