"""Small factories and helpers that build data through the services, as the app would."""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterable
from typing import Any

from flask.testing import FlaskClient
from sqlmodel import Session

from accounts import services
from accounts.models import Maintainer, Staff, StaffRole
from adapters.addresses import validate_address
from core.actors import Actor
from core.db import Database
from core.mail import OutboxMailer
from core.settings import Settings
from distribution.claims import services as claims
from distribution.models import LabelRun, Shipment
from distribution.shipping import fulfilment, label_runs
from distribution.shipping.labels import Layout
from distribution.stock.services import receive_stock
from eligibility.critical import ImportSummary, import_download_statistics
from eligibility.models import ProjectRoleKind
from eligibility.services import ensure_project, grant_project_role

STAFF_PASSWORD = "correct horse battery staple"
_numbers = itertools.count(1)
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def make_maintainer(
    session: Session,
    *,
    username: str | None = None,
    email: str | None = None,
    country: str | None = "DE",
    display_name: str = "",
) -> Maintainer:
    number = next(_numbers)
    maintainer = services.create_maintainer(
        session=session,
        actor=Actor.system("test"),
        username=username or f"maintainer-{number}",
        email=email or f"maintainer-{number}@example.org",
        display_name=display_name or f"Maintainer {number}",
        country=country,
    )
    session.flush()
    return maintainer


def make_staff(
    session: Session,
    *,
    roles: Iterable[StaffRole] = (StaffRole.ADMIN,),
    email: str | None = None,
    password: str = STAFF_PASSWORD,
    name: str | None = None,
) -> Staff:
    number = next(_numbers)
    staff = services.create_staff(
        session=session,
        actor=Actor.system("test"),
        email=email or f"staff-{number}@example.org",
        name=name or f"Staff {number}",
        roles=roles,
        password=password,
    )
    session.flush()
    return staff


def sign_in_as(client: FlaskClient, user: Maintainer | Staff) -> None:
    """Start a signed-in session for ``user`` without going through a sign-in form."""
    with client.session_transaction() as flask_session:
        flask_session["_user_id"] = user.get_id()
        flask_session["_fresh"] = True


def csrf_token(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form on the page at ``path``."""
    page = client.get(path).get_data(as_text=True)
    match = _CSRF.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


# --- programme data ---------------------------------------------------------------------------

ACTOR = Actor.system("test")
USB_A, USB_C = "TITAN-USB-A-NFC", "TITAN-USB-C-NFC"


def import_statistics(
    session: Session,
    text: str,
    *,
    percent: float = 50.0,
    sticky: bool = True,
    total: int | None = None,
    name: str = "stats.csv",
) -> ImportSummary:
    """Import a statistics file given as text, as `eligibility import-downloads` would."""
    return import_download_statistics(
        session=session,
        actor=ACTOR,
        stream=io.BytesIO(text.encode()),
        source_name=name,
        percent=percent,
        sticky=sticky,
        total_projects=total,
    )


def give_role(
    session: Session,
    maintainer: Maintainer,
    project: str,
    role: ProjectRoleKind = ProjectRoleKind.OWNER,
    organisation: str | None = None,
) -> None:
    grant_project_role(
        session=session,
        actor=ACTOR,
        maintainer=maintainer,
        project=ensure_project(session=session, name=project),
        role=role,
        organisation=organisation,
    )


def make_owner(session: Session, project: str, **details: Any) -> Maintainer:
    """A maintainer who owns ``project`` (create the project before importing statistics, so
    the import records its rank)."""
    maintainer = make_maintainer(session, **details)
    give_role(session, maintainer, project)
    return maintainer


def receive_keys(session: Session, quantities: dict[str, int], reference: str = "TEST") -> None:
    for sku, quantity in quantities.items():
        receive_stock(session=session, actor=ACTOR, sku=sku, quantity=quantity, reference=reference)


def database_on(session: Session) -> Database:
    """A Database whose sessions join ``session``'s connection (and its rolled-back test
    transaction): what a job sees when it opens its own transactions."""
    connection = session.connection()
    database = Database(connection.engine)
    database.sessionmaker.configure(bind=connection, join_transaction_mode="create_savepoint")
    return database


def print_labels(
    session: Session,
    settings: Settings,
    claim_ids: Iterable[int],
    *,
    reprint: bool = False,
    layout: Layout = "4x6",
) -> LabelRun:
    """A whole label run, as the shipping desk starts it and its job finishes it."""
    run = label_runs.start_run(
        session=session, actor=ACTOR, claim_ids=list(claim_ids), layout=layout, reprint=reprint
    )
    session.flush()
    done = label_runs.execute_run(
        database=database_on(session), settings=settings, run_id=run.id or 0
    )
    session.expire_all()
    return done


BERLIN = {
    "country_code": "DE",
    "city": "Berlin",
    "postal_code": "10117",
    "street_address": "Unter den Linden 1",
    "name": "Ada Demo",
}


def stock_famous_project(
    session: Session, quantities: dict[str, int], reference: str = "TEST"
) -> None:
    """A critical project "famous" whose owners are eligible, and keys in stock."""
    ensure_project(session=session, name="famous")
    import_statistics(session, "project,downloads\nfamous,9\nx,1\n")
    receive_keys(session, quantities, reference)


def claim_code(session: Session, settings: Settings) -> tuple[Maintainer, claims.IssuedCode]:
    """A new owner of "famous" who got a claim code (its keys reserved)."""
    person = make_owner(session, "famous", country="DE")
    issued = claims.issue_claim_code(
        session=session, mailer=OutboxMailer(), settings=settings, actor=ACTOR, maintainer=person
    )
    assert isinstance(issued, claims.IssuedCode)
    return person, issued


def redeem_parcel(
    session: Session,
    settings: Settings,
    *,
    items: dict[str, int] | None = None,
    address: dict[str, str] = BERLIN,
) -> tuple[Maintainer, Shipment]:
    """A new owner of "famous" who got a code and redeemed it: a parcel waiting for a label."""
    person, issued = claim_code(session, settings)
    shipment = claims.redeem_claim(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        maintainer=person,
        code=issued.code,
        items=items or {USB_A: 1, USB_C: 1},
        recipient=claims.Recipient(
            validate_address(address, served=settings.countries), "+49301234567", address["name"]
        ),
        idempotency_key=f"parcel-{person.id}",
    )
    return person, shipment


def ship(
    session: Session,
    settings: Settings,
    reference: str,
    *,
    carrier: str = "DHL",
    tracking_number: str = "00340434161234567890",
) -> Shipment:
    """Scan a printed parcel out of the door, as the shipping desk does."""
    return fulfilment.ship_parcel(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=ACTOR,
        reference=reference,
        carrier=carrier,
        tracking_number=tracking_number,
    )


def shipped_parcel(
    session: Session,
    settings: Settings,
    *,
    items: dict[str, int] | None = None,
    address: dict[str, str] = BERLIN,
    tracking_number: str = "00340434161234567890",
) -> tuple[Maintainer, Shipment]:
    """A new owner of "famous" whose parcel is printed and on its way."""
    person, shipment = redeem_parcel(session, settings, items=items, address=address)
    print_labels(session, settings, [shipment.claim_id])
    return person, ship(session, settings, shipment.reference, tracking_number=tracking_number)
