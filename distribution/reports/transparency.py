"""The public transparency figures: keys given away, shipped, activated and left, by country and
by model — aggregates only. A country with fewer than ``MIN_PUBLIC_BUCKET`` recipients is folded
into "Other countries", with the next smallest until that bucket is big enough too, so that no
person can be singled out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from core.countries import country_name
from distribution.models import ClaimStatus, ExceptionKind
from distribution.reports.services import TOTAL, all_claims, stock_report

MIN_PUBLIC_BUCKET = 5


@dataclass(frozen=True)
class PublicBucket:
    name: str  # a country's or a model's name, or "Other countries"
    recipients: int | None  # None for models
    shipped: int
    activated: int


@dataclass(frozen=True)
class Transparency:
    keys_total: int
    given_away: int
    shipped: int
    activated: int
    remaining: int
    countries: list[PublicBucket]
    models: list[PublicBucket]
    taken_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "keys_total": self.keys_total,
            "given_away": self.given_away,
            "shipped": self.shipped,
            "activated": self.activated,
            "remaining": self.remaining,
            "by_country": [
                {
                    "country": b.name,
                    "recipients": b.recipients,
                    "keys_shipped": b.shipped,
                    "keys_activated": b.activated,
                }
                for b in self.countries
            ],
            "by_model": [
                {"model": b.name, "keys_shipped": b.shipped, "keys_activated": b.activated}
                for b in self.models
            ],
            "minimum_per_country": MIN_PUBLIC_BUCKET,
            "as_of": self.taken_at.isoformat(timespec="seconds"),
        }


def transparency(*, session: Session, now: datetime | None = None) -> Transparency:
    """Aggregates anyone may see: no person can be singled out, so a country with fewer than
    ``MIN_PUBLIC_BUCKET`` recipients is folded into "Other countries" (with the next smallest
    until that bucket is big enough too)."""
    claims = all_claims(session=session)
    report = stock_report(session=session, now=now, claims=claims)
    recipients: Counter[str] = Counter()
    shipped: Counter[str] = Counter()
    activated: Counter[str] = Counter()
    for claim in claims:
        reached = [p for p in claim.shipped if p.exception != ExceptionKind.RETURNED]
        if not reached:
            continue
        country = reached[-1].country
        recipients[country] += 1
        shipped[country] += sum(sum(p.items.values()) for p in reached)
        if claim.status == ClaimStatus.ACTIVATED:
            activated[country] += sum(sum(p.items.values()) for p in reached if p.delivered_at)

    def figure(key: str, column: str = TOTAL) -> int:
        return report.figure(key, column) or 0

    net_shipped = figure("shipped") - figure("returned")
    return Transparency(
        keys_total=figure("received") + figure("adjusted"),
        given_away=figure("reserved") + figure("allocated") + net_shipped,
        shipped=net_shipped,
        activated=figure("activated"),
        remaining=figure("available"),
        countries=_public_countries(recipients, shipped, activated),
        models=[
            PublicBucket(
                name,
                None,
                figure("shipped", sku) - figure("returned", sku),
                figure("activated", sku),
            )
            for sku, name in report.columns[:-1]
        ],
        taken_at=report.taken_at,
    )


def _public_countries(
    recipients: Counter[str], shipped: Counter[str], activated: Counter[str]
) -> list[PublicBucket]:
    listed = sorted(recipients, key=lambda code: (-recipients[code], code))
    folded = [code for code in listed if recipients[code] < MIN_PUBLIC_BUCKET]
    listed = [code for code in listed if code not in folded]
    while folded and listed and sum(recipients[c] for c in folded) < MIN_PUBLIC_BUCKET:
        folded.append(listed.pop())
    buckets = [
        PublicBucket(country_name(code), recipients[code], shipped[code], activated[code])
        for code in listed
    ]
    if folded:
        buckets.append(
            PublicBucket(
                "Other countries",
                sum(recipients[c] for c in folded),
                sum(shipped[c] for c in folded),
                sum(activated[c] for c in folded),
            )
        )
    return buckets
