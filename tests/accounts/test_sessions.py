"""Sessions kept on the server: sign-out ends them for every copy of the cookie, the id and
the CSRF secret change at sign-in, and a session ends when unused or at its limit."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from accounts.models import StaffRole, WebSession
from accounts.sessions import describe_browser, session_key
from core.audit import AuditEvent
from core.db import utcnow
from tests.accounts.test_views import ask_for_link, link_path
from tests.factories import csrf_token, make_maintainer, make_staff, sign_in_as

COOKIE = "keys_session"


def cookie_of(client) -> str:
    found = client.get_cookie(COOKIE)
    return found.value if found else ""


def sign_in_by_link(client, session, mailbox, email="ada@example.org"):
    make_maintainer(session, username="ada-demo", email=email)
    ask_for_link(client, email)
    path = link_path(mailbox, email)
    return client.post(path, data={"csrf_token": csrf_token(client, path)})


def test_a_cookie_copied_before_sign_out_opens_nothing_after_it(app, client, session, mailbox):
    sign_in_by_link(client, session, mailbox)
    copied = cookie_of(client)
    assert client.get("/account/data/download").status_code == 200

    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/account")})

    thief = app.test_client()
    thief.set_cookie(COOKIE, copied)
    refused = thief.get("/account/data/download")
    assert refused.status_code == 302 and refused.location.endswith("/sign-in")
    assert session.exec(select(WebSession).where(WebSession.id == session_key(copied))).all() == []


def test_signing_in_changes_the_id_and_the_csrf_secret(client, session, mailbox):
    make_maintainer(session, username="ada-demo", email="ada@example.org")
    ask_for_link(client, "ada@example.org")
    path = link_path(mailbox, "ada@example.org")
    before_token = csrf_token(client, path)
    before = cookie_of(client)

    client.post(path, data={"csrf_token": before_token})

    assert cookie_of(client) not in ("", before)
    assert csrf_token(client, "/account") != before_token
    # The visitor's session is gone with its id; the database keeps only the hash of the new.
    ids = set(session.exec(select(WebSession.id)).all())
    assert session_key(before) not in ids and session_key(cookie_of(client)) in ids
    assert cookie_of(client) not in ids


@pytest.mark.parametrize("forged", ["x", "A" * 43, "A" * 500, "bad cookie; with=stuff"])
def test_a_forged_or_unknown_id_is_a_signed_out_visitor(client, forged):
    client.set_cookie(COOKIE, forged)
    assert client.get("/").status_code == 200
    page = client.get("/account")
    assert page.status_code == 302 and page.location.endswith("/sign-in")


def test_a_session_id_in_the_url_is_ignored(client, session, mailbox):
    sign_in_by_link(client, session, mailbox)
    stolen = cookie_of(client)
    client.delete_cookie(COOKIE)
    assert client.get(f"/account?{COOKIE}={stolen}").status_code == 302


def test_a_maintainer_session_ends_when_unused_for_the_idle_time(client, session, settings):
    maintainer = make_maintainer(session)
    sign_in_as(client, maintainer)
    assert client.get("/account").status_code == 200
    row = session.exec(select(WebSession).where(WebSession.owner_id == maintainer.id)).one()
    assert row.owner_kind == "maintainer"
    assert row.ends_at - row.created_at == timedelta(days=settings.maintainer_session_days)
    idle = timedelta(days=settings.maintainer_session_idle_days)
    assert abs(row.expires_at - (row.last_seen_at + idle)) < timedelta(seconds=1)

    session.execute(
        sa.update(WebSession)
        .where(col(WebSession.id) == row.id)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    session.commit()

    assert client.get("/account").status_code == 302


def test_a_staff_session_lasts_hours_not_days(client, session, settings):
    staff = make_staff(session)
    sign_in_as(client, staff)
    client.get("/staff/")
    row = session.exec(select(WebSession).where(WebSession.owner_kind == "staff")).one()
    assert row.ends_at - row.created_at == timedelta(hours=settings.staff_session_hours)
    assert row.expires_at - row.last_seen_at <= timedelta(minutes=120)


def test_a_visitor_who_keeps_nothing_gets_no_session(client, session):
    client.get("/")
    assert cookie_of(client) == ""
    assert session.exec(select(WebSession)).all() == []


def test_browsers_are_described_coarsely():
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    iphone = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
    )
    assert describe_browser(firefox) == "Firefox on Linux"
    assert describe_browser(iphone) == "Safari on iPhone"
    assert describe_browser("curl/8.5") == "A browser"


def test_a_form_sent_after_signing_out_elsewhere_says_so(client, session, mailbox):
    """The CSRF secret changed at sign-out, so an old tab's form fails its CSRF check first;
    the person is told they were signed out, as the page would have told them."""
    sign_in_by_link(client, session, mailbox)
    stale = csrf_token(client, "/claim")
    client.post("/sign-out", data={"csrf_token": stale})

    page = client.post("/claim/code", data={"csrf_token": stale})
    script = client.post("/api/claim/keys/options", json={}, headers={"X-CSRFToken": stale})

    assert page.status_code == 302 and page.location.endswith("/sign-in")
    assert script.status_code == 401
    assert script.get_json()["message"].startswith("You are no longer signed in")


def test_the_daily_purge_forgets_ended_sessions(app, client, session):
    maintainer = make_maintainer(session)
    sign_in_as(client, maintainer)
    client.get("/account")
    session.execute(sa.update(WebSession).values(expires_at=utcnow() - timedelta(minutes=1)))
    session.commit()

    result = app.test_cli_runner().invoke(args=["claims", "purge-personal-data", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["sessions_forgotten"] == 1
    assert session.exec(select(WebSession)).all() == []


def test_a_maintainer_sees_where_they_are_signed_in_and_ends_a_session(app, session):
    ada = make_maintainer(session)
    laptop, phone = app.test_client(), app.test_client()
    for browser, agent in ((laptop, "Firefox/128.0 (X11; Linux)"), (phone, "iPhone Safari/604")):
        sign_in_as(browser, ada)
        browser.get("/account", headers={"User-Agent": agent})

    page = laptop.get("/account").get_data(as_text=True)
    assert "Where you are signed in" in page
    assert "Firefox on Linux" in page and "Safari on iPhone" in page
    assert page.count("this browser") == 1
    phone_row = session.exec(
        select(WebSession).where(WebSession.id == session_key(cookie_of(phone)))
    ).one()

    ended = laptop.post(
        "/account/sessions/end",
        data={"which": phone_row.id, "csrf_token": csrf_token(laptop, "/account")},
    )

    assert ended.status_code == 302
    assert "That session is signed out" in laptop.get("/account").get_data(as_text=True)
    assert phone.get("/account").status_code == 302  # the phone is signed out
    assert laptop.get("/account").status_code == 200
    events = session.exec(select(AuditEvent).where(AuditEvent.action == "session.ended")).all()
    assert [(e.subject_id, e.details["which"]) for e in events] == [(str(ada.id), "one")]


def test_sign_out_everywhere_else_keeps_this_browser(app, session):
    ada, bea = make_maintainer(session), make_maintainer(session)
    mine, elsewhere, hers = app.test_client(), app.test_client(), app.test_client()
    for browser, person in ((mine, ada), (elsewhere, ada), (hers, bea)):
        sign_in_as(browser, person)
        browser.get("/account")
    hers_id = session_key(cookie_of(hers))

    # Another person's session id is not one of Ada's: nothing of Bea's ends.
    token = csrf_token(mine, "/account")
    mine.post("/account/sessions/end", data={"which": hers_id, "csrf_token": token})
    mine.post("/account/sessions/end", data={"which": "others", "csrf_token": token})

    assert mine.get("/account").status_code == 200
    assert elsewhere.get("/account").status_code == 302
    assert hers.get("/account").status_code == 200


def test_an_admin_signs_a_colleague_out_everywhere(app, session):
    admin = make_staff(session, email="admin@example.org")
    colleague = make_staff(session, roles=[StaffRole.SHIPPING], email="ops@example.org")
    desk, theirs = app.test_client(), app.test_client()
    sign_in_as(desk, admin)
    sign_in_as(theirs, colleague)
    assert theirs.get("/staff/").status_code == 200

    token = csrf_token(desk, f"/staff/people/{colleague.id}")
    done = desk.post(f"/staff/people/{colleague.id}/sessions/end", data={"csrf_token": token})

    assert done.status_code == 302
    assert theirs.get("/staff/").status_code == 302
    assert "Where you are signed in" in desk.get("/staff/sessions").get_data(as_text=True)


def test_static_files_and_the_health_check_read_no_session(app, client, session, connection):
    sign_in_as(client, make_maintainer(session))
    assert client.get("/account").status_code == 200  # a session, and its cookie
    statements: list[str] = []
    sa.event.listen(connection, "before_cursor_execute", lambda *a: statements.append(a[2]))

    with client.get("/static/css/app.css") as stylesheet:
        assert stylesheet.status_code == 200
    assert statements == []
    assert client.get("/healthz").status_code == 200
    assert not any("web_session" in statement for statement in statements)
