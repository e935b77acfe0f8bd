"""Journeys: a maintainer whose parcel has shipped registers keys on "Register your keys" with
Chromium's DevTools virtual authenticator standing in for the security keys.

Under the real FIDO metadata the virtual authenticator is a make nobody vouches for: usable,
flagged, and counted only when programme staff accept it. When the test trusts its attestation
key and counts its AAGUID as a Titan, two keys activate the claim, and the same key offered
twice is refused by the browser itself. A key nobody touches, and a maintainer who signed out
in another tab, get messages a person can act on.

WebAuthn refuses an IP address as the relying party's ID, and the shared live server answers at
127.0.0.1, so these journeys run on a server of their own at http://localhost, with a database
of their own.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from fido2.webauthn import AttestationObject
from playwright.sync_api import Browser, Locator, Page, Route, expect
from sqlmodel import col, select

from accounts.access import METADATA_EXTENSION
from accounts.models import Maintainer, SecurityKey, StaffRole
from adapters.webauthn import Metadata
from core.db import get_database
from core.settings import Settings
from distribution.models import Claim, KeyModel
from tests.e2e.conftest import LiveServer
from tests.e2e.journeys import sign_in_as_staff, sign_in_by_link
from tests.factories import (
    USB_A,
    USB_C,
    make_staff,
    print_labels,
    redeem_parcel,
    ship,
    stock_famous_project,
)

pytestmark = pytest.mark.e2e

# What Chromium's virtual authenticator sends with `direct` attestation: `packed`, this AAGUID,
# and one self-signed certificate (not a CA) for a key pair built into Chromium. Chromium signs
# that certificate afresh for every registration (ECDSA: a new signature each time), so no
# certificate can be pinned byte for byte; the key can. The chain check anchors a key's
# certificates in a CA certificate of the metadata, so the journeys trust a CA certificate
# holding Chromium's attestation key: trusting it is trusting Chromium's test key.
VIRTUAL_AAGUID = "01020304-0506-0708-0102-030405060708"
CHROMIUM_ATTESTATION_SUBJECT = "CN=Batch Certificate,OU=Authenticator Attestation,O=Chromium,C=US"
CHROMIUM_ATTESTATION_KEY = base64.b64decode(  # SubjectPublicKeyInfo, DER: ECDSA P-256
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjWF+ZclQjmS8xWc6yCpnmdo8FEZoLCWMRj//31jf0vo+bDeLU9eV"
    "xKTf+0GZ7deGLyOrrwIDtLiRG6BWmZThAQ=="
)
# A fresh Titan: a USB key with no PIN and no resident credentials. Presence is simulated (the
# touch happens at once) unless a journey turns it off.
SECURITY_KEY = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": False,
    "hasUserVerification": False,
    "isUserVerified": False,
    "automaticPresenceSimulation": True,
}
UNKNOWN_MAKE = (
    "We could not confirm this key's make and model. It is registered and you can sign in with"
    " it; programme staff will review it before it counts towards your claim."
)


@pytest.fixture(scope="module", autouse=True)
def famous(live_server: LiveServer) -> None:
    """The critical project "famous" with keys in stock for its owners, who are each
    journey's maintainers."""
    with get_database(live_server.app).transaction() as session:
        stock_famous_project(session, {USB_A: 10, USB_C: 10}, reference="E2E-ACTIVATION")


@dataclass(frozen=True)
class Recipient:
    """A maintainer whose parcel of two keys (one of each model) has shipped."""

    maintainer_id: int
    username: str
    claim_id: int


def shipped_parcel(live_server: LiveServer) -> Recipient:
    settings: Settings = live_server.app.extensions["keys_settings"]
    with get_database(live_server.app).transaction() as session:
        person, shipment = redeem_parcel(session, settings)
        print_labels(session, settings, [shipment.claim_id])
        ship(
            session, settings, shipment.reference, tracking_number=f"JD0146{shipment.claim_id:011d}"
        )
        assert person.id is not None
        return Recipient(person.id, person.username, shipment.claim_id)


class VirtualKeys:
    """Chromium's DevTools virtual authenticators, plugged into one page's browser tab."""

    def __init__(self, page: Page) -> None:
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("WebAuthn.enable")

    def plug_in(self) -> str:
        added = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": SECURITY_KEY})
        authenticator_id: str = added["authenticatorId"]
        return authenticator_id

    def unplug(self, authenticator_id: str) -> None:
        self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": authenticator_id})

    def leave_untouched(self, authenticator_id: str) -> None:
        self.cdp.send(
            "WebAuthn.setAutomaticPresenceSimulation",
            {"authenticatorId": authenticator_id, "enabled": False},
        )


