"""Claim commands: expiry and the eligibility check."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from accounts.services import find_maintainer_by_username
from core.cli import json_option, print_report
from core.countries import normalize_country
from core.db import get_database
from core.errors import reported_as_cli_error
from core.mail import get_mailer
from core.settings import get_settings
from distribution.claims import services as claims
from distribution.claims.decision import decide
from eligibility.cli import eligibility_cli
from eligibility.errors import UnknownMaintainer


@click.group("claims")
def claims_cli() -> None:
    """Claim codes."""


@claims_cli.command("expire")
@json_option
@with_appcontext
def expire_command(as_json: bool) -> None:
    """Expire unredeemed codes past their date and offer their keys (safe from cron)."""
    settings = get_settings()
    with get_database().transaction() as session:
        expired = claims.expire_claims(session=session, mailer=get_mailer(), settings=settings)
    print_report({"expired": expired}, as_json, f"Expired {expired} code(s).")


@eligibility_cli.command("check")
@click.argument("username")
@click.option("--country", required=True, help="Where the keys would go (ISO code; UK works).")
@json_option
@with_appcontext
def check_command(username: str, country: str, as_json: bool) -> None:
    """The eligibility decision for USERNAME, with its reasons in the programme's order."""
    with reported_as_cli_error(), get_database().transaction() as session:
        maintainer = find_maintainer_by_username(session=session, username=username)
        if maintainer is None:
            raise UnknownMaintainer(f"No maintainer is called {username!r}.")
        decision = decide(
            session=session,
            settings=get_settings(),
            maintainer=maintainer,
            country=normalize_country(country),
        )
    report = decision.as_dict()
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{username}: {'eligible' if decision.eligible else 'not eligible'}")
    for reason in decision.reasons:
        click.echo(f"- [{reason.code.value}] {reason.message}")
