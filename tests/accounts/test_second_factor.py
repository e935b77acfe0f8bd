"""Staff sign in with a password and then a security key (or a recovery code); a first key is
registered on the way in, in a browser that opened the enrolment link an admin issued, with
eight recovery codes shown once. Removing a key keeps its record, and never the last one, even
from two tabs at once."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import threading
from datetime import timedelta
from uuid import UUID

import pytest
from sqlmodel import Session, select

from accounts import enrolment, second_factor, security_keys
from accounts.models import RecoveryCode, SecurityKey, Staff, StaffRole
from accounts.security_keys import KeyProblem
from accounts.services import actor_for
from adapters import webauthn
from core.actors import Actor
from core.audit import AuditEvent
from core.db import create_db_engine
from tests.distribution.test_concurrency import race
from tests.factories import STAFF_PASSWORD, csrf_token, make_staff, sign_in_as
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


def issue_link(session, staff, hours=1):
    return enrolment.issue_link(
        session=session, actor=Actor.system("test"), staff=staff, valid_for=timedelta(hours=hours)
    )


def open_link(client, session, staff):
    """The staff member's enrolment link, as an admin issued it, opened in this browser."""
    return client.get(f"/staff/enrol/{issue_link(session, staff)}")


def enrol(client, key, name="Office key"):
    begun = api(client, "/api/staff/keys/options").get_json()
    credential = key.register(begun["publicKey"], origin=ORIGIN)
    return api(
        client, "/api/staff/keys", {"token": begun["token"], "name": name, "credential": credential}
    )


def add_key(session, settings, staff, name):
    """Register a key for ``staff`` as they would once signed in (no enrolment link)."""
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


def present(client, key, **kwargs):
    begun = api(client, "/api/staff/sign-in/key/options").get_json()
    answer = key.sign_in(begun["publicKey"], origin=ORIGIN, **kwargs)
    return api(client, "/api/staff/sign-in/key", {"token": begun["token"], "credential": answer})


def test_a_first_sign_in_registers_a_key_and_shows_recovery_codes_once(client, session, staff, key):
    wrong = password(client, secret="nope")
    assert wrong.status_code == 401 and "do not match an active staff account" in text(wrong)

    welcome = open_link(client, session, staff)
    assert welcome.status_code == 200 and "Welcome, Olu Ops" in text(welcome)
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
    open_link(client, session, staff)
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
def test_a_next_page_that_is_not_a_plain_path_here_is_ignored(client, session, staff, key, target):
    # CR/LF made the redirect after the key a 500; a tab made it "//evil.example", another site.
    open_link(client, session, staff)
    password(client)
    enrol(client, key)
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})

    password(client, path=f"/staff/sign-in?next={target}")
    signed_in = present(client, key)

    assert signed_in.status_code == 200 and signed_in.get_json()["next"] == "/staff/"


def test_the_last_key_cannot_be_removed(client, session, staff, key):
    open_link(client, session, staff)
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
    open_link(client, session, other)
    password(client, email="desk@example.org")
    enrol(client, SoftAuthenticator(aaguid=OTHER_MAKE, ca=TestCA.create()), name="Desk")
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})
    open_link(client, session, staff)
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
            add_key(session, settings, staff, name)
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


# --- enrolment links and resets ----------------------------------------------------------------


def test_a_stolen_password_alone_cannot_register_a_first_key(client, session, staff, key):
    """Someone with the password and their own key, without the enrolment link: no key is
    registered and nobody is signed in; the page says what the owner needs."""
    issue_link(session, staff)  # emailed to the owner, not opened by this browser
    assert password(client).status_code == 302

    page = client.get("/staff/sign-in/key")
    assert page.status_code == 403
    assert "Your first key needs an enrolment link" in text(page)
    refused = api(client, "/api/staff/keys/options")
    assert refused.status_code == 403 and "enrolment link" in refused.get_json()["message"]
    # A registration token from another source is refused the same way.
    forged = api(client, "/api/staff/keys", {"token": "x" * 40, "name": "Mine", "credential": {}})
    assert forged.status_code == 403
    assert session.exec(select(SecurityKey)).all() == []
    assert client.get("/staff/").status_code == 302
    assert [action for action, _ in sign_ins(session)] == ["sign_in.staff_password"]