def register(page: Page, name: str) -> None:
    page.get_by_label("Name of the key").fill(name)
    page.get_by_role("button", name="Register a key").click()


def summary_value(page: Page, term: str) -> Locator:
    """The value of ``term`` in a key's attestation summary (staff's key page)."""
    return (
        page.get_by_test_id("attestation")
        .locator("div")
        .filter(has=page.locator("dt").get_by_text(term, exact=True))
        .locator("dd")
    )


def keys_of(live_server: LiveServer, who: Recipient) -> list[SecurityKey]:
    with get_database(live_server.app).transaction() as session:
        keys = session.exec(
            select(SecurityKey)
            .where(SecurityKey.maintainer_id == who.maintainer_id)
            .order_by(col(SecurityKey.id))
        ).all()
        session.expunge_all()
        return list(keys)


def claim_status(live_server: LiveServer, who: Recipient) -> str:
    with get_database(live_server.app).transaction() as session:
        claim = session.get(Claim, who.claim_id)
        assert claim is not None
        return claim.status


def chromium_attestation_root() -> bytes:
    """A CA certificate (DER) for Chromium's attestation key, under the name the virtual
    authenticator's certificates give as their issuer. A trust anchor's own signature is never
    checked, so a throwaway key signs it; the certificates it vouches for are signed by
    Chromium's key."""
    name = x509.Name.from_rfc4514_string(CHROMIUM_ATTESTATION_SUBJECT)
    chromium_key = load_der_public_key(CHROMIUM_ATTESTATION_KEY)
    assert isinstance(chromium_key, ec.EllipticCurvePublicKey)
    signer = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(chromium_key)
        .serial_number(1)
        .not_valid_before(datetime(2017, 7, 14, tzinfo=UTC))
        .not_valid_after(datetime(2046, 11, 17, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(signer, hashes.SHA256())
    )
    return root.public_bytes(Encoding.DER)


@pytest.fixture
def virtual_key_trusted_as_titan(live_server: LiveServer) -> Iterator[None]:
    """The journey trusts Chromium's attestation key for the virtual authenticator's AAGUID,
    and the USB-C Titan counts that AAGUID as its own; both undone afterwards."""
    app = live_server.app
    app.extensions[METADATA_EXTENSION] = Metadata.bundled().with_extra_entry(
        aaguid=VIRTUAL_AAGUID,
        root_certificate=chromium_attestation_root(),
        description="Google Titan Security Key v2",
    )
    with get_database(app).transaction() as session:
        model = session.get(KeyModel, USB_C)
        assert model is not None
        before = list(model.aaguids)
        model.aaguids = [*before, VIRTUAL_AAGUID]  # a new list, so the JSON column is written
    try:
        yield
    finally:
        del app.extensions[METADATA_EXTENSION]
        with get_database(app).transaction() as session:
            model = session.get(KeyModel, USB_C)
            assert model is not None
            model.aaguids = before


def test_an_unknown_make_of_key_is_usable_and_programme_staff_accept_it(
    live_server: LiveServer, page: Page, browser: Browser
):
    who = shipped_parcel(live_server)
    sign_in_by_link(live_server, page, who.username)
    page.goto(f"{live_server.url}/claim")
    page.get_by_test_id("next-step").get_by_role("link", name="Register your keys").click()
    expect(page.get_by_role("heading", name="Register your keys")).to_be_visible()
    expect(page.get_by_test_id("titan-count")).to_have_text("0 of 2 Titan keys registered.")

    virtual = VirtualKeys(page)
    first = virtual.plug_in()
    register(page, "Key from the drawer")

    # The real metadata does not know the virtual authenticator: registered, but not a Titan.
    expect(page.locator(".flashes")).to_have_text(UNKNOWN_MAKE)
    expect(page.get_by_test_id("keys")).to_contain_text(
        "Key from the drawer — another make of key, usable here; programme staff will review it"
    )
    expect(page.get_by_test_id("titan-count")).to_have_text("0 of 2 Titan keys registered.")
    live_server.screenshot(page, "keys-other-make")

    [key] = keys_of(live_server, who)
    assert (key.outcome, key.trusted, key.model) == ("other", False, "")
    assert (key.attestation_format, key.aaguid) == ("packed", VIRTUAL_AAGUID)
    # The premise of the Titan journey: a self-signed certificate for Chromium's built-in key.
    [der] = AttestationObject(key.attestation_object).att_stmt["x5c"]
    certificate = x509.load_der_x509_certificate(der)
    assert certificate.subject.rfc4514_string() == CHROMIUM_ATTESTATION_SUBJECT
    assert certificate.issuer == certificate.subject
    certificate.verify_directly_issued_by(certificate)
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert spki == CHROMIUM_ATTESTATION_KEY, "Chromium attests with another key now: pin it"
    assert claim_status(live_server, who) == "shipped"

    # Programme staff find it among the keys to review, read its attestation and accept it.
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session,
            email="activation-programme@example.org",
            name="Pat Review",
            roles=[StaffRole.PROGRAMME],
        )
    staff_context = browser.new_context(viewport={"width": 1200, "height": 860}, locale="en-GB")
    try:
        staff = staff_context.new_page()
        staff.set_default_timeout(15_000)
        sign_in_as_staff(live_server, staff, "activation-programme@example.org")
        staff.goto(f"{live_server.url}/staff/keys")
        row = (
            staff.get_by_test_id("flagged-keys")
            .get_by_role("row")
            .filter(has=staff.get_by_role("link", name="Key from the drawer"))
        )
        expect(row).to_contain_text(f"unknown make ({VIRTUAL_AAGUID})")
        row.get_by_role("link", name="Key from the drawer").click()
        expect(summary_value(staff, "Format")).to_have_text("packed")
        expect(summary_value(staff, "AAGUID")).to_have_text(VIRTUAL_AAGUID)
        expect(summary_value(staff, "Model")).to_have_text("not in the metadata")
        expect(summary_value(staff, "Chain trusted")).to_have_text("no")
        staff.get_by_label("Reason").fill("Checked by video call: a Titan behind a browser.")
        staff.get_by_role("button", name="Count as a Titan").click()
        expect(staff.get_by_text("The key counts as a Titan activation now.")).to_be_visible()
        expect(summary_value(staff, "Counts as an activation")).to_have_text(
            re.compile(
                r"yes, accepted by activation-programme@example\.org on \d{1,2} \w+ \d{4}:"
                r" Checked by video call: a Titan behind a browser\."
            )
        )
    finally:
        staff_context.close()

    page.reload()
    expect(page.get_by_test_id("titan-count")).to_have_text("1 of 2 Titan keys registered.")
    expect(page.get_by_test_id("keys")).to_contain_text(
        "Key from the drawer — counted as a Titan by programme staff"
    )
    assert claim_status(live_server, who) == "shipped"
    # The decision is on the maintainer's claim page too: when, and why (not which staff member).
    page.goto(f"{live_server.url}/claim")
    expect(page.get_by_test_id("acceptances")).to_contain_text(
        "Your key “Key from the drawer” counts as a Titan: programme staff accepted it on"
    )
    expect(page.get_by_test_id("acceptances")).not_to_contain_text("@example.org")
    expect(page.get_by_test_id("acceptances")).to_contain_text(
        "because: Checked by video call: a Titan behind a browser."
    )

    # Another key that does not count can be removed again; the one staff counted cannot.
    page.goto(f"{live_server.url}/claim/keys")
    virtual.unplug(first)
    virtual.plug_in()
    register(page, "Borrowed key")
    expect(page.locator(".flashes")).to_have_text(UNKNOWN_MAKE)
    counted, borrowed = keys_of(live_server, who)
    expect(page.get_by_test_id(f"remove-key-{counted.id}")).to_have_count(0)
    page.get_by_test_id(f"remove-key-{borrowed.id}").get_by_role("button", name="Remove").click()
    expect(page.locator(".flashes")).to_have_text(
        "Key removed. You can no longer sign in with it here."
    )
    expect(page.get_by_test_id("keys")).not_to_contain_text("Borrowed key")
    expect(page.get_by_test_id("keys")).to_contain_text("Key from the drawer")
    removed = {key.name: key.removed_at for key in keys_of(live_server, who)}
    assert removed["Borrowed key"] is not None and removed["Key from the drawer"] is None


