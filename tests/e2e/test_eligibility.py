"""Journeys: a maintainer sees why they are (not) eligible, appeals, and programme staff grant
the appeal; anyone looks up whether a project is critical.

Every journey shares one live database with the others, so each imports its own statistics
file, whose projects are unique to it, and asserts only on what that import decides.
"""

from __future__ import annotations

import io
import re

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts.models import StaffRole
from core.actors import Actor
from core.db import get_database
from eligibility.critical import import_download_statistics
from eligibility.services import ensure_project
from tests.e2e.conftest import LiveServer
from tests.e2e.journeys import (
    PERCENT,
    set_up_maintainer,
    sign_in_as_staff,
    sign_in_by_link,
    statistics_file,
)
from tests.factories import make_staff

pytestmark = pytest.mark.e2e


def project_row(page: Page, project: str):
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=project, exact=True))


def test_a_critical_maintainer_sets_their_country_and_is_eligible(
    live_server: LiveServer, page: Page
):
    set_up_maintainer(
        live_server, username="journey-kenji", country=None, project="kenji-http", rank=12
    )

    sign_in_by_link(live_server, page, "journey-kenji")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Eligibility").click()
    expect(page.get_by_role("heading", name="Your eligibility", level=1)).to_be_visible()

    # Only the country stands in the way.
    expect(page.get_by_role("heading", name="You are not eligible yet")).to_be_visible()
    expect(page.locator("[data-reason]")).to_have_count(1)
    expect(page.locator('[data-reason="country_missing"]')).to_contain_text("Japan")

    page.get_by_label("Country the keys would be shipped to").select_option(label="Japan")
    page.get_by_role("button", name="Save country").click()

    expect(page.get_by_text("Saved: keys would be shipped to Japan.")).to_be_visible()
    expect(page.get_by_role("heading", name="You are eligible for security keys")).to_be_visible()
    expect(page.locator("[data-reason]")).to_have_count(0)
    expect(page.get_by_test_id("country")).to_have_text("Japan (JP)")
    row = project_row(page, "kenji-http")
    expect(row).to_contain_text("Owner")
    expect(row.get_by_role("cell").nth(1)).to_have_text("12")
    expect(row).to_contain_text("critical")
    expect(row).not_to_contain_text("not critical")
    expect(page.locator("main")).to_contain_text(
        "The critical projects are ranks 1 to 30 of 3,000 projects on PyPI."
    )
    # Eligible people have nothing to appeal.
    expect(page.get_by_role("link", name="Disagree? File an appeal")).to_have_count(0)
    live_server.screenshot(page, "eligibility")


