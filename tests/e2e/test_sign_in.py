"""Journeys: a maintainer signs in by an emailed link; a staff member signs in with a password."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from accounts.models import StaffRole
from core.db import get_database
from tests.e2e.conftest import LiveServer
from tests.e2e.journeys import plug_in_staff_key
from tests.factories import STAFF_PASSWORD, make_maintainer, make_staff

pytestmark = pytest.mark.e2e


def test_a_maintainer_signs_in_with_the_link_from_their_mail(live_server: LiveServer, page: Page):
    with get_database(live_server.app).transaction() as session:
        make_maintainer(
            session,
            username="journey-ada",
            email="journey-ada@example.org",
            display_name="Ada Journey",
        )

    page.goto(live_server.url)
    live_server.screenshot(page, "home")
    page.get_by_role("link", name="Sign in with your PyPI email").click()
    page.get_by_label("Email address").fill("journey-ada@example.org")
    live_server.screenshot(page, "sign-in")
    page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

    page.goto(live_server.mailbox.last_link("journey-ada@example.org"))
    expect(page.get_by_role("heading", name="Sign in as journey-ada")).to_be_visible()
    live_server.screenshot(page, "sign-in-link")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_text("Signed in as journey-ada.")).to_be_visible()
    expect(page.locator("main")).to_contain_text("journey-ada@example.org")
    live_server.screenshot(page, "account")

    # The link worked once: opening it again explains why it no longer does.
    page.goto(live_server.mailbox.last_link("journey-ada@example.org"))
    expect(page.get_by_role("heading", name="This sign-in link was already used")).to_be_visible()


def test_a_maintainer_sees_a_clear_error_for_a_bad_address(live_server: LiveServer, page: Page):
    page.goto(f"{live_server.url}/sign-in")
    page.get_by_label("Email address").fill("not an address")
    # The browser's own check would stop a malformed address; the server must explain too.
    page.locator("main form").evaluate("form => form.noValidate = true")
    page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.get_by_text("Enter an email address like name@example.org.")).to_be_visible()


def test_staff_sign_in_with_a_password(live_server: LiveServer, page: Page):
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session, email="journey-admin@example.org", name="Jo Admin", roles=[StaffRole.ADMIN]
        )

    page.goto(f"{live_server.url}/staff/sign-in")
    page.get_by_label("Email address").fill("journey-admin@example.org")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("do not match an active staff account")).to_be_visible()

    # Right password: a first sign-in registers a security key and shows the recovery codes.
    plug_in_staff_key(page)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Register your security key")).to_be_visible()
    page.get_by_role("button", name="Register a key").click()
    expect(page.locator("#key-status")).to_contain_text("Give the key a name first")
    page.get_by_label("Name of the key").fill("Desk key")
    page.get_by_role("button", name="Register a key").click()
    codes = page.get_by_test_id("recovery-codes").get_by_role("listitem")
    expect(codes).to_have_count(8)
    live_server.screenshot(page, "recovery-codes")
    page.get_by_role("link", name="I have saved them").click()
    expect(page.get_by_role("heading", name="Staff home")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Jo Admin")
    live_server.screenshot(page, "staff-home")

    # The next sign-in asks for the key after the password.
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{live_server.url}/staff/sign-in")
    page.get_by_label("Email address").fill("journey-admin@example.org")
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Present your security key")).to_be_visible()
    page.get_by_role("button", name="Use my security key").click()
    expect(page.get_by_role("heading", name="Staff home")).to_be_visible()

    page.get_by_role("link", name="Audit log").first.click()
    expect(page.locator("main")).to_contain_text("sign_in.staff")
    live_server.screenshot(page, "audit-log")
