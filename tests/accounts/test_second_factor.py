"""Staff sign in with a password and then a security key (or a recovery code); a first key is
registered on the way in, with eight recovery codes shown once. Removing a key keeps its record,
and never the last one, even from two tabs at once."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import threading
from uuid import UUID

import pytest
from sqlmodel import Session, select

from accounts import second_factor, security_keys
from accounts.models import RecoveryCode, SecurityKey, Staff
from accounts.security_keys import KeyProblem
from accounts.services import actor_for
from adapters import webauthn
from core.audit import AuditEvent
from core.db import create_db_engine
from tests.distribution.test_concurrency import race
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


def sign_ins(session):
    """The sign-in events, oldest first: action and details."""
    found = session.exec(
        select(AuditEvent)
        .where(AuditEvent.action.startswith("sign_in.staff"))
        .order_by(AuditEvent.id)
    ).all()
    return [(event.action, event.details) for event in found]


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
    key_row = session.exec(select(SecurityKey)).one()
    assert key_row.staff_id == staff.id
    # The password alone signed nobody in; the key registered after it did.
    assert sign_ins(session)[-2:] == [
        ("sign_in.staff_password", {}),
        ("sign_in.staff", {"method": "security_key", "key_id": key_row.id, "enrolled": True}),
    ]


def test_later_sign_ins_need_the_key_or_a_recovery_code(client, session, staff, key):
    password(client)
    enrol(client, key)
    codes = re.findall(r"<code>([A-Z0-9-]{11})</code>", text(client.get("/staff/recovery-codes")))
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})

    password(client, path="/staff/sign-in?next=/staff/audit")
    assert "Present your security key" in text(client.get("/staff/sign-in/key"))
    assert sign_ins(session)[-1] == ("sign_in.staff_password", {})  # not signed in yet
    # Past the password with a key already: no adding another before presenting it.
    assert api(client, "/api/staff/keys/options").status_code == 401
    signed_in = present(client, key)
    assert signed_in.status_code == 200 and signed_in.get_json()["next"] == "/staff/audit"
    key_id = session.exec(select(SecurityKey)).one().id
    assert sign_ins(session)[-1] == ("sign_in.staff", {"method": "security_key", "key_id": key_id})
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
    assert sign_ins(session)[-1] == ("sign_in.staff", {"method": "recovery_code", "codes_left": 7})
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})
    password(client)
    token = csrf_token(client, "/staff/sign-in/key")  # a new secret with each sign-in step
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
    page = text(client.get("/staff/my-keys"))
    assert "Key removed." in page and "Office key" not in page and "Spare" in page
    # Kept, marked removed, and audited; it no longer signs in.
    session.refresh(only)
    assert only.removed_at is not None
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "security_key.removed"))
    assert event.one().subject_id == str(only.id)
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})
    password(client)
    begun = api(client, "/api/staff/sign-in/key/options").get_json()
    assert [c["id"] for c in begun["publicKey"]["allowCredentials"]] != [only.credential_id]
    old = key.sign_in(begun["publicKey"], origin=ORIGIN, credential_id=next(iter(key.credentials)))
    refused = api(client, "/api/staff/sign-in/key", {"token": begun["token"], "credential": old})
    assert refused.status_code == 400 and "not registered" in refused.get_json()["message"]


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
    demo = app_factory(environment="development", demo_mode=True, mail_backend="outbox")
    client = demo.test_client()
    make_staff(session, email="ops@example.org")
    signed_in = password(client)
    assert signed_in.status_code == 302 and signed_in.location.endswith("/staff/")
    assert "Demo mode: you signed in without a security key" in text(client.get("/staff/"))
    assert sign_ins(session)[-1] == ("sign_in.staff", {"method": "password", "demo": True})


def test_recovery_codes_are_single_use_and_reissuing_voids_the_old(session, settings, staff):
    first = second_factor.issue_recovery_codes(session=session, settings=settings, staff=staff)
    second = second_factor.issue_recovery_codes(session=session, settings=settings, staff=staff)
    with pytest.raises(Exception, match="not valid"):
        second_factor.use_recovery_code(
            session=session, settings=settings, staff=staff, code=first[0]
        )
    assert (
        second_factor.use_recovery_code(
            session=session, settings=settings, staff=staff, code=second[0]
        )
        == 7
    )


def test_recovery_codes_are_kept_as_hmacs_keyed_with_the_secret(session, settings, staff):
    codes = second_factor.issue_recovery_codes(session=session, settings=settings, staff=staff)
    typed = codes[0].replace("-", "")
    stored = {row.code_hash for row in session.exec(select(RecoveryCode)).all()}

    assert hashlib.sha256(typed.encode()).hexdigest() not in stored  # no plain SHA-256
    keyed = hmac.new(settings.secret_key.encode(), typed.encode(), hashlib.sha256).hexdigest()
    assert keyed in stored
    assert (
        second_factor.use_recovery_code(
            session=session, settings=settings, staff=staff, code=f" {codes[0].lower()} "
        )
        == 7
    )
    with pytest.raises(Exception, match="used already"):
        second_factor.use_recovery_code(
            session=session, settings=settings, staff=staff, code=codes[0]
        )


def test_two_tabs_removing_the_last_two_keys_at_once_leave_one(databases, settings, monkeypatch):
    engine = create_db_engine(databases.create("last_key"))
    with Session(engine) as session:
        staff = make_staff(session, email="racer@example.org")
        for name in ("Office key", "Spare"):
            options, token = second_factor.registration_options(
                session=session, settings=settings, staff=staff
            )
            second_factor.register(
                session=session,
                settings=settings,
                metadata=webauthn.Metadata.bundled(),
                staff=staff,
                token=token,
                response=SoftAuthenticator(aaguid=OTHER_MAKE).register(
                    options, origin=ORIGIN, attestation="none"
                ),
                name=name,
            )
        session.commit()
        key_ids = [key.id for key in session.exec(select(SecurityKey)).all()]

    # Each removal pauses once it found its key, before counting the keys left, until the other
    # has too (or for a second, when the other waits on a lock): without one, both counted two.
    both_found = threading.Barrier(2)
    find_key = security_keys.own_key

    def found_then_pause(**arguments):
        key = find_key(**arguments)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_found.wait(timeout=1)
        return key

    monkeypatch.setattr(security_keys, "own_key", found_then_pause)

    def remove(key_id):
        def attempt(session):
            me = session.exec(select(Staff)).one()
            second_factor.remove_key(session=session, actor=actor_for(me), staff=me, key_id=key_id)
            return "removed"

        return attempt

    results = race(engine, [remove(key_id) for key_id in key_ids])

    assert sorted(str(result) for result in results)[1] == "removed"
    (refusal,) = [result for result in results if isinstance(result, KeyProblem)]
    assert "your last key" in refusal.message
    with Session(engine) as session:
        left = session.exec(select(SecurityKey).where(SecurityKey.removed_at == None)).all()  # noqa: E711
        assert len(left) == 1
    engine.dispose()


def test_the_step_after_the_password_lasts_ten_minutes(client, staff, key):
    password(client)
    with client.session_transaction() as cookie:
        cookie["staff_pending"] = {**cookie["staff_pending"], "since": "2000-01-01T00:00:00+00:00"}
    late = client.get("/staff/sign-in/key")
    assert late.status_code == 302 and late.location.endswith("/staff/sign-in")
    assert api(client, "/api/staff/keys/options").status_code == 401