@pytest.mark.usefixtures("virtual_key_trusted_as_titan")
def test_two_titans_activate_the_claim_and_the_same_key_twice_is_refused(
    live_server: LiveServer, page: Page
):
    who = shipped_parcel(live_server)
    sign_in_by_link(live_server, page, who.username)
    page.goto(f"{live_server.url}/claim/keys")
    keys = VirtualKeys(page)
    keyring = keys.plug_in()

    register(page, "Titan on my keyring")
    expect(page.locator(".flashes")).to_have_text(
        "Your Google Titan Security Key v2 is registered and counts towards activating your claim."
    )
    expect(page.get_by_test_id("titan-count")).to_have_text("1 of 2 Titan keys registered.")
    expect(page.get_by_test_id("keys")).to_contain_text(
        "Titan on my keyring — a genuine Google Titan Security Key v2"
    )
    live_server.screenshot(page, "keys")

    # The same key again: the browser refuses it (excludeCredentials) before the server hears.
    register(page, "Titan on my keyring, again")
    status = page.locator("#key-status")
    expect(status).to_have_text("This key is registered already. Use your other key.")
    expect(page.get_by_role("button", name="Register a key")).to_be_enabled()
    assert len(keys_of(live_server, who)) == 1

    keys.unplug(keyring)
    keys.plug_in()
    register(page, "Titan in the safe")
    expect(page.locator(".flashes")).to_contain_text(
        "All your keys are registered: your claim is complete. Thank you!"
    )
    expect(page.get_by_test_id("titan-count")).to_have_text("2 of 2 Titan keys registered.")
    live_server.screenshot(page, "keys-activated")

    registered = keys_of(live_server, who)
    assert [(k.name, k.outcome, k.trusted) for k in registered] == [
        ("Titan on my keyring", "titan", True),
        ("Titan in the safe", "titan", True),
    ]
    assert registered[0].credential_id != registered[1].credential_id
    assert claim_status(live_server, who) == "activated"

    page.get_by_role("link", name="‹ My claim").click()
    expect(page.get_by_test_id("next-step")).to_contain_text("All done: your keys are registered.")
    expect(
        page.get_by_test_id("timeline").get_by_role("listitem").filter(has_text="Keys registered")
    ).to_have_attribute("data-state", "done")


