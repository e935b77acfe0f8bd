"""Staff sign in with a password and then a security key (or a recovery code); a first key is
registered on the way in, with eight recovery codes shown once."""

from __future__ import annotations

import re
from uuid import UUID

import pytest
from sqlmodel import select

from accounts import second_factor
from accounts.models import RecoveryCode, SecurityKey
from db import AuditEvent
from tests.factories import STAFF_PASSWORD, csrf_token, make_staff
from tests.soft_authenticator import SoftAuthenticator, TestCA

OTHER_MAKE = UUID("01020304-0506-0708-0102-030405060708")
ORIGIN = "http://localhost"


def text(response):
    return response.get_data(as_text=True)


@pytest.fixture
def staff(session):
    return make_staff(session, email="ops@example.org", name="Olu Ops")


@pytest.fixture
def key():
    return SoftAuthenticator(aaguid=OTHER_MAKE, ca=TestCA.create())


def password(client, email="ops@example.org", secret=STAFF_PASSWORD, path="/staff/sign-in"):
    token = csrf_token(client, "/staff/sign-in")
    return client.post(path, data={"email": email, "password": secret, "csrf_token": token})


def api(client, path, body=None):
    return client.post(
        path, json=body or {}, headers={"X-CSRFToken": csrf_token(client, "/staff/sign-in")}
    )


def enrol(client, key, name="Office key"):
    begun = api(client, "/api/staff/keys/options").get_json()
    credential = key.register(begun["publicKey"], origin=ORIGIN)
    return api(
        client, "/api/staff/keys", {"token": begun["token"], "name": name, "credential": credential}
    )


def present(client, key, **kwargs):
    begun = api(client, "/api/staff/sign-in/key/options").get_json()
    answer = key.sign_in(begun["publicKey"], origin=ORIGIN, **kwargs)
    return api(client, "/api/staff/sign-in/key", {"token": begun["token"], "credential": answer})


def test_a_first_sign_in_registers_a_key_and_shows_recovery_codes_once(client, session, staff, key):
    wrong = password(client, secret="nope")
    assert wrong.status_code == 401 and "do not match an active staff account" in text(wrong)

    right = password(client)
    assert right.status_code == 302 and right.location.endswith("/staff/sign-in/key")
    assert client.get("/staff/").status_code == 302  # not signed in until the key
    page = client.get("/staff/sign-in/key")
    assert "Register your security key" in text(page)

    registered = enrol(client, key)
    assert registered.status_code == 200 and registered.get_json()["next"].endswith(
        "/staff/recovery-codes"
    )
    codes_page = text(client.get("/staff/recovery-codes"))
    codes = re.findall(r"<code>([A-Z0-9]{5}-[A-Z0-9]{5})</code>", codes_page)
    assert len(codes) == len(set(codes)) == 8
    assert client.get("/staff/recovery-codes").status_code == 302  # shown once
    assert "Olu Ops" in text(client.get("/staff/"))
    stored = session.exec(select(RecoveryCode)).all()
    assert len(stored) == 8 and not any(code in {s.code_hash for s in stored} for code in codes)
    assert session.exec(select(SecurityKey)).one().staff_id == staff.id


def test_later_sign_ins_need_the_key_or_a_recovery_code(client, session, staff, key):
    password(client)
    enrol(client, key)
    codes = re.findall(r"<code>([A-Z0-9-]{11})</code>", text(client.get("/staff/recovery-codes")))
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})

    password(client, path="/staff/sign-in?next=/staff/audit")
    assert "Present your security key" in text(client.get("/staff/sign-in/key"))
    # Past the password with a key already: no adding another before presenting it.
    assert api(client, "/api/staff/keys/options").status_code == 401
    signed_in = present(client, key)
    assert signed_in.status_code == 200 and signed_in.get_json()["next"] == "/staff/audit"
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})

    password(client)
    replay = present(client, key, counter=1)  # the counter went backwards: a cloned key?
    assert replay.status_code == 409
    token = csrf_token(client, "/staff/sign-in/key")
    bad = client.post("/staff/sign-in/recovery", data={"code": "AAAAA-AAAAA", "csrf_token": token})
    assert bad.status_code == 401 and "not valid, or it was used already" in text(bad)
    good = client.post(
        "/staff/sign-in/recovery", data={"code": codes[0].lower(), "csrf_token": token}
    )
    assert good.status_code == 302
    assert "7 left" in text(client.get("/staff/"))
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})
    password(client)
    again = client.post("/staff/sign-in/recovery", data={"code": codes[0], "csrf_token": token})
    assert again.status_code == 401
    actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert "security_key.counter_regression" in actions and "staff.recovery_code_used" in actions