def test_an_enrolment_link_enrols_only_its_owner(client, session, staff, key):
    """A link opened for one staff member does not let another register a key."""
    other = make_staff(session, email="desk@example.org")
    open_link(client, session, other)
    password(client)  # Olu's password, Desk's link
    assert client.get("/staff/sign-in/key").status_code == 403
    assert api(client, "/api/staff/keys/options").status_code == 403


def test_an_enrolment_link_works_once(client, session, staff, key):
    token = issue_link(session, staff)
    client.get(f"/staff/enrol/{token}")
    password(client)
    assert enrol(client, key).status_code == 200
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/staff/")})

    again = client.get(f"/staff/enrol/{token}")
    assert again.status_code == 410
    assert "This enrolment link was already used" in text(again)
    assert "tell an administrator at once" in text(again)
    events = session.exec(select(AuditEvent)).all()
    assert sorted(e.action for e in events if "enrolment" in e.action) == [
        "staff.enrolment_issued",
        "staff.enrolment_used",
    ]


@pytest.mark.parametrize(
    ("case", "status", "title"),
    [
        ("unknown", 404, "This enrolment link is not valid"),
        ("expired", 410, "This enrolment link has expired"),
        ("replaced", 410, "This enrolment link was replaced by a newer one"),
    ],
)
def test_a_link_that_cannot_enrol_has_its_own_page(client, session, staff, case, status, title):
    token = issue_link(session, staff, hours=0 if case == "expired" else 1)
    if case == "replaced":
        issue_link(session, staff)
    page = client.get(f"/staff/enrol/{'x' * 43 if case == 'unknown' else token}")
    assert page.status_code == status
    assert f"<h1>{title}</h1>" in text(page)
    assert "Reset keys and send a new enrolment link" in text(page)  # who can help, and how
    # The browser holds nothing that would let a password register a key.
    password(client)
    assert client.get("/staff/sign-in/key").status_code == 403


def test_an_admin_resets_a_staff_members_keys(app, client, session, staff, key, mailbox):
    """A lost keyring: the keys and recovery codes stop working, every session ends, and the
    emailed enrolment link lets the owner register a new key."""
    open_link(client, session, staff)
    password(client)
    enrol(client, key)
    assert client.get("/staff/recovery-codes").status_code == 200
    admin = make_staff(session, email="boss@example.org", name="Bea Boss")
    desk = app.test_client()
    sign_in_as(desk, admin)
    form = text(desk.get(f"/staff/people/{staff.id}"))
    assert "Office key, registered" in form

    reset = desk.post(
        f"/staff/people/{staff.id}/keys/reset",
        data={"csrf_token": csrf_token(desk, f"/staff/people/{staff.id}")},
    )
    assert reset.status_code == 302
    assert "An enrolment link is on its way to ops@example.org" in text(desk.get(reset.location))
    assert client.get("/staff/").status_code == 302  # signed out everywhere
    assert session.exec(select(SecurityKey)).one().removed_at is not None
    assert second_factor.recovery_codes_left(session=session, staff=staff) == 0
    (event,) = session.exec(select(AuditEvent).where(AuditEvent.action == "staff.keys_reset"))
    assert (event.actor_label, event.details) == (
        "boss@example.org",
        {"keys_removed": 1, "sessions_ended": 1},
    )

    # The old key no longer signs in: the password leads to the enrolment page instead.
    password(client)
    assert client.get("/staff/sign-in/key").status_code == 403
    mail = mailbox.to("ops@example.org")[-1]
    assert mail["Subject"] == "Register your security key for the Security Key Giveaway"
    link = mailbox.last_link("ops@example.org")
    assert link.startswith("http://localhost/staff/enrol/")
    assert client.get(link.removeprefix("http://localhost")).status_code == 302  # to the key step
    new_key = SoftAuthenticator(aaguid=OTHER_MAKE, ca=TestCA.create())
    assert enrol(client, new_key, name="New key").status_code == 200
    assert "Olu Ops" in text(client.get("/staff/"))


def test_only_admins_reset_keys(app, session, staff):
    shipping = make_staff(session, roles=[StaffRole.SHIPPING])
    desk = app.test_client()
    sign_in_as(desk, shipping)
    refused = desk.post(
        f"/staff/people/{staff.id}/keys/reset",
        data={"csrf_token": csrf_token(desk, "/staff/")},
    )
    assert refused.status_code == 403
    assert (
        session.exec(select(AuditEvent).where(AuditEvent.action == "staff.keys_reset")).all() == []
    )
