"""What the journeys share: setting up a maintainer (and their parcel) in the live database,
signing in, a second person's browser, and the mail they receive."""

from __future__ import annotations

import io
import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage

from playwright.sync_api import Browser, Locator, Page, expect
from sqlmodel import Session

from accounts import enrolment, second_factor
from accounts.services import actor_for, find_maintainer_by_username, find_staff_by_email
from adapters.addresses import validate_address
from core.actors import Actor
from core.db import get_database
from core.mail import OutboxMailer
from core.settings import Settings
from distribution.claims import services as claims
from distribution.models import Claim, Shipment
from distribution.stock.services import receive_stock
from eligibility.critical import import_download_statistics
from eligibility.models import ProjectRoleKind
from eligibility.services import ensure_project, grant_project_role
from tests import factories
from tests.conftest import Mailbox
from tests.e2e.conftest import LiveServer
from tests.factories import STAFF_PASSWORD, USB_C, make_maintainer
from tests.test_scale_out import SIGN_IN_SUBJECT

# 3,000 projects at 1%: ranks 1 to 30 are critical.
PROJECTS_IN_FILE = 3_000
PERCENT = 1


def statistics_file(prefix: str, placed: dict[str, int]) -> bytes:
    """A project,downloads CSV of PROJECTS_IN_FILE projects with ``placed`` names at their ranks
    and made-up filler projects (named after ``prefix``) everywhere else."""
    at_rank = {rank: name for name, rank in placed.items()}
    lines = ["project,downloads"]
    for rank in range(1, PROJECTS_IN_FILE + 1):
        name = at_rank.get(rank, f"{prefix}-filler-{rank}")
        lines.append(f"{name},{50_000_000 - rank * 10_000}")
    return ("\n".join(lines) + "\n").encode()


def set_up_maintainer(
    live_server: LiveServer,
    *,
    username: str,
    country: str | None,
    project: str,
    rank: int,
    stock: dict[str, int] | None = None,
) -> None:
    """A maintainer who owns ``project``, which a fresh statistics import ranks at ``rank``;
    and keys in stock (by default 10 USB-C), under references of their own, so that stock
    stands in nobody's way."""
    with get_database(live_server.app).transaction() as session:
        maintainer = make_maintainer(
            session,
            username=username,
            email=f"{username}@example.org",
            country=country,
            display_name=username.replace("-", " ").title(),
        )
        grant_project_role(
            session=session,
            actor=Actor.system("test"),
            project=ensure_project(session=session, name=project),
            maintainer=maintainer,
            role=ProjectRoleKind.OWNER,
        )
        import_download_statistics(
            session=session,
            actor=Actor.system("test"),
            stream=io.BytesIO(statistics_file(username, {project: rank})),
            source_name=f"{username}.csv",
            percent=PERCENT,
            sticky=True,
        )
        for sku, quantity in (stock or {"TITAN-USB-C-NFC": 10}).items():
            receive_stock(
                session=session,
                actor=Actor.system("test"),
                sku=sku,
                quantity=quantity,
                reference=f"E2E-{username}-{sku}",
            )


def sign_in_by_link(live_server: LiveServer, page: Page, username: str) -> None:
    address = f"{username}@example.org"
    mailed_before = len(live_server.mailbox.to(address, SIGN_IN_SUBJECT))
    page.goto(f"{live_server.url}/sign-in")
    page.get_by_label("Email address").fill(address)
    page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    # A consumer sends it (maybe after the notice that they became eligible).
    live_server.mailbox.wait_for(address, mailed_before + 1, subject=SIGN_IN_SUBJECT)
    page.goto(live_server.mailbox.last_link(address, SIGN_IN_SUBJECT))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {username}.")).to_be_visible()


def settings_of(live_server: LiveServer) -> Settings:
    settings: Settings = live_server.app.extensions["keys_settings"]
    return settings


def field_of(scope: Page | Locator, label: str) -> Locator:
    """The block of one form field in ``scope``: label, hint, errors and input."""
    page = scope if isinstance(scope, Page) else scope.page
    return scope.locator(".field").filter(has=page.get_by_label(label, exact=True))


def timeline_step(page: Page, label: str) -> Locator:
    """One step of the timeline on My claim."""
    return page.get_by_test_id("timeline").get_by_role("listitem").filter(has_text=label)


# A security key as staff carry one: a DevTools virtual authenticator, one per browser page.
STAFF_KEY = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": False,
    "hasUserVerification": False,
    "automaticPresenceSimulation": True,
}
_staff_keys: weakref.WeakKeyDictionary[Page, str] = weakref.WeakKeyDictionary()


def plug_in_staff_key(page: Page) -> None:
    """Give ``page``'s browser a security key (once), as a staff member has on their keyring."""
    if page not in _staff_keys:
        cdp = page.context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": STAFF_KEY})
        _staff_keys[page] = added["authenticatorId"]


def enrolment_link(live_server: LiveServer, email: str) -> str:
    """A new enrolment link for the staff member, as an admin issues one (here without
    the email, which the enrolment journey follows)."""
    with get_database(live_server.app).transaction() as session:
        staff = find_staff_by_email(session=session, email=email)
        assert staff is not None, email
        token = enrolment.issue_link(
            session=session, actor=Actor.system("test"), staff=staff, valid_for=timedelta(hours=1)
        )
    return f"{live_server.url}/staff/enrol/{token}"