@pytest.mark.parametrize(
    "target",
    ["/staff/%0d%0aSet-Cookie:%20x=1", "/%09/evil.example", "/%E2%80%AE", "/" + "a" * 1000],
)
def test_a_next_page_that_is_not_a_plain_path_here_is_ignored(client, staff, key, target):
    # CR/LF made the redirect after the key a 500; a tab made it "//evil.example", another site.
    password(client)
    enrol(client, key)
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})

    password(client, path=f"/staff/sign-in?next={target}")
    signed_in = present(client, key)

    assert signed_in.status_code == 200 and signed_in.get_json()["next"] == "/staff/"


def test_the_last_key_cannot_be_removed(client, session, staff, key):
    password(client)
    enrol(client, key)
    client.get("/staff/recovery-codes")
    only = session.exec(select(SecurityKey)).one()
    token = csrf_token(client, "/staff/my-keys")
    refused = client.post(f"/staff/my-keys/{only.id}/remove", data={"csrf_token": token})
    assert refused.status_code == 400 and "your last key" in text(refused)

    enrol(client, SoftAuthenticator(aaguid=OTHER_MAKE, ca=TestCA.create()), name="Spare")
    removed = client.post(f"/staff/my-keys/{only.id}/remove", data={"csrf_token": token})
    assert removed.status_code == 302
    assert [k.name for k in session.exec(select(SecurityKey)).all()] == ["Spare"]


def test_another_staff_members_key_is_not_found(client, session, staff, key):
    other = make_staff(session, email="desk@example.org")
    password(client, email="desk@example.org")
    enrol(client, SoftAuthenticator(aaguid=OTHER_MAKE, ca=TestCA.create()), name="Desk")
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})
    password(client)
    enrol(client, key)
    enrol(client, SoftAuthenticator(aaguid=OTHER_MAKE, ca=TestCA.create()), name="Spare")
    theirs = session.exec(select(SecurityKey).where(SecurityKey.staff_id == other.id)).one()

    token = csrf_token(client, "/staff/my-keys")
    refused = client.post(f"/staff/my-keys/{theirs.id}/remove", data={"csrf_token": token})

    assert refused.status_code == 404 and "You have no such key." in text(refused)  # was 400
    session.refresh(theirs)
    assert theirs.name == "Desk"


def test_without_a_password_there_is_no_second_step(client, staff):
    assert client.get("/staff/sign-in/key").location.endswith("/staff/sign-in")
    assert api(client, "/api/staff/sign-in/key/options").status_code == 401


def test_demo_staff_may_skip_the_key_and_are_told(app_factory, session):
    demo = app_factory(demo_mode=True, mail_backend="outbox")
    client = demo.test_client()
    make_staff(session, email="ops@example.org")
    signed_in = password(client)
    assert signed_in.status_code == 302 and signed_in.location.endswith("/staff/")
    assert "Demo mode: you signed in without a security key" in text(client.get("/staff/"))


def test_recovery_codes_are_single_use_and_reissuing_voids_the_old(session, staff):
    first = second_factor.issue_recovery_codes(session=session, staff=staff)
    second = second_factor.issue_recovery_codes(session=session, staff=staff)
    with pytest.raises(Exception, match="not valid"):
        second_factor.use_recovery_code(session=session, staff=staff, code=first[0])
    assert second_factor.use_recovery_code(session=session, staff=staff, code=second[0]) == 7


def test_the_step_after_the_password_lasts_ten_minutes(client, staff, key):
    password(client)
    with client.session_transaction() as cookie:
        cookie["staff_pending"] = {**cookie["staff_pending"], "since": "2000-01-01T00:00:00+00:00"}
    late = client.get("/staff/sign-in/key")
    assert late.status_code == 302 and late.location.endswith("/staff/sign-in")
    assert api(client, "/api/staff/keys/options").status_code == 401
