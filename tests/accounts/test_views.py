"""The sign-in pages and staff administration, through the test client, as a person uses them."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event
from sqlmodel import select

from accounts.models import SignInLink, Staff, StaffRole
from core import tasks
from core.audit import AuditEvent
from core.db import utcnow
from tests.factories import (
    STAFF_PASSWORD,
    csrf_token,
    make_maintainer,
    make_staff,
    sign_in_as,
)


def ask_for_link(client, email, *, remote="127.0.0.1"):
    token = csrf_token(client, "/sign-in")
    return client.post(
        "/sign-in",
        data={"email": email, "csrf_token": token},
        environ_base={"REMOTE_ADDR": remote},
    )


def link_path(mailbox, address):
    return mailbox.last_link(address).removeprefix("http://localhost")


def text(response):
    return response.get_data(as_text=True)


def test_a_maintainer_signs_in_with_an_emailed_link(client, session, mailbox):
    maintainer = make_maintainer(session, username="ada-demo", email="ada@example.org")

    response = ask_for_link(client, "ada@example.org")
    assert response.status_code == 302
    assert response.headers["Location"] == "/sign-in/sent"
    assert "Check your email" in text(client.get("/sign-in/sent"))

    path = link_path(mailbox, "ada@example.org")
    confirm = client.get(path)
    assert confirm.status_code == 200
    assert "Sign in as ada-demo" in text(confirm)
    # Opening the link did not spend it (mail scanners open links too).
    assert session.exec(select(SignInLink)).one().used_at is None

    signed_in = client.post(path, data={"csrf_token": csrf_token(client, path)})
    assert signed_in.status_code == 302
    account = client.get(signed_in.headers["Location"])
    assert account.status_code == 200
    assert "ada-demo" in text(account) and "ada@example.org" in text(account)
    session.expire_all()
    assert session.get(type(maintainer), maintainer.id).email_verified_at is not None


def test_known_and_unknown_addresses_get_the_same_answer(client, session, mailbox):
    make_maintainer(session, email="known@example.org")
    known = ask_for_link(client, "known@example.org")
    unknown = ask_for_link(client, "unknown@example.org")
    assert (known.status_code, known.headers["Location"]) == (
        unknown.status_code,
        unknown.headers["Location"],
    )
    assert [m["To"] for m in mailbox.messages] == ["known@example.org"]


def test_the_sign_in_form_does_the_same_work_for_known_and_unknown_addresses(
    app_factory, connection, session, mailbox
):
    """No SMTP in the request and the same SQL, statement for statement: neither the answer
    nor its timing tells a registered address from a stranger's. A consumer then mails the
    known address alone."""
    app = app_factory(task_queue_url="memory://")
    make_maintainer(session, email="known@example.org")
    session.commit()
    statements: list[str] = []

    def record(_conn, _cursor, statement, _parameters, _context, _many):
        statements.append(re.sub(r"sa_savepoint_\d+", "sa_savepoint", statement))

    def work_for(email: str) -> list[str]:
        client = app.test_client()
        token = csrf_token(client, "/sign-in")
        statements.clear()
        event.listen(connection, "before_cursor_execute", record)
        try:
            answer = client.post("/sign-in", data={"email": email, "csrf_token": token})
        finally:
            event.remove(connection, "before_cursor_execute", record)
        assert answer.status_code == 302
        return list(statements)

    known, unknown = work_for("known@example.org"), work_for("unknown@example.org")

    assert known == unknown and known  # the same statements, in the same order
    assert mailbox.messages == []  # the requests opened no SMTP connection
    tasks.get_queue(app).drain()  # a consumer answers both
    assert [m["To"] for m in mailbox.messages] == ["known@example.org"]


def test_a_malformed_address_is_explained_next_to_the_field(client):
    response = ask_for_link(client, "not-an-address")
    assert response.status_code == 400
    error = re.search(r'<p class="field-error"[^>]*>(.*?)</p>', text(response), re.DOTALL)
    assert error and "Enter an email address like name@example.org." in error.group(1)


@pytest.mark.parametrize(
    ("arrange", "status", "message"),
    [
        ("unknown", 404, "This sign-in link is not valid"),
        ("expired", 410, "This sign-in link has expired"),
        ("used", 410, "This sign-in link was already used"),
    ],
)
def test_links_that_cannot_sign_in_say_why(client, session, mailbox, arrange, status, message):
    maintainer = make_maintainer(session)
    ask_for_link(client, maintainer.email)
    path = link_path(mailbox, maintainer.email)
    if arrange == "unknown":
        path = path[:-4] + "AAAA"
    elif arrange == "expired":
        link = session.exec(select(SignInLink)).one()
        link.expires_at = utcnow()
        session.flush()
    else:
        client.post(path, data={"csrf_token": csrf_token(client, path)})
        client.post("/sign-out", data={"csrf_token": csrf_token(client, "/account")})

    token = csrf_token(client, "/sign-in")
    for response in (client.get(path), client.post(path, data={"csrf_token": token})):
        assert response.status_code == status
        assert message in text(response)
        assert 'action="/sign-in"' in text(response)  # a way to ask for a new link
    assert client.get("/account").status_code == 302  # still signed out


def test_a_stranger_cannot_lock_a_maintainer_out_of_link_sign_in(client, session, mailbox):
    """Links mailed to one address are counted, requests never refused: a stranger asking in
    Ada's name from elsewhere fills her inbox with at most five links, each of which works."""
    make_maintainer(session, email="ada@example.org")
    stranger = [
        ask_for_link(client, "ada@example.org", remote="198.51.100.7").status_code for _ in range(6)
    ]
    own = ask_for_link(client, "ada@example.org", remote="203.0.113.9")

    assert stranger == [302] * 6 and own.status_code == 302
    assert own.headers["Location"] == "/sign-in/sent"
    assert len(mailbox.to("ada@example.org")) == 5
    path = link_path(mailbox, "ada@example.org")
    signed_in = client.post(path, data={"csrf_token": csrf_token(client, path)})
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/account"
    # Another address is mailed as usual.
    ask_for_link(client, "other@example.org")
    make_maintainer(session, email="bea@example.org")
    ask_for_link(client, "bea@example.org")
    assert len(mailbox.to("bea@example.org")) == 1


