"""What the journeys share: setting up a maintainer in the live database, and signing in."""

from __future__ import annotations

import io

from playwright.sync_api import Page, expect

from db import Actor, get_database
from distribution.stock import receive_stock
from eligibility.critical import import_download_statistics
from eligibility.models import ProjectRoleKind
from eligibility.services import ensure_project, grant_project_role
from tests.e2e.conftest import LiveServer
from tests.factories import make_maintainer

# 3,000 projects at 1%: ranks 1 to 30 are critical.
PROJECTS_IN_FILE = 3_000
PERCENT = 1


def statistics_file(prefix: str, placed: dict[str, int]) -> bytes:
    """A project,downloads CSV of PROJECTS_IN_FILE projects with ``placed`` names at their ranks
    and made-up filler projects (named after ``prefix``) everywhere else."""
    at_rank = {rank: name for name, rank in placed.items()}
    lines = ["project,downloads"]
    for rank in range(1, PROJECTS_IN_FILE + 1):
        name = at_rank.get(rank, f"{prefix}-filler-{rank}")
        lines.append(f"{name},{50_000_000 - rank * 10_000}")
    return ("\n".join(lines) + "\n").encode()


def set_up_maintainer(
    live_server: LiveServer,
    *,
    username: str,
    country: str | None,
    project: str,
    rank: int,
    stock: dict[str, int] | None = None,
) -> None:
    """A maintainer who owns ``project``, which a fresh statistics import ranks at ``rank``;
    and keys in stock (by default 10 USB-C), under references of their own, so that stock
    stands in nobody's way."""
    with get_database(live_server.app).transaction() as session:
        maintainer = make_maintainer(
            session,
            username=username,
            email=f"{username}@example.org",
            country=country,
            display_name=username.replace("-", " ").title(),
        )
        grant_project_role(
            session=session,
            actor=Actor.system("test"),
            project=ensure_project(session=session, name=project),
            maintainer=maintainer,
            role=ProjectRoleKind.OWNER,
        )
        import_download_statistics(
            session=session,
            actor=Actor.system("test"),
            stream=io.BytesIO(statistics_file(username, {project: rank})),
            source_name=f"{username}.csv",
            percent=PERCENT,
            sticky=True,
        )
        for sku, quantity in (stock or {"TITAN-USB-C-NFC": 10}).items():
            receive_stock(
                session=session,
                actor=Actor.system("test"),
                sku=sku,
                quantity=quantity,
                reference=f"E2E-{username}-{sku}",
            )


def sign_in_by_link(live_server: LiveServer, page: Page, username: str) -> None:
    page.goto(f"{live_server.url}/sign-in")
    page.get_by_label("Email address").fill(f"{username}@example.org")
    page.get_by_role("button", name="Email me a sign-in link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    page.goto(live_server.mailbox.last_link(f"{username}@example.org"))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {username}.")).to_be_visible()
