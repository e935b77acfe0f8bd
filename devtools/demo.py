"""`flask --app app seed`: the demo programme, loaded idempotently from ``seed_data/``.

Running it twice changes nothing: every person, role and stock batch is looked up before it is
added. It refuses to run outside development or demo mode, because its staff share a password
printed in the README. ``--scale N`` adds a large synthetic programme on top (``demo_scale``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext
from sqlmodel import Session

from accounts import services as accounts
from accounts.models import StaffRole
from adapters.addresses import validate_address
from core.actors import Actor
from core.db import get_database
from core.mail import get_mailer
from core.settings import Settings, get_settings
from devtools import scale as demo_scale
from distribution.claims import services as claims
from distribution.stock import services as stock
from eligibility import services as eligibility
from eligibility.critical import import_download_statistics
from eligibility.models import ProjectRoleKind

SEED_DATA = Path(__file__).resolve().parents[1] / "seed_data"


@dataclass
class SeedReport:
    maintainers_added: int = 0
    roles_added: int = 0
    staff_added: int = 0
    batches_received: int = 0
    critical_list_recorded: bool = False
    parcels_added: int = 0
    staff_logins: list[dict[str, str]] = field(default_factory=list)


def seed_demo(*, session: Session, settings: Settings, data: dict[str, Any]) -> SeedReport:
    """Add whatever of the demo data is missing; return what was added."""
    actor = Actor.system("seed")
    report = SeedReport()
    for person in data["maintainers"]:
        maintainer = accounts.find_maintainer_by_username(
            session=session, username=person["username"]
        )
        if maintainer is None:
            maintainer = accounts.create_maintainer(
                session=session,
                actor=actor,
                username=person["username"],
                email=person["email"],
                display_name=person["display_name"],
                country=person["country"],
            )
            report.maintainers_added += 1
        for role in person["roles"]:
            project = eligibility.ensure_project(session=session, name=role["project"])
            if eligibility.find_project_role(
                session=session, project=project, maintainer=maintainer
            ):
                continue
            eligibility.grant_project_role(
                session=session,
                actor=actor,
                project=project,
                maintainer=maintainer,
                role=ProjectRoleKind(role["role"]),
                organisation=role.get("organisation"),
            )
            report.roles_added += 1
    for person in data["staff"]:
        if accounts.find_staff_by_email(session=session, email=person["email"]) is None:
            accounts.create_staff(
                session=session,
                actor=actor,
                email=person["email"],
                name=person["name"],
                roles=[StaffRole(role) for role in person["roles"]],
                password=data["staff_password"],
            )
            report.staff_added += 1
        report.staff_logins.append(
            {
                "email": person["email"],
                "password": data["staff_password"],
                "roles": ",".join(person["roles"]),
            }
        )
    ranking = data["ranking"]
    with (SEED_DATA / ranking["file"]).open("rb") as stream:
        summary = import_download_statistics(
            session=session,
            actor=actor,
            stream=stream,
            source_name=ranking["file"],
            percent=settings.critical_percent,
            sticky=settings.critical_sticky,
            total_projects=ranking["total_projects"],
        )
    report.critical_list_recorded = not summary.unchanged
    for batch in data["stock"]:
        if stock.find_receipt(session=session, sku=batch["sku"], reference=batch["reference"]):
            continue
        stock.receive_stock(
            session=session,
            actor=actor,
            sku=batch["sku"],
            quantity=batch["quantity"],
            reference=batch["reference"],
            note="Demo opening stock",
        )
        report.batches_received += 1
    report.parcels_added = sum(
        _seed_parcel(session=session, settings=settings, actor=actor, parcel=parcel)
        for parcel in data.get("parcels", [])
    )
    return report


def _seed_parcel(
    *, session: Session, settings: Settings, actor: Actor, parcel: dict[str, Any]
) -> bool:
    """A maintainer whose claim is redeemed: a parcel for the shipping desk (once)."""
    maintainer = accounts.find_maintainer_by_username(session=session, username=parcel["username"])
    if maintainer is not None:
        return False
    maintainer = accounts.create_maintainer(
        session=session,
        actor=actor,
        username=parcel["username"],
        email=f"{parcel['username']}@example.org",
        display_name=parcel["display_name"],
        country=parcel["country"],
    )
    eligibility.grant_project_role(
        session=session,
        actor=actor,
        project=eligibility.ensure_project(session=session, name=parcel["project"]),
        maintainer=maintainer,
        role=ProjectRoleKind.OWNER,
    )
    issued = claims.issue_claim_code(
        session=session, mailer=get_mailer(), settings=settings, actor=actor, maintainer=maintainer
    )
    if not isinstance(issued, claims.IssuedCode):
        return False  # no keys left for the demo parcel: the demo still runs
    address = validate_address(
        {**parcel["address"], "name": parcel["display_name"]}, served=settings.countries
    )
    claims.redeem_claim(
        session=session,
        mailer=get_mailer(),
        settings=settings,
        actor=actor,
        maintainer=maintainer,
        code=issued.code,
        items=parcel["items"],
        recipient=claims.Recipient(
            address, parcel["phone"], parcel["display_name"], parcel.get("name_local", "")
        ),
        idempotency_key=f"demo-{parcel['username']}",
    )
    return True


@click.command("seed")
@click.option(
    "--scale",
    type=click.IntRange(min=0),
    default=0,
    help="Also add N synthetic claims in every state, with their history (load work).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@with_appcontext
def seed_command(scale: int, as_json: bool) -> None:
    """Load the demo data (idempotent; development or demo mode only)."""
    settings = get_settings()
    if not (settings.development or settings.demo_mode):
        raise click.ClickException(
            "seed loads demo people with a published password; it runs only with "
            "KEYS_ENV=development or KEYS_DEMO_MODE=1."
        )
    data = json.loads((SEED_DATA / "demo.json").read_text(encoding="utf-8"))
    scaled, seconds = None, 0.0
    with get_database().transaction() as session:
        report = seed_demo(session=session, settings=settings, data=data)
        if scale:
            started = time.perf_counter()
            try:
                scaled = demo_scale.seed_scale(session=session, settings=settings, count=scale)
            except ValueError as problem:
                raise click.ClickException(str(problem)) from None
            seconds = round(time.perf_counter() - started, 1)
    if as_json:
        document: dict[str, Any] = dict(report.__dict__)
        if scaled is not None:
            document["scale"] = {**scaled.as_dict(), "seconds": seconds}
        click.echo(json.dumps(document))
        return
    click.echo(
        f"Demo data: {report.maintainers_added} maintainers, {report.roles_added} roles, "
        f"{report.staff_added} staff, {report.batches_received} stock batches and "
        f"{report.parcels_added} parcels added; "
        f"critical list {'recorded' if report.critical_list_recorded else 'unchanged'}."
    )
    if scaled is not None:
        click.echo(
            f"Scale: {scaled.claims_added} synthetic claims, "
            f"{scaled.keys_received} keys in {scaled.batches_received} batches, "
            f"{scaled.audit_events_added} audit events and {scaled.appeals_added} appeals "
            f"added (history from {scaled.history_from}) in {seconds} s."
        )
