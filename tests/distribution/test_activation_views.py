"""Activation on the web: the JSON endpoints the page script calls, their refusals, and the
staff review of keys that are not counted as Titans."""

from __future__ import annotations

from uuid import UUID

import pytest
from sqlmodel import select

from accounts.models import SecurityKey, StaffRole
from distribution import webauthn
from distribution.models import Claim
from security import METADATA_EXTENSION
from tests.factories import (
    USB_A,
    USB_C,
    csrf_token,
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

    sign_in_as(client, make_staff(session, roles=[StaffRole.VIEWER]))
    listed = client.get("/staff/keys").get_data(as_text=True)
    assert "Yubi" in listed and str(OTHER_MAKE) in listed
    detail = client.get(f"/staff/keys/{key.id}").get_data(as_text=True)
    assert "<code>packed</code>" in detail and "Count it as a Titan" not in detail

    sign_in_as(client, make_staff(session, roles=[StaffRole.PROGRAMME]))
    token = csrf_token(client, f"/staff/keys/{key.id}")
    short = client.post(
        f"/staff/keys/{key.id}/accept", data={"reason": "okay", "csrf_token": token}
    )
    accepted = client.post(
        f"/staff/keys/{key.id}/accept",
        data={"reason": "A browser that hides the make; seen on a call", "csrf_token": token},
    )

    assert short.status_code == 400 and "at least 5 characters" in short.get_data(as_text=True)
    assert accepted.status_code == 302
    session.refresh(key)
    assert key.counts_as_titan and key.accepted_by
    assert "No key waits for review." in client.get("/staff/keys").get_data(as_text=True)

    # Accepted already, so the page offers no form: a short reason was refused with no word.
    again = client.post(f"/staff/keys/{key.id}/accept", data={"reason": "ok", "csrf_token": token})
    assert again.status_code == 400
    assert "Reason: Between 3 and 1,000 characters." in again.get_data(as_text=True)


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
    client.get("/sign-out")
    csrf = csrf_token(client, "/sign-in")

    def post(path, body):
        return client.post(path, json=body, headers={"X-CSRFToken": csrf})

    no_email = post("/api/sign-in/key/options", {"email": ""})
    options = post("/api/sign-in/key/options", {"email": maintainer.email}).get_json()
    answer = key.sign_in(options["publicKey"], origin="http://localhost")
    signed_in = post("/api/sign-in/key", {"token": options["token"], "credential": answer})
    replayed = post("/api/sign-in/key", {"token": options["token"], "credential": answer})

    assert no_email.status_code == 400 and "email address" in no_email.get_json()["message"]
    assert signed_in.status_code == 200 and signed_in.get_json()["next"].endswith("/account")
    assert replayed.status_code == 400 and "used already" in replayed.get_json()["message"]
    page = client.get("/account")
    assert page.status_code == 200 and "with your security key" in page.get_data(as_text=True)
