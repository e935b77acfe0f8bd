"""Stock commands: receiving stock."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from core.actors import Actor
from core.cli import json_option, print_report
from core.db import get_database
from core.errors import reported_as_cli_error
from distribution.stock import services as stock


@click.group("stock")
def stock_cli() -> None:
    """The stock ledger."""


@stock_cli.command("receive")
@click.option("--model", "sku", required=True, help="The model's SKU, e.g. TITAN-USB-C-NFC.")
@click.option("--quantity", type=click.IntRange(min=1), required=True)
@click.option("--reference", required=True, help="The delivery note or batch reference.")
@click.option("--note", default="")
@json_option
@with_appcontext
def receive_command(sku: str, quantity: int, reference: str, note: str, as_json: bool) -> None:
    """Record a batch of keys arriving (a reference is received once per model)."""
    with reported_as_cli_error(), get_database().transaction() as session:
        movement = stock.receive_stock(
            session=session,
            actor=Actor.system("cli"),
            sku=sku,
            quantity=quantity,
            reference=reference,
            note=note,
        )
        report = {
            "movement_id": movement.id,
            "sku": sku,
            "quantity": quantity,
            "reference": movement.reference,
        }
    print_report(report, as_json, f"Received {quantity} × {sku} ({movement.reference}).")
