"""Countries: the one place that knows codes, names and which countries the programme serves.

People say and see "UK"; ISO 3166 and the database say "GB". Names come from pycountry, which
is imported nowhere else.
"""

from __future__ import annotations

from functools import cache

import pycountry

from core.errors import DomainError


class UnknownCountry(DomainError):
    title = "Unknown country"


_ALIASES = {"UK": "GB"}
_DISPLAY = {"GB": "UK"}
# Shorter, familiar names where pycountry's official ones are long.
_FRIENDLY_NAMES = {"GB": "United Kingdom", "US": "United States"}


def normalize_country(code: str) -> str:
    """The ISO alpha-2 code for ``code`` ("uk" → "GB"); UnknownCountry if there is none."""
    cleaned = code.strip().upper()
    cleaned = _ALIASES.get(cleaned, cleaned)
    if len(cleaned) != 2 or cleaned not in _names():
        raise UnknownCountry(f"{code.strip()[:20]!r} is not a country code we know.")
    return cleaned


def display_code(code: str) -> str:
    """The code people expect to read ("GB" → "UK")."""
    return _DISPLAY.get(code, code)


def country_name(code: str) -> str:
    return _names().get(code, code)


def served_choices(served: tuple[str, ...]) -> list[tuple[str, str]]:
    """(code, name) of the served countries, sorted by name, for a select box."""
    return sorted(((code, country_name(code)) for code in served), key=lambda c: c[1])


def all_choices() -> list[tuple[str, str]]:
    """(code, name) of every country, sorted by name."""
    return sorted(_names().items(), key=lambda c: c[1])


def served_names(served: tuple[str, ...]) -> str:
    """ "Austria, Belgium … and the United States" for sentences."""
    names = [name for _code, name in served_choices(served)]
    names = [f"the {n}" if n.startswith("United") else n for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@cache
def _names() -> dict[str, str]:
    names = {
        country.alpha_2: getattr(country, "common_name", country.name)
        for country in pycountry.countries
    }
    names.update(_FRIENDLY_NAMES)
    return names
