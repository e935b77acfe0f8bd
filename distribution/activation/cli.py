"""Security-key commands for support staff."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from adapters import webauthn
from core.cli import json_option
from core.db import get_database
from distribution.activation import services as activation


@click.group("keys")
def keys_cli() -> None:
    """Security keys."""


@keys_cli.command("inspect-attestation")
@click.option("--attestation-object", required=True, help="base64url, as the browser sent it.")
@click.option("--client-data", required=True, help="The clientDataJSON, base64url.")
@json_option
@with_appcontext
def inspect_attestation_command(attestation_object: str, client_data: str, as_json: bool) -> None:
    """What an attestation a maintainer sent in says: format, AAGUID, model, whether its chain
    is trusted, whether it is a Titan, and what is wrong with it, if anything."""
    with get_database().transaction() as session:
        titans = activation.titan_aaguids(session=session)
    report = webauthn.inspect_attestation(
        attestation_object=attestation_object,
        client_data=client_data,
        metadata=webauthn.Metadata.bundled(),
        titan_aaguids=titans,
    )
    fields = {
        "format": report.format,
        "aaguid": report.aaguid,
        "model": report.model,
        "trusted": report.trusted,
        "titan": report.titan,
        "problem": report.problem,
    }
    if as_json:
        click.echo(json.dumps(fields))
        return
    for name, value in fields.items():
        click.echo(f"{name:8} {value if value is not None else '-'}")