def test_a_maintainer_appeals_and_programme_staff_grant_it(
    live_server: LiveServer, page: Page, browser: Browser
):
    set_up_maintainer(
        live_server, username="journey-sam", country="DE", project="sam-widgets", rank=2_345
    )
    with get_database(live_server.app).transaction() as session:
        make_staff(
            session,
            email="journey-programme@example.org",
            name="Pat Programme",
            roles=[StaffRole.PROGRAMME],
        )

    # The maintainer learns why not, and appeals.
    sign_in_by_link(live_server, page, "journey-sam")
    page.get_by_role("link", name="Eligibility", exact=True).click()
    expect(page.get_by_role("heading", name="You are not eligible yet")).to_be_visible()
    expect(page.locator("[data-reason]")).to_have_count(1)
    reason = page.locator('[data-reason="not_critical_maintainer"]')
    expect(reason).to_contain_text("sam-widgets (rank 2,345)")
    expect(reason).to_contain_text("ranks 1 to 30")
    row = project_row(page, "sam-widgets")
    expect(row.get_by_role("cell").nth(1)).to_have_text("2,345")
    expect(row).to_contain_text("not critical")

    page.get_by_role("link", name="Disagree? File an appeal").click()
    expect(page.get_by_role("heading", name="File an appeal")).to_be_visible()
    page.get_by_label("Why should you be eligible?").fill("Too short")
    page.get_by_role("button", name="Send appeal").click()
    expect(page.get_by_text("Write between 20 and 4,000 characters.")).to_be_visible()

    appeal_text = (
        "sam-widgets is vendored by several critical projects,\n"
        "so its real reach is far above its own downloads.\n\n<b>Not markup.</b>"
    )
    page.get_by_label("Why should you be eligible?").fill(appeal_text)
    page.get_by_label("Projects this is about").fill("sam-widgets")
    page.get_by_role("button", name="Send appeal").click()
    expect(page.get_by_text("Your appeal was sent.")).to_be_visible()
    appeal = page.get_by_test_id("appeal")
    expect(appeal).to_contain_text("under review")
    expect(appeal).to_contain_text("<b>Not markup.</b>")
    expect(page.get_by_role("link", name="Disagree? File an appeal")).to_have_count(0)

    # Programme staff, in a browser of their own, review and grant it.
    staff_context = browser.new_context(viewport={"width": 1200, "height": 860}, locale="en-GB")
    try:
        staff = staff_context.new_page()
        staff.set_default_timeout(15_000)
        sign_in_as_staff(live_server, staff, "journey-programme@example.org")

        staff.get_by_role("navigation", name="Main").get_by_role("link", name="Appeals").click()
        expect(staff.get_by_role("heading", name="Appeals", level=1)).to_be_visible()
        staff.get_by_role("link", name="Review the appeal from journey-sam").click()

        expect(staff.get_by_role("heading", name="Appeal from journey-sam")).to_be_visible()
        # What the maintainer typed is shown as typed: line breaks kept, markup not run.
        expect(staff.get_by_test_id("appeal-text")).to_have_text(appeal_text)
        expect(staff.get_by_test_id("appeal-text").locator("b")).to_have_count(0)
        expect(staff.locator('[data-reason="not_critical_maintainer"]')).to_be_visible()
        expect(project_row(staff, "sam-widgets")).to_contain_text("2,345")

        staff.get_by_label("Grant: count them as eligible").check()
        staff.get_by_label("Reason (the maintainer will read it)").fill(
            "Confirmed with the projects that vendor it: treated as critical."
        )
        live_server.screenshot(staff, "appeal-review")
        staff.get_by_role("button", name="Record decision").click()
        expect(staff.get_by_text(re.compile(r"Appeal \d+ granted"))).to_be_visible()
        expect(staff.get_by_role("link", name="Review the appeal from journey-sam")).to_have_count(
            0
        )
    finally:
        staff_context.close()

    # The maintainer now counts as eligible, and sees why.
    page.reload()
    expect(page.get_by_role("heading", name="You are eligible for security keys")).to_be_visible()
    expect(page.get_by_test_id("override")).to_contain_text(
        "Programme staff granted your appeal on"
    )
    expect(page.get_by_test_id("override")).to_contain_text(
        "Confirmed with the projects that vendor it: treated as critical."
    )
    expect(page.get_by_test_id("appeal")).to_contain_text("granted")
    live_server.screenshot(page, "eligibility-override")

    mails = [
        m
        for m in live_server.mailbox.to("journey-sam@example.org")
        if m["Subject"] == "Your security key appeal was granted"
    ]
    assert len(mails) == 1
    body = mails[0].get_content()
    assert "Confirmed with the projects that vendor it: treated as critical." in body
    assert f"{live_server.url}/eligibility" in body


def test_anyone_looks_up_whether_a_project_is_critical(live_server: LiveServer, page: Page):
    with get_database(live_server.app).transaction() as session:
        # Known projects get exact ranks even outside the critical top.
        ensure_project(session=session, name="lookup-tail")
        import_download_statistics(
            session=session,
            actor=Actor.system("test"),
            stream=io.BytesIO(
                statistics_file("journey-lookup", {"lookup-top": 3, "lookup-tail": 1_234})
            ),
            source_name="journey-lookup.csv",
            percent=PERCENT,
            sticky=True,
        )

    page.goto(live_server.url)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Project lookup").click()
    expect(page.get_by_role("heading", name="Is a project critical?")).to_be_visible()

    # Names are compared after normalisation: case and separators do not matter.
    page.get_by_label("Project name").fill("Lookup_Top")
    page.get_by_role("button", name="Look up").click()
    result = page.get_by_test_id("lookup-result")
    expect(result.get_by_role("heading")).to_have_text("lookup-top is critical")
    expect(result).to_contain_text("ranked 3 of 3,000 projects")
    expect(result).to_contain_text("Critical projects are the top 1%: ranks 1 to 30, as of")
    live_server.screenshot(page, "project-lookup")

    page.get_by_label("Project name").fill("lookup-tail")
    page.get_by_role("button", name="Look up").click()
    expect(result.get_by_role("heading")).to_have_text("lookup-tail is not critical")
    expect(result).to_contain_text("ranked 1,234 of 3,000 projects")

    page.get_by_label("Project name").fill("")
    page.get_by_role("button", name="Look up").click()
    expect(page.get_by_text("Enter a project name.")).to_be_visible()
    expect(result).to_have_count(0)