def test_sign_in_requests_are_rate_limited_per_ip(client):
    statuses = [ask_for_link(client, f"person{n}@example.org").status_code for n in range(31)]
    assert statuses.count(429) == 1 and statuses[-1] == 429


def test_a_form_without_its_csrf_token_is_refused(client, session, mailbox):
    make_maintainer(session, email="ada@example.org")
    response = client.post("/sign-in", data={"email": "ada@example.org"})
    assert response.status_code == 400
    assert "The form had expired" in text(response)
    assert mailbox.messages == []


def test_an_oversized_form_is_refused(client, settings):
    response = client.post("/sign-in", data={"email": "x" * (settings.max_request_bytes + 1)})
    assert response.status_code == 413
    assert "Request Entity Too Large" in text(response)


def test_staff_sign_in_is_rate_limited_per_account(client, session):
    make_staff(session, email="ops@example.org")
    token = csrf_token(client, "/staff/sign-in")
    statuses = [
        client.post(
            "/staff/sign-in",
            data={"email": "ops@example.org", "password": "guess", "csrf_token": token},
        ).status_code
        for _ in range(11)
    ]
    assert statuses == [401] * 10 + [429]


def staff_password(client, token, email, password, remote):
    """A staff password sent from the client address ``remote``; the answer's status."""
    return client.post(
        "/staff/sign-in",
        data={"email": email, "password": password, "csrf_token": token},
        environ_base={"REMOTE_ADDR": remote},
    ).status_code


def test_a_stranger_cannot_lock_staff_out_by_guessing_their_password(client, session):
    make_staff(session, email="ops@example.org")
    token = csrf_token(client, "/staff/sign-in")

    def attempt(password, remote):
        return staff_password(client, token, "ops@example.org", password, remote)

    # Ten wrong guesses, each from another address; one client guessing on and on.
    assert [attempt("guess", f"198.51.100.{n}") for n in range(10)] == [401] * 10
    assert [attempt("guess", "192.0.2.66") for _ in range(11)] == [401] * 10 + [429]
    # The owner, from their own address, gets in (on to the key step).
    assert attempt(STAFF_PASSWORD, "203.0.113.9") == 302


def test_past_the_account_ceiling_only_clients_that_guessed_wrong_are_stopped(client, session):
    make_staff(session, email="ops@example.org")
    token = csrf_token(client, "/staff/sign-in")

    def attempt(password, remote):
        return staff_password(client, token, "ops@example.org", password, remote)

    statuses = [attempt("guess", f"198.51.100.{n}") for n in range(100)]
    assert statuses == [401] * 100
    assert attempt("guess", "198.51.100.1") == 429  # failed before, and the ceiling is reached
    assert attempt(STAFF_PASSWORD, "198.51.100.2") == 429  # even with the right password
    assert attempt(STAFF_PASSWORD, "203.0.113.9") == 302  # a client that never failed