def test_an_untouched_key_and_a_signed_out_maintainer_get_readable_messages(
    live_server: LiveServer, page: Page
):
    who = shipped_parcel(live_server)
    sign_in_by_link(live_server, page, who.username)
    page.goto(f"{live_server.url}/claim/keys")
    keys = VirtualKeys(page)
    keys.leave_untouched(keys.plug_in())

    # The browser waits the 3 minutes the server asks for; this journey cannot. The timeout is
    # shortened on the way to the page, and the browser gives up as it would for a person.
    def with_short_timeout(route: Route) -> None:
        response = route.fetch()
        begun = response.json()
        begun["publicKey"]["timeout"] = 500
        route.fulfill(response=response, body=json.dumps(begun))

    page.route("**/api/claim/keys/options", with_short_timeout)
    register(page, "Untouched key")
    expect(page.locator("#key-status")).to_have_text(
        "The key was not registered: the request was cancelled, or it timed out before the key"
        " was touched. Press the button again and touch the key when it blinks."
    )
    expect(page.get_by_role("button", name="Register a key")).to_be_enabled()
    page.unroute("**/api/claim/keys/options")

    # Signed out in another tab: the server would send this page to sign in, not to the key.
    other_tab = page.context.new_page()
    other_tab.goto(f"{live_server.url}/claim")
    other_tab.get_by_role("button", name="Sign out").click()
    other_tab.close()
    register(page, "Key after signing out")
    expect(page.locator("#key-status")).to_have_text(
        "You are no longer signed in, so nothing was done. Sign in again, then retry."
    )
    assert keys_of(live_server, who) == []


def test_a_maintainer_signs_in_with_their_key_instead_of_a_link(
    live_server: LiveServer, page: Page
):
    who = shipped_parcel(live_server)
    sign_in_by_link(live_server, page, who.username)
    page.goto(f"{live_server.url}/claim/keys")
    VirtualKeys(page).plug_in()
    register(page, "Everyday key")
    expect(page.get_by_test_id("keys")).to_contain_text("Everyday key")
    email = keys_owner_email(live_server, who)
    page.get_by_role("button", name="Sign out").click()

    page.goto(f"{live_server.url}/sign-in")
    key_button = page.get_by_role("button", name="Sign in with my security key")
    key_button.click()  # no address yet
    expect(page.locator("#key-sign-in-status")).to_have_text(
        "Enter the email address of your PyPI account first."
    )
    page.get_by_label("Email address").fill(email)
    key_button.click()

    expect(page.locator(".flashes")).to_contain_text(
        f"Signed in as {who.username} with your security key."
    )
    assert page.url.endswith("/account")
    [key] = keys_of(live_server, who)
    assert key.sign_count >= 1 and key.last_used_at is not None


def keys_owner_email(live_server: LiveServer, who: Recipient) -> str:
    with get_database(live_server.app).transaction() as session:
        maintainer = session.get(Maintainer, who.maintainer_id)
        assert maintainer is not None
        return maintainer.email
