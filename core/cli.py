"""What every command shares: the ``--json`` option and printing one report."""

from __future__ import annotations

import json
from collections.abc import Mapping

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def print_report(report: Mapping[str, object], as_json: bool, summary: str) -> None:
    click.echo(json.dumps(report) if as_json else summary)
