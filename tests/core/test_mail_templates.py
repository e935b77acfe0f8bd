"""Every mail template renders, without a Flask app, from the context its service gives it."""

from __future__ import annotations

from datetime import UTC, datetime

import jinja2
import pytest
from jinja2 import meta

from core.formats import FILTERS
from core.mail import TEMPLATES, _templates, render

# One representative context a template: the variables its service passes, no more.
CONTEXTS: dict[str, dict[str, object]] = {
    "sign_in_link.txt": {
        "greeting_name": "Ada",
        "base_url": "https://keys.example.org",
        "token": "tok_abc-123",
        "minutes": 15,
    },
    "staff_enrolment.txt": {
        "greeting_name": "Olu",
        "link": "https://keys.example.org/staff/enrol/tok_abc-123",
        "hours": 72,
        "issued_by": "admin@example.org",
    },
    "appeal_decided.txt": {
        "greeting_name": "Ada",
        "granted": True,
        "reason": "You maintain a dependency of a critical project.",
        "base_url": "https://keys.example.org",
    },
    "eligibility_notice.txt": {
        "greeting_name": "Ada",
        "keys": 2,
        "projects": ["requests", "urllib3"],
        "countries": "Germany and France",
        "base_url": "https://keys.example.org",
    },
    "claim_code.txt": {
        "greeting_name": "Ada",
        "keys": 2,
        "code": "ABCD-EFGH-JKMN",
        "expires_at": datetime(2026, 12, 7, 14, 5, tzinfo=UTC),
        "base_url": "https://keys.example.org",
    },
    "claim_redeemed.txt": {
        "greeting_name": "Ada",
        "items": "1 × TITAN-USB-C, 1 × TITAN-USB-A",
        "address_lines": ["Ada Lovelace", "Unter den Linden 1", "10117 Berlin", "GERMANY"],
        "base_url": "https://keys.example.org",
    },
    "parcel_shipped.txt": {
        "greeting_name": "Ada",
        "reference": "SHP-7K3M",
        "carrier": "DHL",
        "tracking_number": "00340434161094042557",
        "tracking_link": "https://www.dhl.de/track?piececode=00340434161094042557",
        "base_url": "https://keys.example.org",
    },
    "low_stock_alert.txt": {
        "lowest": 1000,
        "available": 998,
        "base_url": "https://keys.example.org",
    },
    "parcel_exception_returned.txt": {
        "greeting_name": "Ada",
        "reference": "SHP-7K3M",
        "note": "Addressee unknown",
        "claim_id": 7,
        "base_url": "https://keys.example.org",
    },
    "parcel_exception_lost.txt": {"greeting_name": "Ada", "reference": "SHP-7K3M"},
    "parcel_exception_replacement_approved.txt": {
        "greeting_name": "Ada",
        "reference": "SHP-9Q2R",
        "items": "2 × TITAN-USB-C",
    },
    "parcel_exception_replacement_declined.txt": {
        "greeting_name": "Ada",
        "reason": "Both keys were registered to your account after the report.",
    },
}


def test_every_template_has_a_context_here():
    assert sorted(path.name for path in TEMPLATES.glob("*.txt")) == sorted(CONTEXTS)


@pytest.mark.parametrize("template", sorted(CONTEXTS))
def test_each_template_renders_from_exactly_its_context(template):
    environment = _templates()
    source = (TEMPLATES / template).read_text()
    # The context names what the template uses: no typo, nothing left over.
    assert meta.find_undeclared_variables(environment.parse(source)) == set(CONTEXTS[template])
    assert source.startswith("{#"), "say in a comment when the message is sent"

    body = render(template, **CONTEXTS[template])

    assert body.endswith("\n") and not body.endswith("\n\n")
    assert "{{" not in body and "{%" not in body and "{#" not in body
    assert not body.startswith(("\n", " "))


def test_a_sign_in_link_mail_reads_exactly_so():
    assert render("sign_in_link.txt", **CONTEXTS["sign_in_link.txt"]) == (
        "Hello Ada,\n\n"
        "Sign in to the Security Key Giveaway with this link:\n\n"
        "    https://keys.example.org/sign-in/link/tok_abc-123\n\n"
        "It works once and expires in 15 minutes. If you did not ask for it, ignore this "
        "message: nobody can sign in without the link.\n"
    )


def test_lines_holding_only_a_tag_leave_nothing_behind():
    assert render("claim_redeemed.txt", **CONTEXTS["claim_redeemed.txt"]) == (
        "Hello Ada,\n\n"
        "Your keys (1 × TITAN-USB-C, 1 × TITAN-USB-A) will be shipped to:\n\n"
        "    Ada Lovelace\n    Unter den Linden 1\n    10117 Berlin\n    GERMANY\n\n"
        "You can change the address until the label is printed, and cancel until the parcel "
        "ships: https://keys.example.org/claim\n"
    )
    shipped = render(
        "parcel_shipped.txt", **{**CONTEXTS["parcel_shipped.txt"], "tracking_link": ""}
    )
    assert shipped == (
        "Hello Ada,\n\n"
        "Your parcel SHP-7K3M left with DHL, tracking number 00340434161094042557.\n\n"
        "When it arrives, register both keys: https://keys.example.org/claim/keys\n"
    )


def test_dates_and_numbers_read_as_on_a_page():
    assert "before 7 December 2026:" in render("claim_code.txt", **CONTEXTS["claim_code.txt"])
    alert = render("low_stock_alert.txt", **CONTEXTS["low_stock_alert.txt"])
    assert alert.startswith("Available keys have fallen below 1,000: 998 are left")
    for name, function in FILTERS.items():
        assert _templates().filters[name] is function


def test_values_are_written_as_given_not_escaped_nor_evaluated():
    body = render(
        "parcel_exception_replacement_declined.txt",
        greeting_name="<Ada & Bob>",
        reason="{{ 7 * 7 }} isn't <b>HTML</b>",
    )
    assert body.startswith("Hello <Ada & Bob>,\n\n")
    assert "We cannot send a replacement: {{ 7 * 7 }} isn't <b>HTML</b>\n" in body


def test_a_missing_variable_is_an_error_not_an_empty_string():
    context = dict(CONTEXTS["sign_in_link.txt"])
    del context["token"]
    with pytest.raises(jinja2.UndefinedError, match="token"):
        render("sign_in_link.txt", **context)
