"""How the product writes dates, times and numbers: one function per meaning, and one place that
decides. Templates reach them as Jinja filters (``web.filters``), and the messages and emails
the features write call them directly, so a day reads the same on a page, in an error and in a
mail. Times are written in UTC, and say so. When the product speaks other languages, these
functions are where Babel comes in, and no caller has to change."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime


def day(moment: date) -> str:
    """A day in prose: ``7 December 2026``."""
    moment = _utc(moment) if isinstance(moment, datetime) else moment
    return f"{moment.day} {moment:%B %Y}"


def day_and_time(moment: datetime) -> str:
    """A moment in prose: ``7 December 2026, 14:05 UTC``."""
    return f"{day(moment)}, {time_of_day(moment)}"


def time_of_day(moment: datetime) -> str:
    """The time alone, when the day goes without saying: ``14:05 UTC``."""
    return f"{_utc(moment):%H:%M} UTC"


def short_day(moment: date) -> str:
    """A day in a dense staff table or list: ``7 Dec 2026``."""
    moment = _utc(moment) if isinstance(moment, datetime) else moment
    return f"{moment.day} {moment:%b %Y}"


def short_day_and_time(moment: datetime) -> str:
    """A moment in a dense staff table or list: ``7 Dec 2026, 14:05 UTC``."""
    return f"{short_day(moment)}, {time_of_day(moment)}"


def stamp(moment: datetime) -> str:
    """A moment in a queue or ledger that staff read in order: ``2026-12-07 14:05 UTC``."""
    return f"{_utc(moment):%Y-%m-%d %H:%M} UTC"


def precise_stamp(moment: datetime) -> str:
    """A moment in a log, where the order within a minute matters: ``2026-12-07 14:05:09 UTC``."""
    return f"{_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


def number(n: int | float) -> str:
    """A count or amount with thousands separators: ``12,345``."""
    return f"{n:,}"


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC when it knows its zone (the database's always do); naive, as it is."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment


# Every function above by the name templates call it (``{{ claim.created_at|day }}``): the
# filters of the pages (web.filters) and of the mail (core.mail), so both write a day alike.
FILTERS: dict[str, Callable[..., str]] = {
    "day": day,
    "day_and_time": day_and_time,
    "time_of_day": time_of_day,
    "short_day": short_day,
    "short_day_and_time": short_day_and_time,
    "stamp": stamp,
    "precise_stamp": precise_stamp,
    "number": number,
}
