"""Page read-models of the claim pages: what a page that gathers several facts shows, read in
one place, so that its view stays a paragraph."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from core.countries import served_choices
from core.settings import Settings
from distribution.models import KeyModel
from distribution.stock import services as stock


@dataclass(frozen=True)
class RedemptionPage:
    """The redemption form's surroundings: where keys can go, which models, how many of each
    are left, and how many one maintainer may have."""

    country: str
    countries: list[tuple[str, str]]
    models: list[KeyModel]
    available: dict[str, int]
    allowance: int


def redemption_page(*, session: Session, settings: Settings, country: str) -> RedemptionPage:
    models = stock.key_models(session=session)
    figures = stock.stock_figures(session=session)
    return RedemptionPage(
        country=country,
        countries=served_choices(settings.countries),
        models=models,
        available={model.sku: figures.available_of(model.sku) for model in models},
        allowance=settings.keys_per_maintainer,
    )
