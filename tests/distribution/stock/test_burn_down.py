"""The burn-down: each day's figures kept by the ledger, the projection, the low-stock alert."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlmodel import select

from accounts.models import StaffRole
from core.audit import AuditEvent
from core.db import utcnow
from core.mail import OutboxMailer, OutboxMessage
from distribution.models import StockDay
from distribution.stock import burn_down
from distribution.stock import services as stock
from tests.factories import (
    ACTOR,
    USB_A,
    USB_C,
    claim_code,
    make_staff,
    receive_keys,
    stock_famous_project,
)


def issue_codes(session, settings, count):
    for _ in range(count):
        claim_code(session, settings)


def alerts_sent(session):
    return [
        (m.recipient, m.subject)
        for m in session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        if m.purpose == "low_stock_alert"
    ]


def test_the_ledger_keeps_each_days_figures(session, settings):
    stock_famous_project(session, {USB_A: 6, USB_C: 4})
    issue_codes(session, settings, 2)

    rows = session.exec(select(StockDay)).all()
    assert [(r.day, r.on_hand, r.available) for r in rows] == [(utcnow().date(), 10, 6)]


def test_the_projection_uses_the_last_fourteen_days_and_ignores_received_stock(session, settings):
    today = utcnow().date()
    # Recorded history: nothing available two weeks ago, 50 keys nine days ago.
    session.add(StockDay(day=today - timedelta(days=14), on_hand=0, available=0))
    session.add(StockDay(day=today - timedelta(days=9), on_hand=50, available=50))
    session.flush()
    stock_famous_project(session, {USB_A: 100})  # received today: not demand
    issue_codes(session, settings, 7)  # 14 keys promised

    result = burn_down.burn_down(session=session, settings=settings)

    assert result.available == 86
    assert (result.window_days, result.promised_in_window, result.per_day) == (14, 14, 1.0)
    assert result.runs_out_on == today + timedelta(days=86)
    assert not result.runs_out_after_close
    # One point per day since the programme opened; days before the first record have none,
    # days without a change carry the last figure forward.
    assert result.days[0].day == settings.programme_opens_at.date()
    assert result.days[-1].day == today
    by_day = {d.day: d.available for d in result.days}
    assert by_day[today - timedelta(days=15)] is None
    assert by_day[today - timedelta(days=10)] == 0
    assert by_day[today - timedelta(days=1)] == 50
    assert by_day[today] == 86


def test_nothing_promised_means_no_day_of_running_out(session, settings):
    stock_famous_project(session, {USB_A: 10})
    result = burn_down.burn_down(session=session, settings=settings)
    assert (result.available, result.promised_in_window, result.runs_out_on) == (10, 0, None)


def test_programme_staff_are_told_once_per_threshold_until_stock_arrives(session, settings):
    settings = dataclasses.replace(settings, low_stock_alerts=(10, 5))
    programme = make_staff(session, roles=[StaffRole.PROGRAMME], email="pat@example.org")
    make_staff(session, roles=[StaffRole.SHIPPING], email="sid@example.org")
    stock_famous_project(session, {USB_A: 12})

    issue_codes(session, settings, 1)  # 10 left: not below 10
    assert alerts_sent(session) == []
    issue_codes(session, settings, 1)  # 8 left: below 10
    assert alerts_sent(session) == [
        (programme.email, "Low stock: 8 keys available (below 10)"),
    ]
    issue_codes(session, settings, 1)  # 6: below 10 still, told already
    assert len(alerts_sent(session)) == 1
    issue_codes(session, settings, 1)  # 4: below 5
    assert alerts_sent(session)[-1] == (programme.email, "Low stock: 4 keys available (below 5)")

    receive_keys(session, {USB_A: 10}, reference="B-2")  # 14 available: both re-armed
    issue_codes(session, settings, 1)  # 12
    assert len(alerts_sent(session)) == 2
    stock.adjust_stock(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        sku=USB_A,
        quantity=-3,
        reason="three found broken",
    )  # 9: below 10 again, after new stock
    assert alerts_sent(session)[-1] == (programme.email, "Low stock: 9 keys available (below 10)")
    events = session.exec(
        select(AuditEvent).where(AuditEvent.action == "stock.low_stock_alert")
    ).all()
    assert [e.details["thresholds"] for e in events] == [[10], [5], [10]]


@pytest.mark.parametrize("thresholds", [(), (1,)])
def test_no_alert_when_none_is_crossed(session, settings, thresholds):
    settings = dataclasses.replace(settings, low_stock_alerts=thresholds)
    make_staff(session, roles=[StaffRole.PROGRAMME])
    stock_famous_project(session, {USB_A: 4})
    issue_codes(session, settings, 1)
    assert alerts_sent(session) == []
