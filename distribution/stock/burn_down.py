"""The burn-down: keys available day by day since the programme opened, the day they run out at
the recent pace, and the low-stock alert that tells programme staff in time.

Each day's figures are written by the stock ledger itself (``stock_day``, in the transaction of
every change), so the history is exact and reading it costs one small query. The projection
looks at the last ``WINDOW_DAYS`` days: the keys promised in that window (to new codes and
replacements, less keys that came free when codes expired or claims were cancelled) is the
available figure at the window's start, plus stock received or corrected since, minus the
available figure today. Received stock is not demand, so it does not slow the projection down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from accounts.models import Staff, StaffRole, StaffRoleGrant
from core.actors import Actor
from core.audit import record_event
from core.db import utcnow
from core.mail import Mail, Mailer, render
from core.settings import Settings
from distribution.models import (
    TOTAL,
    LowStockAlert,
    MovementKind,
    StockBalance,
    StockDay,
    StockMovement,
)

WINDOW_DAYS = 14


@dataclass(frozen=True)
class Day:
    day: date
    available: int | None  # None before the first recorded day


@dataclass(frozen=True)
class BurnDown:
    days: list[Day]
    available: int
    window_days: int
    promised_in_window: int
    runs_out_on: date | None  # None when nothing is being taken
    closes_on: date
    alerts: tuple[int, ...]

    @property
    def per_day(self) -> float:
        return self.promised_in_window / self.window_days if self.window_days else 0.0

    @property
    def runs_out_after_close(self) -> bool:
        return self.runs_out_on is not None and self.runs_out_on > self.closes_on


def burn_down(*, session: Session, settings: Settings, now: datetime | None = None) -> BurnDown:
    """Available keys per day from the programme's opening (or its first recorded day) to today,
    and when they run out at the pace of the last ``WINDOW_DAYS`` days."""
    now = now or utcnow()
    today = now.date()
    recorded = {
        row.day: row.available
        for row in session.exec(select(StockDay).where(col(StockDay.day) <= today)).all()
    }
    available = _available(session)
    recorded[today] = available
    first = min(min(recorded), settings.programme_opens_at.date())
    days: list[Day] = []
    last: int | None = None
    for offset in range((today - first).days + 1):
        day = first + timedelta(days=offset)
        last = recorded.get(day, last)
        days.append(Day(day, last))

    window_days = min(WINDOW_DAYS, (today - first).days)
    promised = 0
    if window_days:
        start = today - timedelta(days=window_days)
        at_start = next((d.available for d in days if d.day == start), None) or 0
        promised = at_start + _stock_added_since(session, start) - available
    per_day = promised / window_days if window_days else 0.0
    runs_out_on = None
    if per_day > 0:
        runs_out_on = today + timedelta(days=math.ceil(available / per_day))
    return BurnDown(
        days=days,
        available=available,
        window_days=window_days,
        promised_in_window=promised,
        runs_out_on=runs_out_on,
        closes_on=settings.programme_closes_at.date(),
        alerts=settings.low_stock_alerts,
    )


def _stock_added_since(session: Session, day: date) -> int:
    """Keys received or corrected after the end of ``day``."""
    after = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    added = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(StockMovement.quantity), 0)).where(
            col(StockMovement.kind).in_((MovementKind.RECEIVED.value, MovementKind.ADJUSTED.value)),
            col(StockMovement.occurred_at) >= after,
        )
    ).scalar_one()
    return int(added)


def record_day(*, session: Session) -> None:
    """Keep today's programme-wide figures (called by the ledger whenever they change). The
    caller has just updated the total balance row, whose lock it holds until commit: no other
    transaction writes the day's figures in between, so an update, else an insert, is safe."""
    total = session.execute(
        sa.select(col(StockBalance.on_hand), col(StockBalance.committed)).where(
            col(StockBalance.sku) == TOTAL
        )
    ).one()
    figures = {"on_hand": total.on_hand, "available": total.on_hand - total.committed}
    today = utcnow().date()
    updated = session.execute(sa.update(StockDay).where(col(StockDay.day) == today).values(figures))
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        session.execute(sa.insert(StockDay).values(day=today, **figures))


def _available(session: Session) -> int:
    total = session.get(StockBalance, TOTAL)
    return 0 if total is None else total.on_hand - total.committed


def alert_if_low(*, session: Session, mailer: Mailer, settings: Settings) -> int | None:
    """Email programme staff when available keys have fallen below an alert threshold they
    were not told about yet; once per threshold until received stock lifts availability back
    above it. Returns the lowest threshold crossed, if any."""
    available = _available(session)
    told = set(session.exec(select(LowStockAlert.threshold)).all())
    crossed = [t for t in settings.low_stock_alerts if available < t and t not in told]
    if not crossed:
        return None
    try:
        with session.begin_nested():
            for threshold in crossed:
                session.add(
                    LowStockAlert(threshold=threshold, sent_at=utcnow(), available=available)
                )
            session.flush()
    except sa.exc.IntegrityError:
        return None  # a concurrent request crossed it first and told them
    lowest = crossed[-1]
    recipients = _programme_staff(session)
    for email in recipients:
        mailer.send(
            session=session,
            mail=Mail(
                recipient=email,
                subject=f"Low stock: {available:,} keys available (below {lowest:,})",
                body=render(
                    "low_stock_alert.txt",
                    lowest=lowest,
                    available=available,
                    base_url=settings.base_url,
                ),
                purpose="low_stock_alert",
            ),
        )
    record_event(
        session=session,
        actor=Actor.system("low-stock"),
        action="stock.low_stock_alert",
        subject_kind="stock",
        subject_id="*",
        details={"thresholds": crossed, "available": available, "recipients": len(recipients)},
    )
    return lowest


def _programme_staff(session: Session) -> list[str]:
    return list(
        session.exec(
            select(Staff.email)
            .join(StaffRoleGrant, col(StaffRoleGrant.staff_id) == Staff.id)
            .where(col(StaffRoleGrant.role) == StaffRole.PROGRAMME.value, col(Staff.active))
            .order_by(col(Staff.email))
        ).all()
    )
