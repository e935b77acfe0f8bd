"""Sign-in links, staff credentials and account rules, checked against what the database holds."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from accounts import services
from accounts.errors import (
    InvalidCredentials,
    LastAdmin,
    MaintainerExists,
    SignInLinkExpired,
    SignInLinkInvalid,
    SignInLinkUsed,
    StaffEmailTaken,
    WeakPassword,
)
from accounts.models import Maintainer, SignInLink, StaffRole
from app import create_app
from core.actors import Actor
from core.audit import AuditEvent
from core.db import get_database, utcnow
from tests.factories import STAFF_PASSWORD, make_maintainer, make_staff

FIFTEEN_MINUTES = timedelta(minutes=15)


@pytest.fixture
def send_link(session, mailer):
    def send(email):
        services.request_sign_in_link(session=session, email=email)
        session.commit()  # a consumer answers once the transaction commits (here: at once)

    return send


def token_from(mailbox, address):
    return mailbox.last_link(address).rsplit("/", 1)[1]


def actions(session):
    return [e.action for e in session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()]


def test_a_link_is_mailed_and_only_its_hash_is_stored(session, send_link, mailbox):
    maintainer = make_maintainer(session, email="Ada@Example.org")

    send_link("  ADA@example.ORG ")

    token = token_from(mailbox, "ada@example.org")
    link = session.exec(select(SignInLink)).one()
    assert link.maintainer_id == maintainer.id
    assert link.token_hash == services.hash_token(token)
    assert token not in link.token_hash
    assert link.expires_at - link.created_at == FIFTEEN_MINUTES
    assert "sign_in.link_sent" in actions(session)


def test_an_unknown_address_gets_no_mail_and_no_link(session, send_link, mailbox):
    send_link("nobody@example.org")
    assert mailbox.messages == []
    assert session.exec(select(SignInLink)).all() == []
    assert actions(session)[-1] == "sign_in.link_requested_unknown"


def test_a_link_signs_in_once(session, send_link, mailbox):
    maintainer = make_maintainer(session)
    send_link(maintainer.email)
    token = token_from(mailbox, maintainer.email)

    assert services.check_sign_in_link(session=session, token=token) == maintainer
    assert services.use_sign_in_link(session=session, token=token) == maintainer
    assert maintainer.email_verified_at is not None
    with pytest.raises(SignInLinkUsed):
        services.use_sign_in_link(session=session, token=token)
    with pytest.raises(SignInLinkUsed):
        services.check_sign_in_link(session=session, token=token)


def test_an_expired_link_says_so(session, send_link, mailbox):
    maintainer = make_maintainer(session)
    send_link(maintainer.email)
    link = session.exec(select(SignInLink)).one()
    link.expires_at = utcnow() - timedelta(seconds=1)
    session.flush()

    with pytest.raises(SignInLinkExpired, match="expired"):
        services.use_sign_in_link(session=session, token=token_from(mailbox, maintainer.email))
    assert session.get(SignInLink, link.id).used_at is None


@pytest.mark.parametrize("token", ["", "short", "x" * 43, "y" * 5000])
def test_unknown_or_malformed_links_are_invalid(session, token):
    with pytest.raises(SignInLinkInvalid):
        services.use_sign_in_link(session=session, token=token)


def test_usernames_and_emails_are_unique_whatever_their_case(session):
    make_maintainer(session, username="Ada-Demo", email="ada@example.org")
    with pytest.raises(MaintainerExists):
        make_maintainer(session, username="ada-demo")
    with pytest.raises(MaintainerExists):
        make_maintainer(session, email="ADA@example.org")
    # The database enforces it too, not only the service's check.
    with pytest.raises(sa.exc.IntegrityError), session.begin_nested():
        session.add(Maintainer(username="ADA-DEMO", email="other@example.org", created_at=utcnow()))
        session.flush()


def test_staff_sign_in_checks_the_password_against_a_strong_hash(session):
    staff = make_staff(session, email="ops@example.org")
    assert staff.password_hash.startswith("scrypt:")
    assert (
        services.authenticate_staff(
            session=session, email="OPS@example.org", password=STAFF_PASSWORD
        )
        == staff
    )
    # Only the password step: the sign-in is recorded when the second factor completes it.
    assert actions(session)[-1] == "sign_in.staff_password"


@pytest.mark.parametrize(
    ("email", "password"),
    [("ops@example.org", "wrong password"), ("nobody@example.org", STAFF_PASSWORD)],
)
def test_staff_sign_in_fails_the_same_way_for_any_mismatch(session, email, password):
    make_staff(session, email="ops@example.org")
    with pytest.raises(InvalidCredentials) as failure:
        services.authenticate_staff(session=session, email=email, password=password)
    assert failure.value.message == (
        "That email and password do not match an active staff account."
    )
    assert actions(session)[-1] == "sign_in.staff_failed"


def test_deactivated_staff_cannot_sign_in_and_lose_their_sessions(session):
    make_staff(session)  # another admin, so this one may be deactivated
    staff = make_staff(session, email="gone@example.org")
    old_id = staff.get_id()
    services.update_staff(
        session=session,
        actor=Actor.system("test"),
        staff_id=staff.id,
        name=staff.name,
        roles=[StaffRole.ADMIN],
        active=False,
    )
    with pytest.raises(InvalidCredentials):
        services.authenticate_staff(
            session=session, email="gone@example.org", password=STAFF_PASSWORD
        )
    assert services.load_user(session=session, user_id=old_id) is None


def test_a_password_reset_ends_other_sessions(session):
    staff = make_staff(session)
    old_id = staff.get_id()
    services.reset_staff_password(
        session=session,
        actor=Actor.system("test"),
        staff_id=staff.id,
        password="a brand new password",
    )
    assert services.load_user(session=session, user_id=old_id) is None
    assert services.load_user(session=session, user_id=staff.get_id()) == staff
    assert services.authenticate_staff(
        session=session, email=staff.email, password="a brand new password"
    )


def test_staff_rules(session):
    admin = make_staff(session, email="only-admin@example.org")
    with pytest.raises(StaffEmailTaken):
        make_staff(session, email="ONLY-ADMIN@example.org")
    with pytest.raises(WeakPassword):
        make_staff(session, password="short")
    with pytest.raises(LastAdmin):
        services.update_staff(
            session=session,
            actor=Actor.system("test"),
            staff_id=admin.id,
            name=admin.name,
            roles=[StaffRole.VIEWER],
            active=True,
        )
    assert services.roles_of(session=session, staff=admin) == {StaffRole.ADMIN}


def test_load_user_never_confuses_kinds(session):
    maintainer = make_maintainer(session)
    staff = make_staff(session)
    assert services.load_user(session=session, user_id=maintainer.get_id()) == maintainer
    assert services.load_user(session=session, user_id=f"maintainer:{staff.id}") != staff
    assert services.load_user(session=session, user_id=f"staff:{staff.id}") is None
    assert services.load_user(session=session, user_id="staff:x:y") is None
    assert services.load_user(session=session, user_id="garbage") is None


def test_racing_uses_of_one_link_sign_in_exactly_once(databases, settings, mailbox):
    """Eight threads spend the same link at once against a real database file or server."""
    app = create_app(settings.replace(database_url=databases.create("link_race")))
    engine = get_database(app).engine
    with get_database(app).transaction() as session:
        address = make_maintainer(session).email
        services.request_sign_in_link(session=session, email=address)
    token = token_from(mailbox, address)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt() -> None:
        with Session(engine) as session:
            barrier.wait()
            try:
                services.use_sign_in_link(session=session, token=token)
                session.commit()
                outcomes.append("signed in")
            except SignInLinkUsed:
                session.rollback()
                outcomes.append("used")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()

    assert sorted(outcomes) == ["signed in"] + ["used"] * 7