def test_an_admin_creates_staff_who_can_then_sign_in(client, session):
    admin = make_staff(session)
    sign_in_as(client, admin)
    token = csrf_token(client, "/staff/people/new")

    created = client.post(
        "/staff/people/new",
        data={
            "name": "Sam Shipping",
            "email": "sam@example.org",
            "roles": ["shipping"],
            "active": "y",
            "csrf_token": token,
        },
    )

    assert created.status_code == 200
    password = re.search(r'data-testid="new-password"[^>]*>([^<]+)<', text(created)).group(1)
    staff = session.exec(select(Staff).where(Staff.email == "sam@example.org")).one()
    assert password not in staff.password_hash
    client.post("/sign-out", data={"csrf_token": token})
    signed_in = client.post(
        "/staff/sign-in",
        data={
            "email": "sam@example.org",
            "password": password,
            "csrf_token": csrf_token(client, "/staff/sign-in"),
        },
    )
    assert signed_in.status_code == 302


def test_creating_staff_with_a_taken_address_explains_it(client, session):
    admin = make_staff(session, email="admin@example.org")
    sign_in_as(client, admin)
    response = client.post(
        "/staff/people/new",
        data={
            "name": "Twin",
            "email": "ADMIN@example.org",
            "roles": ["viewer"],
            "csrf_token": csrf_token(client, "/staff/people/new"),
        },
    )
    assert response.status_code == 400
    assert "exists already" in text(response)


def test_an_admin_resets_a_password_and_edits_roles(client, session):
    admin = make_staff(session)
    other = make_staff(session, roles=[StaffRole.VIEWER], name="Vee Viewer")
    sign_in_as(client, admin)
    path = f"/staff/people/{other.id}"
    token = csrf_token(client, path)

    reset = client.post(f"{path}/password", data={"csrf_token": token})
    assert reset.status_code == 200 and 'data-testid="new-password"' in text(reset)

    edited = client.post(
        path,
        data={"name": "Vee Programme", "roles": ["programme"], "active": "y", "csrf_token": token},
    )
    assert edited.status_code == 302
    events = session.exec(select(AuditEvent).where(AuditEvent.subject_id == str(other.id))).all()
    assert {"staff.password_reset", "staff.updated"} <= {e.action for e in events}
    listing = text(client.get("/staff/people"))
    assert "Vee Programme" in listing and "programme" in listing


def test_the_last_admin_cannot_remove_their_own_role(client, session):
    admin = make_staff(session)
    sign_in_as(client, admin)
    path = f"/staff/people/{admin.id}"
    response = client.post(
        path,
        data={
            "name": admin.name,
            "roles": ["viewer"],
            "active": "y",
            "csrf_token": csrf_token(client, path),
        },
    )
    assert response.status_code == 400
    assert "last active administrator" in text(response)


def test_the_audit_log_shows_and_filters_events(client, session, mailbox):
    make_maintainer(session, email="ada@example.org")
    ask_for_link(client, "ada@example.org")
    viewer = make_staff(session, roles=[StaffRole.VIEWER])
    sign_in_as(client, viewer)

    everything = text(client.get("/staff/audit"))
    assert "sign_in.link_sent" in everything and "maintainer.created" in everything
    filtered = text(client.get("/staff/audit?action=sign_in"))
    assert "sign_in.link_sent" in filtered and "maintainer.created" not in filtered
    bad = client.get("/staff/audit?since=yesterday")
    assert bad.status_code == 400 and "Not a valid date value" in text(bad)


def test_the_audit_log_takes_dates_and_pages_at_the_ends_of_the_range(client, session):
    sign_in_as(client, make_staff(session, roles=[StaffRole.VIEWER]))

    # The day after 9999-12-31 is not a date; the number is past any event's id.
    until_the_end = client.get("/staff/audit?since=0001-01-01&until=9999-12-31")
    past_every_id = client.get("/staff/audit?before=99999999999999999999")

    assert until_the_end.status_code == 200 and "staff.created" in text(until_the_end)
    assert past_every_id.status_code == 400
    assert "There is no such page of the log" in text(past_every_id)


def test_the_development_outbox_is_closed_in_production(client):
    assert client.get("/dev/outbox").status_code == 404


def test_error_pages_share_the_site_look(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "Security Key Giveaway" in text(response) and "Not Found" in text(response)
    assert client.put("/sign-in").status_code == 405


def test_security_headers_forbid_inline_scripts_and_framing(client):
    response = client.get("/sign-in")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    cookie = response.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
