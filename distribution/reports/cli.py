"""`stock report` on the command line: added to the stock group, it reads every package below."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from core.cli import json_option
from core.db import get_database
from distribution.reports import services as reports
from distribution.stock.cli import stock_cli


@stock_cli.command("report")
@json_option
@with_appcontext
def report_command(as_json: bool) -> None:
    """Keys on hand, reserved, allocated and available, per model and in total; where the
    others went; and the checks that the ledger agrees with the balances, codes and parcels."""
    with get_database().transaction() as session:
        full = reports.stock_report(session=session)
    figures = full.balances
    models = [
        {
            "sku": m.sku,
            "name": m.name,
            "on_hand": m.on_hand,
            "allocated": m.allocated,
            "available": figures.available_of(m.sku),
            "ledger_sum": m.ledger_sum,
        }
        for m in figures.models
    ]
    report = {
        "models": models,
        "on_hand": figures.on_hand,
        "reserved": figures.reserved,
        "allocated": figures.allocated,
        "available": figures.available,
        "ledger_sum": figures.ledger_sum,
        "figures": {key: values for key, _label, values in full.rows},
        "checks": [
            {"check": c.name, "column": c.column, "expected": c.expected, "found": c.found}
            for c in full.checks
        ],
        "reconciles": full.reconciles,
    }
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{'':46}" + "".join(f"{sku:>18}" for sku, _name in full.columns))
    for _key, label, values in full.rows:
        cells = ("—" if values[sku] is None else f"{values[sku]:,}" for sku, _ in full.columns)
        click.echo(f"{label:46}" + "".join(f"{cell:>18}" for cell in cells))
    if full.reconciles:
        click.echo(f"The figures reconcile: {len(full.checks)} checks agree.")
    for check in full.failed:
        click.echo(
            f"WARNING: {check.name} ({check.column}): {check.expected:,} against {check.found:,}."
        )
