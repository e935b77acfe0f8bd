"""Reports: where the keys are (stock) and how claims move through the programme (funnel,
countries, times). The public aggregates build on them in ``transparency``, the staff document
(charts, CSV tables) in ``staff_report``.

Each report reads a handful of rows per claim and parcel in a few queries and does its sums in
Python: a programme of 4,000 keys is a few thousand rows, and one pass over them is cheaper
than a query per figure. The stock report checks the ledger against the parcels and codes it
should agree with, so a movement written around the services shows as a failed check.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

import sqlalchemy as sa
from sqlmodel import Session, col

from accounts.models import Maintainer
from core.countries import country_name
from core.db import utcnow
from distribution.models import (
    Claim,
    ClaimStatus,
    ExceptionKind,
    MovementKind,
    ParcelException,
    Replacement,
    Shipment,
    StockMovement,
)
from distribution.stock.services import StockFigures, stock_figures
from eligibility.critical import current_list
from eligibility.models import Appeal, AppealStatus, CriticalEntry, Project, ProjectRole

TOTAL = "total"
# Claims whose current parcel holds keys allocated to it, not yet (or no longer) shipped.
_HOLDING_KEYS = (ClaimStatus.REDEEMED, ClaimStatus.LABEL_PRINTED, ClaimStatus.RETURNED)


# --- what the reports read --------------------------------------------------------------------


@dataclass(frozen=True)
class ParcelFacts:
    """What the reports need of a parcel (no address)."""

    claim_id: int
    id: int
    country: str
    items: dict[str, int]
    shipped_at: datetime | None
    delivered_at: datetime | None
    exception: str | None  # returned or lost, if it went wrong in transit


@dataclass(frozen=True)
class ClaimFacts:
    """What the reports need of a claim, with its parcels oldest first."""

    id: int
    status: ClaimStatus
    keys_reserved: int
    issued_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None
    activated_at: datetime | None
    profile_country: str | None
    parcels: list[ParcelFacts] = field(default_factory=list)

    @cached_property
    def current(self) -> ParcelFacts | None:
        return self.parcels[-1] if self.parcels else None

    @cached_property
    def shipped(self) -> list[ParcelFacts]:
        return [p for p in self.parcels if p.shipped_at is not None]

    @cached_property
    def first_shipped_at(self) -> datetime | None:
        return min((p.shipped_at for p in self.shipped if p.shipped_at), default=None)

    @cached_property
    def delivered(self) -> bool:
        return any(p.delivered_at for p in self.parcels)

    @cached_property
    def country(self) -> str | None:
        """Where the keys went (the newest parcel), or the profile's country before that."""
        return self.current.country if self.current else self.profile_country


def all_claims(*, session: Session) -> list[ClaimFacts]:
    """Every claim with its parcels, oldest parcel first: three queries."""
    exceptions = dict(
        session.execute(
            sa.select(col(ParcelException.shipment_id), col(ParcelException.kind)).where(
                col(ParcelException.kind).in_(
                    (ExceptionKind.RETURNED.value, ExceptionKind.LOST.value)
                )
            )
        ).all()
    )
    parcels: dict[int, list[ParcelFacts]] = defaultdict(list)
    for row in session.execute(
        sa.select(
            col(Shipment.claim_id),
            col(Shipment.id),
            col(Shipment.country),
            col(Shipment.items),
            col(Shipment.shipped_at),
            col(Shipment.delivered_at),
        ).order_by(col(Shipment.id))
    ):
        parcels[row.claim_id].append(
            ParcelFacts(
                claim_id=row.claim_id,
                id=row.id,
                country=row.country,
                items=dict(row.items),
                shipped_at=row.shipped_at,
                delivered_at=row.delivered_at,
                exception=exceptions.get(row.id),
            )
        )
    return [
        ClaimFacts(
            id=row.id,
            status=ClaimStatus(row.status),
            keys_reserved=row.keys_reserved,
            issued_at=row.issued_at,
            expires_at=row.expires_at,
            redeemed_at=row.redeemed_at,
            activated_at=row.activated_at,
            profile_country=row.country,
            parcels=parcels.get(row.id, []),
        )
        for row in session.execute(
            sa.select(
                col(Claim.id),
                col(Claim.status),
                col(Claim.keys_reserved),
                col(Claim.issued_at),
                col(Claim.expires_at),
                col(Claim.redeemed_at),
                col(Claim.activated_at),
                col(Maintainer.country),
            )
            .join(Maintainer, col(Maintainer.id) == Claim.maintainer_id)
            .order_by(col(Claim.id))
        )
    ]


