"""Journeys: a maintainer signs in by an emailed link; a staff member signs in with a password
and a security key, registered with the enrolment link an admin sent."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts.models import StaffRole
from core.db import get_database
from tests.e2e.conftest import LiveServer
from tests.e2e.journeys import (
    another_browser,
    enrolment_link,
    plug_in_staff_key,
    sign_in_as_staff,
    sign_in_by_link,
)
from tests.factories import STAFF_PASSWORD, make_maintainer, make_staff
from tests.test_scale_out import SIGN_IN_SUBJECT

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

    page.goto(live_server.mailbox.last_link("journey-ada@example.org", SIGN_IN_SUBJECT))
    expect(page.get_by_role("heading", name="Sign in as journey-ada")).to_be_visible()
    live_server.screenshot(page, "sign-in-link")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_text("Signed in as journey-ada.")).to_be_visible()
    expect(page.locator("main")).to_contain_text("journey-ada@example.org")
    live_server.screenshot(page, "account")

    # The link worked once: opening it again explains why it no longer does.
    page.goto(live_server.mailbox.last_link("journey-ada@example.org", SIGN_IN_SUBJECT))
    expect(page.get_by_role("heading", name="This sign-in link was already used")).to_be_visible()


def test_a_maintainer_sees_a_clear_error_for_a_bad_address(live_server: LiveServer, page: Page):
    page.goto(f"{live_server.url}/sign-in")
    page.get_by_label("Email address").fill("not an address")
    # The browser's own check would stop a malformed address; the server must explain too.
    page.locator("main form").evaluate("form => form.noValidate = true")
    page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.get_by_text("Enter an email address like name@example.org.")).to_be_visible()


def test_staff_sign_in_with_a_password_and_a_key_enrolled_by_link(
    live_server: LiveServer, page: Page
):
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session, email="journey-admin@example.org", name="Jo Admin", roles=[StaffRole.ADMIN]
        )

    page.goto(f"{live_server.url}/staff/sign-in")
    page.get_by_label("Email address").fill("journey-admin@example.org")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("do not match an active staff account")).to_be_visible()

    # The right password alone (it may be stolen) cannot register the first key.
    plug_in_staff_key(page)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(
        page.get_by_role("heading", name="Your first key needs an enrolment link")
    ).to_be_visible()
    live_server.screenshot(page, "staff-enrolment-needed")

    # The enrolment link an admin issued, opened in this browser just past the password: on
    # to a first key, and the recovery codes.
    page.goto(enrolment_link(live_server, "journey-admin@example.org"))
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


def test_an_admin_adds_a_colleague_who_enrols_by_the_emailed_link(
    live_server: LiveServer, page: Page, browser: Browser
):
    """The admin adds Kim and hands over the password; Kim registers a key with the emailed
    link. Kim loses the keyring: the admin resets the keys, Kim is signed out, the old link
    explains itself and the new one enrols a new key."""
    with get_database(live_server.app).transaction() as session:
        make_staff(session, email="journey-boss@example.org", name="Bo Boss")
    sign_in_as_staff(live_server, page, "journey-boss@example.org")
    page.get_by_role("link", name="People").first.click()
    page.get_by_role("link", name="Add a staff member").click()
    page.get_by_label("Name").fill("Kim Desk")
    page.get_by_label("Email address").fill("journey-kim@example.org")
    page.get_by_label(re.compile("^shipping")).check()
    page.get_by_role("button", name="Add staff member").click()
    expect(page.get_by_role("heading", name="Password for Kim Desk")).to_be_visible()
    expect(page.locator("main")).to_contain_text("the enrolment link emailed to them")
    password = page.get_by_test_id("new-password").inner_text()

    with another_browser(browser) as kim:
        plug_in_staff_key(kim)
        first_link = live_server.mailbox.last_link("journey-kim@example.org")
        kim.goto(first_link)
        expect(kim.get_by_role("heading", name="Welcome, Kim Desk")).to_be_visible()
        live_server.screenshot(kim, "staff-enrolment-link")
        kim.get_by_label("Password").fill(password)
        kim.get_by_role("button", name="Sign in").click()
        kim.get_by_label("Name of the key").fill("Keyring")
        kim.get_by_role("button", name="Register a key").click()
        expect(kim.get_by_test_id("recovery-codes").get_by_role("listitem")).to_have_count(8)
        kim.get_by_role("link", name="I have saved them").click()
        expect(kim.get_by_role("heading", name="Staff home")).to_be_visible()

        page.get_by_role("link", name="People").first.click()
        page.get_by_role("link", name="Kim Desk").click()
        expect(page.get_by_test_id("staff-keys")).to_contain_text("Keyring, registered")
        page.get_by_role("button", name="Reset keys and send a new enrolment link").click()
        expect(page.get_by_text("An enrolment link is on its way to journey-kim@")).to_be_visible()
        expect(page.get_by_test_id("staff-keys")).to_contain_text("No key yet")

        kim.reload()
        expect(kim.get_by_role("heading", name="Staff sign-in")).to_be_visible()
        kim.goto(first_link)
        expect(
            kim.get_by_role("heading", name="This enrolment link was already used")
        ).to_be_visible()
        live_server.screenshot(kim, "staff-enrolment-used")
        live_server.mailbox.wait_for("journey-kim@example.org", 2)  # the new link
        kim.goto(live_server.mailbox.last_link("journey-kim@example.org"))
        kim.get_by_label("Password").fill(password)
        kim.get_by_role("button", name="Sign in").click()
        kim.get_by_label("Name of the key").fill("New keyring")
        kim.get_by_role("button", name="Register a key").click()
        expect(kim.get_by_test_id("recovery-codes").get_by_role("listitem")).to_have_count(8)


def test_a_maintainer_signs_a_lost_phone_out_from_their_laptop(
    live_server: LiveServer, page: Page, browser: Browser
):
    """Signed in on a laptop and on a phone (390 px wide): from the laptop's My account, the
    phone's session is signed out, and the phone, reloaded, is asked to sign in."""
    with get_database(live_server.app).transaction() as session:
        make_maintainer(session, username="journey-lost", email="journey-lost@example.org")
    phone_context = browser.new_context(
        viewport={"width": 390, "height": 844},
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    )
    try:
        phone = phone_context.new_page()
        sign_in_by_link(live_server, phone, "journey-lost")
        sign_in_by_link(live_server, page, "journey-lost")

        sessions = page.get_by_test_id("sessions")
        expect(sessions.get_by_role("listitem")).to_have_count(2)
        expect(sessions).to_contain_text("Safari on iPhone")
        expect(sessions.get_by_text("this browser")).to_have_count(1)
        live_server.screenshot(page, "sessions")
        phone_line = sessions.get_by_role("listitem").filter(has_text="Safari on iPhone")
        phone_line.get_by_role("button", name="Sign out there").click()

        expect(page.get_by_text("That session is signed out.")).to_be_visible()
        expect(page.get_by_test_id("sessions").get_by_role("listitem")).to_have_count(1)
        phone.goto(f"{live_server.url}/account")
        expect(phone.get_by_role("heading", name="Sign in")).to_be_visible()
        # At phone width, the page still fits: nothing scrolls sideways.
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        phone_context.close()
