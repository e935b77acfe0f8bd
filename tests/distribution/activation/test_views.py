"""Activation on the web: the JSON endpoints the page script calls, their refusals, removing a
key that does not count, and the staff review of keys that are not counted as Titans."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest
from sqlmodel import select

from accounts.access import METADATA_EXTENSION
from accounts.models import SecurityKey, StaffRole, WebAuthnChallenge
from adapters import webauthn
from core.audit import AuditEvent
from core.db import utcnow
from distribution.activation.views import PYPI_TWO_FACTOR
from distribution.models import Claim, Shipment
from tests.factories import (
    USB_A,
    USB_C,
    csrf_token,
    make_maintainer,
    make_staff,
    shipped_parcel,
    sign_in_as,
    stock_famous_project,
)
from tests.soft_authenticator import SoftAuthenticator, TestCA

TITAN = UUID("42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3")
OTHER_MAKE = UUID("01020304-0506-0708-0102-030405060708")


@pytest.fixture(scope="module")
def ca():
    return TestCA.create()


@pytest.fixture
def maintainer(app, client, session, settings, ca):
    """Signed in, with a parcel of two keys on its way; the app trusts the test CA."""
    app.extensions[METADATA_EXTENSION] = webauthn.Metadata.bundled().with_extra_entry(
        aaguid=TITAN, root_certificate=ca.der, description="Google Titan Security Key v2"
    )
    stock_famous_project(session, {USB_A: 2, USB_C: 2})
    person, _parcel = shipped_parcel(session, settings)
    sign_in_as(client, person)
    return person


def begin(client):
    token = csrf_token(client, "/claim/keys")
    options = client.post("/api/claim/keys/options", headers={"X-CSRFToken": token})
    assert options.status_code == 200
    return token, options.get_json()


def send(client, csrf, body):
    return client.post("/api/claim/keys", json=body, headers={"X-CSRFToken": csrf})


def test_a_maintainer_registers_both_keys_on_the_web(client, session, maintainer, ca):
    page = client.get("/claim/keys").get_data(as_text=True)
    assert "0 of 2</strong> Titan keys registered" in page and "js/webauthn.js" in page

    for number in (1, 2):
        csrf, begun = begin(client)
        credential = SoftAuthenticator(aaguid=TITAN, ca=ca).register(
            begun["publicKey"], origin="http://localhost"
        )
        done = send(
            client,
            csrf,
            {"token": begun["token"], "name": f"Titan {number}", "credential": credential},
        )
        assert done.status_code == 200, done.get_json()
        assert done.get_json()["outcome"] == "titan"

    assert done.get_json()["activated"] is True
    assert session.exec(select(Claim)).one().status == "activated"
    page = client.get("/claim/keys").get_data(as_text=True)
    assert "2 of 2</strong> Titan keys registered" in page
    assert "a genuine Google Titan Security Key v2" in page and "your claim is complete" in page


def test_refusals_are_json_with_a_reason_and_spend_the_challenge(client, session, maintainer, ca):
    csrf, begun = begin(client)
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    wrong_origin = key.register(begun["publicKey"], origin="http://evil.example")

    refused = send(
        client, csrf, {"token": begun["token"], "name": "Titan", "credential": wrong_origin}
    )
    replayed = send(
        client,
        csrf,
        {
            "token": begun["token"],
            "name": "Titan",
            "credential": key.register(begun["publicKey"], origin="http://localhost"),
        },
    )
    garbage = send(
        client, csrf, {"token": begin(client)[1]["token"], "name": "T", "credential": {"id": 1}}
    )
    not_json = client.post("/api/claim/keys", data="nonsense", headers={"X-CSRFToken": csrf})
    no_csrf = client.post("/api/claim/keys", json={})

    assert refused.status_code == 400 and "another website" in refused.get_json()["message"]
    assert replayed.status_code == 400 and "used already" in replayed.get_json()["message"]
    assert garbage.status_code == 400 and garbage.get_json()["message"]
    assert not_json.status_code == 400 and "JSON object" in not_json.get_json()["message"]
    assert no_csrf.status_code == 400
    assert session.exec(select(SecurityKey)).all() == []


def test_programme_staff_review_and_accept_another_make(client, session, maintainer, ca):
    csrf, begun = begin(client)
    credential = SoftAuthenticator(aaguid=OTHER_MAKE, ca=ca).register(
        begun["publicKey"], origin="http://localhost"
    )
    done = send(client, csrf, {"token": begun["token"], "name": "Yubi", "credential": credential})
    assert done.get_json()["outcome"] == "other"
    key = session.exec(select(SecurityKey)).one()

    parcel = session.exec(select(Shipment)).one()
    sign_in_as(client, make_staff(session, roles=[StaffRole.VIEWER]))
    listed = client.get("/staff/keys").get_data(as_text=True)
    assert "Yubi" in listed and str(OTHER_MAKE) in listed
    assert maintainer.display_name in listed and maintainer.email in listed
    assert f'href="/staff/shipping/parcels/{parcel.reference}"' in listed
    detail = client.get(f"/staff/keys/{key.id}").get_data(as_text=True)
    assert "<code>packed</code>" in detail and "Count it as a Titan" not in detail
    stored = detail[detail.index('data-testid="stored"') : detail.index("read today")]
    assert "another make, or one the metadata did not know" in stored
    assert "<dt>Chain trusted</dt><dd>no</dd>" in stored
    assert f'<time datetime="{key.created_at.isoformat()}">' in stored

    sign_in_as(client, make_staff(session, roles=[StaffRole.PROGRAMME]))
    token = csrf_token(client, f"/staff/keys/{key.id}")
    short = client.post(
        f"/staff/keys/{key.id}/accept", data={"reason": "okay", "csrf_token": token}
    )
    accepted = client.post(
        f"/staff/keys/{key.id}/accept",
        data={"reason": "A browser that hides the make; seen on a call", "csrf_token": token},
    )

    # The form asks for what the service does: 5 characters, blanks around them not counted.
    assert short.status_code == 400
    assert "Between 5 and 1,000 characters." in short.get_data(as_text=True)
    assert accepted.status_code == 302
    session.refresh(key)
    assert key.counts_as_titan and key.accepted_by
    assert "No key waits for review." in client.get("/staff/keys").get_data(as_text=True)
    event = session.exec(
        select(AuditEvent).where(AuditEvent.action == "security_key.accepted")
    ).one()
    assert event.details["reason"] == "A browser that hides the make; seen on a call"

    # The acceptance is shown on the parcel's page, and to the maintainer on My claim.
    decision = (
        f"{key.accepted_by}",
        key.accepted_at.strftime("%-d %b %Y"),
        "A browser that hides the make; seen on a call",
    )
    parcel_page = client.get(f"/staff/shipping/parcels/{parcel.reference}").get_data(as_text=True)
    shown = parcel_page[parcel_page.index('data-testid="acceptances"') :]
    assert "“Yubi”" in shown and all(part in shown for part in decision)

    # Accepted already, so the page offers no form: a short reason was refused with no word.
    again = client.post(f"/staff/keys/{key.id}/accept", data={"reason": "ok", "csrf_token": token})
    assert again.status_code == 400
    assert "Reason: Between 5 and 1,000 characters." in again.get_data(as_text=True)

    sign_in_as(client, maintainer)
    my_claim = client.get("/claim").get_data(as_text=True)
    shown = my_claim[my_claim.index('data-testid="acceptances"') :]
    assert "Your key “Yubi” counts as a Titan: programme staff accepted it" in shown
    assert key.accepted_by not in shown  # staff are not named to maintainers
    assert key.accepted_at.strftime("%-d %B %Y") in shown and decision[2] in shown


def test_a_maintainer_signs_in_with_their_key_instead_of_a_link(client, session, maintainer, ca):
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    csrf, begun = begin(client)
    credential = key.register(begun["publicKey"], origin="http://localhost")
    assert (
        send(
            client, csrf, {"token": begun["token"], "name": "T", "credential": credential}
        ).status_code
        == 200
    )
    signed_out = client.post("/sign-out", data={"csrf_token": csrf})
    assert signed_out.status_code == 302
    assert client.get("/claim").location.endswith("/sign-in")  # really signed out
    csrf = csrf_token(client, "/sign-in")

    def post(path, body):
        return client.post(path, json=body, headers={"X-CSRFToken": csrf})

    no_email = post("/api/sign-in/key/options", {"email": ""})
    options = post("/api/sign-in/key/options", {"email": maintainer.email}).get_json()
    answer = key.sign_in(options["publicKey"], origin="http://localhost")
    signed_in = post("/api/sign-in/key", {"token": options["token"], "credential": answer})
    page = client.get("/account")
    csrf = csrf_token(client, "/account")  # signing in gave the session a new CSRF secret
    replayed = post("/api/sign-in/key", {"token": options["token"], "credential": answer})

    assert no_email.status_code == 400 and "email address" in no_email.get_json()["message"]
    assert signed_in.status_code == 200 and signed_in.get_json()["next"].endswith("/account")
    assert replayed.status_code == 400 and "used already" in replayed.get_json()["message"]
    assert page.status_code == 200 and "with your security key" in page.get_data(as_text=True)


def test_the_keys_page_says_why_two_keys_and_links_to_pypi(client, maintainer):
    page = client.get("/claim/keys").get_data(as_text=True)

    why = page[page.index('id="why-heading">Why two keys</h2>') :]
    assert "so losing one never locks you out" in why
    assert f'<a href="{PYPI_TWO_FACTOR}">' in why
    assert PYPI_TWO_FACTOR == "https://pypi.org/manage/account/two-factor/"


def refusal(client, session, **register):
    """Register a key whose answer is wrong as ``register`` says; the refusal's status and
    message, and the keys stored."""
    csrf, begun = begin(client)
    authenticator = register.pop("authenticator")
    expire = register.pop("expire", False)
    if expire:
        session.get(WebAuthnChallenge, begun["token"]).expires_at = utcnow() - timedelta(seconds=1)
        session.flush()
    credential = authenticator.register(begun["publicKey"], origin="http://localhost", **register)
    answer = send(client, csrf, {"token": begun["token"], "name": "Key", "credential": credential})
    return answer.status_code, answer.get_json()["message"], session.exec(select(SecurityKey)).all()


def test_an_expired_challenge_is_a_4xx_that_says_so(client, session, maintainer, ca):
    status, message, stored = refusal(
        client, session, authenticator=SoftAuthenticator(aaguid=TITAN, ca=ca), expire=True
    )
    assert status == 400 and "timed out" in message and stored == []


def test_a_forged_titan_is_a_4xx_that_says_so_and_is_audited(client, session, maintainer):
    status, message, stored = refusal(
        client, session, authenticator=SoftAuthenticator(aaguid=TITAN), attestation="self"
    )
    assert status == 422 and "signs its own attestation" in message and stored == []
    refused = session.exec(select(AuditEvent).where(AuditEvent.action == "security_key.refused"))
    assert refused.one().details["refusal"] == "ForgedAttestation"  # the refusal was committed


def test_a_key_answering_another_rp_id_is_a_4xx_that_says_so(client, session, maintainer, ca):
    status, message, stored = refusal(
        client,
        session,
        authenticator=SoftAuthenticator(aaguid=TITAN, ca=ca),
        rp_id="evil.example",
    )
    assert status == 400 and "another website than localhost" in message and stored == []


def test_a_made_up_attestation_format_is_a_4xx_that_says_so(client, session, maintainer, ca):
    status, message, stored = refusal(
        client, session, authenticator=SoftAuthenticator(aaguid=OTHER_MAKE, ca=ca), fmt="x" * 40
    )
    assert status == 400 and "not one WebAuthn defines" in message and stored == []


def test_a_maintainer_removes_a_key_that_does_not_count(client, session, maintainer, ca):
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    for attestation in ("none", "packed"):  # withheld, then retried showing the make
        csrf, begun = begin(client)
        credential = key.register(
            begun["publicKey"], origin="http://localhost", attestation=attestation
        )
        send(client, csrf, {"token": begun["token"], "name": attestation, "credential": credential})
    withheld, titan = session.exec(select(SecurityKey).order_by(SecurityKey.id)).all()
    page = client.get("/claim/keys").get_data(as_text=True)
    assert f'data-testid="remove-key-{withheld.id}"' in page
    assert f'data-testid="remove-key-{titan.id}"' not in page  # it counts

    no_csrf = client.post(f"/claim/keys/{withheld.id}/remove")
    counted = client.post(f"/claim/keys/{titan.id}/remove", data={"csrf_token": csrf})
    removed = client.post(f"/claim/keys/{withheld.id}/remove", data={"csrf_token": csrf})

    assert no_csrf.status_code == 400
    assert counted.status_code == 400 and "it is the proof" in counted.get_data(as_text=True)
    assert removed.status_code == 302
    page = client.get("/claim/keys").get_data(as_text=True)
    assert "Key removed." in page and "make and model not shown" not in page
    session.refresh(withheld)
    assert withheld.removed_at is not None  # kept, marked
    again = client.post(f"/claim/keys/{withheld.id}/remove", data={"csrf_token": csrf})
    assert again.status_code == 404 and "You have no such key." in again.get_data(as_text=True)


def test_a_stranger_cannot_lock_a_maintainer_out_of_key_sign_in(app, session):
    """Key sign-in options are limited per address and client: a stranger asking for Ada's
    from elsewhere is stopped, and Ada, from her own browser, is not."""
    make_maintainer(session, email="ada@example.org")

    def ask(client, remote):
        csrf = csrf_token(client, "/sign-in")
        return client.post(
            "/api/sign-in/key/options",
            json={"email": "ada@example.org"},
            headers={"X-CSRFToken": csrf},
            environ_base={"REMOTE_ADDR": remote},
        ).status_code

    stranger, ada = app.test_client(), app.test_client()
    assert [ask(stranger, "198.51.100.7") for _ in range(6)] == [200] * 5 + [429]
    assert ask(ada, "203.0.113.9") == 200
