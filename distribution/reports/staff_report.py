"""The staff report as one document: its three parts, their charts (the same on the page and in
the PDF) and each table as rows for CSV."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlmodel import Session

from adapters import charts
from core import formats
from core.db import utcnow
from core.settings import Settings
from distribution.reports.services import (
    ProgrammeReport,
    StockReport,
    all_claims,
    programme_report,
    stock_report,
)
from distribution.stock.burn_down import BurnDown, burn_down


@dataclass(frozen=True)
class StaffReport:
    stock: StockReport
    programme: ProgrammeReport
    burn_down: BurnDown


@dataclass(frozen=True)
class ReportCharts:
    """The report's charts as SVG ``data:`` URIs, each with a sentence for its alt text."""

    burn_down: tuple[str, str]
    funnel: tuple[str, str]
    stock: tuple[str, str]


def staff_report(
    *, session: Session, settings: Settings, now: datetime | None = None
) -> StaffReport:
    now = now or utcnow()
    claims = all_claims(session=session)
    return StaffReport(
        stock=stock_report(session=session, now=now, claims=claims),
        programme=programme_report(session=session, now=now, claims=claims),
        burn_down=burn_down(session=session, settings=settings, now=now),
    )


def report_charts(report: StaffReport) -> ReportCharts:
    trend = report.burn_down
    projection: tuple[tuple[date, int], ...] = ()
    label = ""
    if trend.runs_out_on and trend.days:
        # Drawn no further than the programme's close, or a slow pace squeezes the history.
        end = min(trend.runs_out_on, trend.closes_on)
        left = max(0, round(trend.available - trend.per_day * (end - trend.days[-1].day).days))
        projection = ((trend.days[-1].day, trend.available), (end, left))
        label = (
            f"{left:,} left at the close, {formats.short_day(end)}"
            if trend.runs_out_after_close
            else f"at this pace, none left about {formats.short_day(end)}"
        )
    if trend.runs_out_on:
        outlook = (
            f"at {trend.per_day:,.1f} a day they run out about {formats.day(trend.runs_out_on)}"
        )
    else:
        outlook = "no keys were taken in the last days, so no day of running out is projected"
    funnel = report.programme.funnel
    stock = report.stock
    where = [
        ("available", "Available"),
        ("reserved", "Reserved by codes"),
        ("allocated", "Allocated to parcels"),
        ("in_transit", "In transit"),
        ("delivered", "Delivered"),
        ("activated", "Activated as Titans"),
        ("written_off", "Written off"),
    ]
    return ReportCharts(
        burn_down=(
            charts.burn_down_chart(
                tuple(d.day for d in trend.days),
                tuple(d.available for d in trend.days),
                projection,
                label,
                trend.alerts,
            ),
            f"Keys available per day: {trend.available:,} today; {outlook}.",
        ),
        funnel=(
            charts.bar_chart(
                "From eligible maintainer to activated keys",
                tuple(
                    (step.label, step.count, _count_and_share(step.count, step.of_previous))
                    for step in funnel
                ),
            ),
            "Claims at each step: "
            + "; ".join(f"{step.label.lower()} {step.count:,}" for step in funnel)
            + ".",
        ),
        stock=(
            charts.bar_chart(
                "Where the keys are",
                tuple(
                    (label, stock.figure(key) or 0, f"{stock.figure(key) or 0:,}")
                    for key, label in where
                ),
            ),
            "Keys by state: "
            + "; ".join(f"{label.lower()} {stock.figure(key) or 0:,}" for key, label in where)
            + ".",
        ),
    )


def _count_and_share(count: int, share: float | None) -> str:
    return f"{count:,}" if share is None else f"{count:,} ({share:.0%} of the step before)"


Table = tuple[list[object], list[list[object]]]
TABLES = ("stock", "funnel", "countries", "times", "burn-down")


def report_table(report: StaffReport, name: str) -> Table:
    """One table of the report as a header and rows, for CSV."""
    if name == "stock":
        stock = report.stock
        return (
            ["figure", *(sku for sku, _ in stock.columns)],
            [
                [label, *(values[sku] for sku, _ in stock.columns)]
                for _k, label, values in stock.rows
            ],
        )
    if name == "funnel":
        return (
            ["step", "claims", "share_of_previous", "share_of_eligible"],
            [
                [s.label, s.count, _ratio(s.of_previous), _ratio(s.of_first)]
                for s in report.programme.funnel
            ],
        )
    if name == "countries":
        return (
            [
                "country_code",
                "country",
                "codes_issued",
                "redeemed",
                "shipped",
                "delivered",
                "activated",
            ],
            [
                [c.code, c.name, c.issued, c.redeemed, c.shipped, c.delivered, c.activated]
                for c in report.programme.countries
            ],
        )
    if name == "times":
        return (
            ["span", "claims", "median_days", "p90_days"],
            [[d.label, d.count, d.median_days, d.p90_days] for d in report.programme.durations],
        )
    if name == "burn-down":
        return (
            ["day", "available"],
            [[d.day.isoformat(), d.available] for d in report.burn_down.days],
        )
    raise KeyError(name)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