def sign_in_as_staff(
    live_server: LiveServer, page: Page, email: str, *, landing: str = "Staff home"
) -> None:
    """Password, then the security key: registered on the first sign-in, in the browser that
    opened the enrolment link (its recovery codes taken note of), touched on the next ones."""
    plug_in_staff_key(page)
    with get_database(live_server.app).transaction() as session:
        staff = find_staff_by_email(session=session, email=email)
        enrolling = staff is not None and not second_factor.has_keys(session=session, staff=staff)
    page.goto(
        enrolment_link(live_server, email) if enrolling else f"{live_server.url}/staff/sign-in"
    )
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    step = page.get_by_role("heading", level=1)
    expect(step).to_have_text(re.compile("Register your security key|Present your security key"))
    if step.inner_text() == "Register your security key":
        page.get_by_label("Name of the key").fill("Keyring")
        page.get_by_role("button", name="Register a key").click()
        expect(page.get_by_test_id("recovery-codes").get_by_role("listitem")).to_have_count(8)
        page.get_by_role("link", name="I have saved them").click()
    else:
        page.get_by_role("button", name="Use my security key").click()
    expect(page.get_by_role("heading", name=landing)).to_be_visible()


@contextmanager
def another_browser(browser: Browser) -> Iterator[Page]:
    """A page in a browser context of its own: a second person, with their own cookies."""
    context = browser.new_context(viewport={"width": 1200, "height": 860}, locale="en-GB")
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
    finally:
        context.close()


def mail_to(mailbox: Mailbox, address: str, subject: str) -> EmailMessage:
    """The one mail to ``address`` with ``subject``, waiting a moment for it to arrive."""
    mailbox.wait_for(address, subject=subject, timeout=10)
    found = mailbox.to(address, subject)
    assert len(found) == 1, f"expected one mail {subject!r} to {address}, got {len(found)}"
    return found[0]


# --- parcels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parcel:
    """A maintainer's parcel as the journeys set it up: what the label must say."""

    claim_id: int
    reference: str
    lines: list[str]  # the recipient as printed, the country in capitals last


def redeemed_parcel(
    live_server: LiveServer,
    *,
    username: str,
    address: dict[str, str],
    phone: str,
    items: dict[str, int],
) -> Parcel:
    """An eligible maintainer who redeemed their code: their parcel waits for a label. Twice
    the keys are in stock, under references of their own, so a replacement finds keys too."""
    set_up_maintainer(
        live_server,
        username=username,
        country=address["country_code"],
        project=f"{username}-core",
        rank=5,
        stock={sku: 2 * n for sku, n in items.items()},
    )
    with get_database(live_server.app).transaction() as session:
        return _redeem(live_server, session, username, address, phone, items)


def redeemed_parcels(
    live_server: LiveServer, *, prefix: str, count: int, address: dict[str, str], phone: str
) -> list[Parcel]:
    """``count`` maintainers of one critical project (``prefix``-1 to -``count``), each of
    whom redeemed their code for one USB-C key to ``address``: a queue of parcels to print."""
    project = f"{prefix}-core"
    set_up_maintainer(
        live_server,
        username=f"{prefix}-1",
        country=address["country_code"],
        project=project,
        rank=5,
        # A code reserves two keys until it is redeemed for one: the last needs a spare.
        stock={USB_C: count + 1},
    )
    with get_database(live_server.app).transaction() as session:
        for number in range(2, count + 1):
            grant_project_role(
                session=session,
                actor=Actor.system("test"),
                project=ensure_project(session=session, name=project),
                maintainer=make_maintainer(
                    session,
                    username=f"{prefix}-{number}",
                    email=f"{prefix}-{number}@example.org",
                    country=address["country_code"],
                ),
                role=ProjectRoleKind.OWNER,
            )
        return [
            _redeem(live_server, session, f"{prefix}-{number}", address, phone, {USB_C: 1})
            for number in range(1, count + 1)
        ]


def _redeem(
    live_server: LiveServer,
    session: Session,
    username: str,
    address: dict[str, str],
    phone: str,
    items: dict[str, int],
) -> Parcel:
    settings = settings_of(live_server)
    person = find_maintainer_by_username(session=session, username=username)
    assert person is not None
    issued = claims.issue_claim_code(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=actor_for(person),
        maintainer=person,
    )
    assert isinstance(issued, claims.IssuedCode)
    recipient = validate_address(address, served=settings.countries)
    shipment = claims.redeem_claim(
        session=session,
        mailer=OutboxMailer(),
        settings=settings,
        actor=actor_for(person),
        maintainer=person,
        code=issued.code,
        items=items,
        recipient=claims.Recipient(recipient, phone, address["name"]),
        idempotency_key=f"e2e-{username}",
    )
    return Parcel(shipment.claim_id, shipment.reference, list(recipient.lines))


def print_labels(live_server: LiveServer, *parcels: Parcel) -> None:
    """A whole label run of ``parcels``, as the desk starts it and its thread finishes it."""
    with get_database(live_server.app).transaction() as session:
        factories.print_labels(session, settings_of(live_server), [p.claim_id for p in parcels])


def ship(live_server: LiveServer, parcel: Parcel, *, carrier: str, tracking_number: str) -> None:
    with get_database(live_server.app).transaction() as session:
        factories.ship(
            session,
            settings_of(live_server),
            parcel.reference,
            carrier=carrier,
            tracking_number=tracking_number,
        )


def claim_of(session: Session, parcel: Parcel) -> Claim:
    claim = session.get(Claim, parcel.claim_id)
    assert claim is not None
    return claim


def current_shipment(session: Session, parcel: Parcel) -> Shipment:
    """The claim's newest parcel: the one that counts now."""
    shipment = claims.shipment_of(session=session, claim=claim_of(session, parcel))
    assert shipment is not None
    return shipment