def _add(into: Counter[str], items: Mapping[str, int]) -> None:
    for sku, quantity in items.items():
        into[sku] += quantity
        into[TOTAL] += quantity


# --- the stock report -------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One reconciliation: a figure as two independent sources give it."""

    name: str
    expected: int
    found: int
    column: str  # a model's SKU, or "total"

    @property
    def ok(self) -> bool:
        return self.expected == self.found


@dataclass(frozen=True)
class StockReport:
    columns: list[tuple[str, str]]  # (sku or "total", heading)
    rows: list[tuple[str, str, dict[str, int | None]]]  # (key, label, figure per column)
    checks: list[Check]
    taken_at: datetime
    balances: StockFigures  # the stock desk's figures the report starts from

    @property
    def reconciles(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def figure(self, key: str, column: str = TOTAL) -> int | None:
        return next(values for k, _label, values in self.rows if k == key)[column]


STOCK_ROWS = (
    ("received", "Received"),
    ("adjusted", "Corrected by stocktakes"),
    ("on_hand", "On hand"),
    ("available", "Available to promise"),
    ("reserved", "Reserved by unredeemed codes"),
    ("allocated", "Allocated to parcels not yet shipped"),
    ("shipped", "Shipped"),
    ("in_transit", "In transit"),
    ("delivered", "Delivered"),
    ("activated", "Activated as Titans"),
    ("returned", "Returned to sender"),
    ("written_off", "Written off (lost in transit or written off)"),
)


def stock_report(
    *, session: Session, now: datetime | None = None, claims: list[ClaimFacts] | None = None
) -> StockReport:
    """Keys per model and in total, from receipt to activation, with the checks that prove
    the ledger, the balances, the codes and the parcels agree."""
    balances = stock_figures(session=session)
    ledger: dict[str, Counter[str]] = defaultdict(Counter)
    for sku, kind, quantity in session.execute(
        sa.select(
            col(StockMovement.sku), col(StockMovement.kind), sa.func.sum(StockMovement.quantity)
        ).group_by(col(StockMovement.sku), col(StockMovement.kind))
    ):
        ledger[kind][sku] += int(quantity)
        ledger[kind][TOTAL] += int(quantity)

    shipped, in_transit, delivered, activated, returned, lost, holding = (
        Counter[str]() for _ in range(7)
    )
    reserved_by_codes = 0
    for claim in all_claims(session=session) if claims is None else claims:
        if claim.status == ClaimStatus.ISSUED:
            reserved_by_codes += claim.keys_reserved
        if claim.status in _HOLDING_KEYS and claim.current:
            _add(holding, claim.current.items)
        for parcel in claim.shipped:
            _add(shipped, parcel.items)
            if parcel.exception == ExceptionKind.RETURNED:
                _add(returned, parcel.items)
            elif parcel.exception == ExceptionKind.LOST:
                _add(lost, parcel.items)
            elif parcel.delivered_at:
                _add(delivered, parcel.items)
                if claim.status == ClaimStatus.ACTIVATED:
                    _add(activated, parcel.items)
            else:
                _add(in_transit, parcel.items)

    models = {m.sku: m for m in balances.models}
    columns = [(m.sku, m.name) for m in balances.models] + [(TOTAL, "All models")]

    def by_column(total: int | None, per_model: Mapping[str, int | None]) -> dict[str, int | None]:
        return {**{sku: per_model.get(sku, 0) for sku, _ in columns[:-1]}, TOTAL: total}

    def counted(counter: Mapping[str, int], sign: int = 1) -> dict[str, int | None]:
        return by_column(sign * counter.get(TOTAL, 0), {k: sign * v for k, v in counter.items()})

    written_off = Counter(lost)
    for sku, quantity in ledger[MovementKind.WRITTEN_OFF.value].items():
        written_off[sku] -= quantity
    rows: dict[str, dict[str, int | None]] = {
        "received": counted(ledger[MovementKind.RECEIVED.value]),
        "adjusted": counted(ledger[MovementKind.ADJUSTED.value]),
        "on_hand": by_column(balances.on_hand, {s: m.on_hand for s, m in models.items()}),
        "available": by_column(balances.available, {s: m.available for s, m in models.items()}),
        # Codes reserve keys of no model in particular.
        "reserved": by_column(balances.reserved, {s: None for s in models}),
        "allocated": by_column(balances.allocated, {s: m.allocated for s, m in models.items()}),
        "shipped": counted(ledger[MovementKind.SHIPPED.value], -1),
        "in_transit": counted(in_transit),
        "delivered": counted(delivered),
        "activated": counted(activated),
        "returned": counted(ledger[MovementKind.RETURNED.value]),
        "written_off": counted(written_off),
    }

    checks: list[Check] = []
    for sku, _heading in columns:
        ledger_sum = sum(ledger[kind][sku] for kind in ledger)
        checks += [
            Check("On hand is the sum of the ledger", ledger_sum, rows["on_hand"][sku] or 0, sku),
            Check(
                "Shipped in the ledger is what the shipped parcels hold",
                rows["shipped"][sku] or 0,
                shipped[sku],
                sku,
            ),
            Check(
                "Returned in the ledger is what the returned parcels held",
                rows["returned"][sku] or 0,
                returned[sku],
                sku,
            ),
            Check(
                "Allocated is what the parcels waiting to ship hold",
                rows["allocated"][sku] or 0,
                holding[sku],
                sku,
            ),
        ]
    checks.append(
        Check("Reserved is what unredeemed codes hold", balances.reserved, reserved_by_codes, TOTAL)
    )
    return StockReport(
        columns=columns,
        rows=[(key, label, rows[key]) for key, label in STOCK_ROWS],
        checks=checks,
        taken_at=now or utcnow(),
        balances=balances,
    )


# --- the programme report ---------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    label: str
    count: int
    of_previous: float | None  # share of the step before
    of_first: float | None


@dataclass(frozen=True)
class CountryLine:
    code: str
    name: str
    issued: int
    redeemed: int
    shipped: int
    delivered: int
    activated: int


@dataclass(frozen=True)
class Duration:
    label: str
    count: int
    median: timedelta | None
    p90: timedelta | None

    @property
    def median_days(self) -> float | None:
        return _days(self.median)

    @property
    def p90_days(self) -> float | None:
        return _days(self.p90)


def _days(span: timedelta | None) -> float | None:
    return None if span is None else round(span / timedelta(days=1), 1)


@dataclass(frozen=True)
class ProgrammeReport:
    funnel: list[Step]
    countries: list[CountryLine]
    durations: list[Duration]
    expiring_codes: int
    expiring_by_day: list[tuple[datetime, int]]
    open_appeals: int
    open_replacements: int
    awaiting_address: int
    taken_at: datetime


def programme_report(
    *, session: Session, now: datetime | None = None, claims: list[ClaimFacts] | None = None
) -> ProgrammeReport:
    """The funnel from eligible maintainer to activated keys, by country and in time."""
    now = now or utcnow()
    claims = all_claims(session=session) if claims is None else claims
    shipped = [c for c in claims if c.shipped]
    counts = [
        ("Eligible maintainers", eligible_maintainers(session=session)),
        ("Codes issued", len(claims)),
        ("Redeemed", sum(1 for c in claims if c.redeemed_at)),
        ("Shipped", len(shipped)),
        ("Delivered", sum(1 for c in claims if c.delivered)),
        ("Activated", sum(1 for c in claims if c.activated_at)),
    ]
    funnel = [
        Step(
            label,
            count,
            _share(count, counts[i - 1][1]) if i else None,
            _share(count, counts[0][1]) if i else None,
        )
        for i, (label, count) in enumerate(counts)
    ]

    per_country: dict[str, Counter[str]] = defaultdict(Counter)
    for claim in claims:
        line = per_country[claim.country or "??"]
        line["issued"] += 1
        line["redeemed"] += bool(claim.redeemed_at)
        line["shipped"] += bool(claim.shipped)
        line["delivered"] += claim.delivered
        line["activated"] += bool(claim.activated_at)
    countries = sorted(
        (
            CountryLine(
                code=code,
                name=country_name(code) if code != "??" else "Not given",
                **{k: line[k] for k in ("issued", "redeemed", "shipped", "delivered", "activated")},
            )
            for code, line in per_country.items()
        ),
        key=lambda line: (-line.issued, line.name),
    )

    to_ship = [c.first_shipped_at - c.issued_at for c in shipped if c.first_shipped_at]
    to_activate = [
        c.activated_at - c.first_shipped_at
        for c in shipped
        if c.activated_at and c.first_shipped_at
    ]
    soon = [
        c.expires_at
        for c in claims
        if c.status == ClaimStatus.ISSUED and now <= c.expires_at < now + timedelta(days=7)
    ]
    by_day = Counter(moment.replace(hour=0, minute=0, second=0, microsecond=0) for moment in soon)
    return ProgrammeReport(
        funnel=funnel,
        countries=countries,
        durations=[
            _duration("From code to shipment", to_ship),
            _duration("From shipment to activation", to_activate),
        ],
        expiring_codes=len(soon),
        expiring_by_day=sorted(by_day.items()),
        open_appeals=_count(session, Appeal, col(Appeal.status) == AppealStatus.OPEN.value),
        # Per claim, as the replacements page lists them (a damaged key is one row each).
        open_replacements=int(
            session.execute(
                sa.select(sa.func.count(sa.distinct(col(ParcelException.claim_id)))).where(
                    col(ParcelException.replacement) == Replacement.REQUESTED.value
                )
            ).scalar_one()
        ),
        awaiting_address=sum(1 for c in claims if c.status == ClaimStatus.RETURNED),
        taken_at=now,
    )


def eligible_maintainers(*, session: Session) -> int:
    """Maintainers holding a current role on a project of the current critical list, or whose
    appeal was granted (the country is asked for only when they claim)."""
    critical = current_list(session=session)
    on_list = (
        sa.select(col(ProjectRole.maintainer_id))
        .join(Project, col(Project.id) == ProjectRole.project_id)
        .join(CriticalEntry, col(CriticalEntry.project_name) == Project.name)
        .where(
            col(CriticalEntry.list_id) == (critical.id if critical else -1),
            col(ProjectRole.ended_at).is_(None),
        )
    )
    granted = sa.select(col(Appeal.maintainer_id)).where(
        col(Appeal.status) == AppealStatus.GRANTED.value
    )
    both = sa.union(on_list, granted).subquery()
    return int(session.execute(sa.select(sa.func.count()).select_from(both)).scalar_one())


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _duration(label: str, spans: list[timedelta]) -> Duration:
    if not spans:
        return Duration(label, 0, None, None)
    ordered = sorted(spans)
    # The 90th percentile by the nearest-rank method: a duration that really occurred.
    p90 = ordered[max(0, -(-9 * len(ordered) // 10) - 1)]
    return Duration(label, len(spans), statistics.median_low(ordered), p90)


def _count(session: Session, table: type, condition: sa.ColumnElement[bool]) -> int:
    return int(
        session.execute(sa.select(sa.func.count()).select_from(table).where(condition)).scalar_one()
    )
