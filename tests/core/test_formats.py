"""Dates, times and numbers read the same wherever the product writes them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from core import formats

MOMENT = datetime(2026, 12, 7, 14, 5, 9, tzinfo=UTC)


def test_each_meaning_has_its_one_form():
    assert formats.day(MOMENT) == "7 December 2026"
    assert formats.day_and_time(MOMENT) == "7 December 2026, 14:05 UTC"
    assert formats.time_of_day(MOMENT) == "14:05 UTC"
    assert formats.short_day(MOMENT) == "7 Dec 2026"
    assert formats.short_day_and_time(MOMENT) == "7 Dec 2026, 14:05 UTC"
    assert formats.stamp(MOMENT) == "2026-12-07 14:05 UTC"
    assert formats.precise_stamp(MOMENT) == "2026-12-07 14:05:09 UTC"


def test_a_plain_day_is_written_like_a_moment_on_it():
    assert formats.day(date(2026, 12, 7)) == "7 December 2026"
    assert formats.short_day(date(2026, 12, 7)) == "7 Dec 2026"


def test_a_moment_in_another_zone_is_written_in_utc():
    sydney = MOMENT.astimezone(timezone(timedelta(hours=10)))  # 00:05 on 8 December there
    assert formats.day(sydney) == "7 December 2026"
    assert formats.day_and_time(sydney) == "7 December 2026, 14:05 UTC"
    assert formats.stamp(sydney) == "2026-12-07 14:05 UTC"


def test_numbers_have_thousands_separators():
    assert formats.number(1234567) == "1,234,567"
    assert formats.number(12) == "12"
    assert formats.number(1234.5) == "1,234.5"
