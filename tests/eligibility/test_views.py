"""Eligibility pages through the test client: what maintainers, the public and staff see."""

from __future__ import annotations

import io

import pytest
from sqlmodel import select

from accounts.models import StaffRole
from core.actors import Actor
from distribution.stock import services as stock
from eligibility import critical
from eligibility.models import Appeal
from eligibility.services import ensure_project
from tests.factories import csrf_token, make_owner, make_staff, sign_in_as

ACTOR = Actor.system("test")
STATS = b"project,downloads\nfamous,1000\nknown,500\nquiet,3\n"


def text(response):
    return response.get_data(as_text=True)


@pytest.fixture
def statistics(session):
    # The projects exist before the import, so the import records their ranks.
    for name in ("famous", "known", "quiet"):
        ensure_project(session=session, name=name)
    stock.receive_stock(
        session=session, actor=ACTOR, sku="TITAN-USB-A-NFC", quantity=4, reference="VIEW-TESTS"
    )
    return critical.import_download_statistics(
        session=session,
        actor=ACTOR,
        stream=io.BytesIO(STATS),
        source_name="s.csv",
        percent=34,
        sticky=True,
    )


def test_an_eligible_maintainer_sees_why(client, session, statistics):
    sign_in_as(client, make_owner(session, "famous", country="JP"))
    page = text(client.get("/eligibility"))
    assert "You are eligible for security keys" in page
    assert "famous" in page and "Japan" in page


def test_a_maintainer_of_a_quiet_project_sees_the_reason_and_can_appeal(
    client, session, statistics
):
    sign_in_as(client, make_owner(session, "quiet", country="FR"))
    page = text(client.get("/eligibility"))
    assert 'data-reason="not_critical_maintainer"' in page
    assert "quiet (rank 3)" in page

    token = csrf_token(client, "/eligibility/appeal")
    short = client.post("/eligibility/appeal", data={"text": "please", "csrf_token": token})
    assert short.status_code == 400 and "between 20 and 4,000 characters" in text(short)
    sent = client.post(
        "/eligibility/appeal",
        data={
            "text": "quiet is vendored into pip, so it runs everywhere.",
            "projects": "quiet, pip",
            "csrf_token": token,
        },
    )
    assert sent.status_code == 302
    appeal = session.exec(select(Appeal)).one()
    assert appeal.projects == ["quiet", "pip"] and appeal.status == "open"
    again = client.post(
        "/eligibility/appeal",
        data={"text": "And another appeal, just in case.", "csrf_token": token},
    )
    assert again.status_code == 400 and "under review already" in text(again)


def test_setting_the_country(client, session, statistics):
    maintainer = make_owner(session, "famous", country=None)
    sign_in_as(client, maintainer)
    assert 'data-reason="country_missing"' in text(client.get("/eligibility"))
    token = csrf_token(client, "/eligibility")
    bad = client.post("/eligibility/country", data={"country": "XX", "csrf_token": token})
    assert bad.status_code == 400 and "Not a valid choice" in text(bad)
    assert (
        client.post("/eligibility/country", data={"country": "GB", "csrf_token": token}).status_code
        == 302
    )
    session.refresh(maintainer)
    assert maintainer.country == "GB"
    assert "You are eligible" in text(client.get("/eligibility"))


def test_anyone_can_ask_whether_a_project_is_critical(client, statistics):
    page = client.get("/projects?name=Famous")
    assert page.status_code == 200 and "famous is critical" in text(page)
    api = client.get("/api/projects/QUIET").get_json()
    assert (api["project"], api["critical"], api["rank"]) == ("quiet", False, 3)
    assert (api["ranked_projects"], api["cutoff_rank"], api["cutoff_downloads"]) == (3, 2, 500)
    assert client.get("/api/projects/famous").get_json()["rank"] == 1
    invalid = client.get("/api/projects/not%20a%20name")
    assert invalid.status_code == 400
    assert invalid.get_json()["message"] == "'not a name' is not a valid PyPI project name."
    assert client.get("/projects?name=").status_code == 400
    bad = client.get("/projects?name=bad%20name")
    assert bad.status_code == 400 and "is not a valid PyPI project name" in text(bad)


def test_the_api_says_when_there_are_no_statistics(client):
    response = client.get("/api/projects/requests")
    assert response.status_code == 404
    assert "No download statistics" in response.get_json()["error"]


def test_programme_staff_grant_an_appeal(client, session, statistics, mailbox):
    maintainer = make_owner(session, "quiet", country="DE", email="quiet@example.org")
    sign_in_as(client, maintainer)
    client.post(
        "/eligibility/appeal",
        data={
            "text": "Please look again at my project.",
            "csrf_token": csrf_token(client, "/eligibility/appeal"),
        },
    )
    appeal = session.exec(select(Appeal)).one()

    sign_in_as(client, make_staff(session, roles=[StaffRole.PROGRAMME]))
    assert maintainer.username in text(client.get("/staff/appeals"))
    path = f"/staff/appeals/{appeal.id}"
    token = csrf_token(client, path)
    no_reason = client.post(path, data={"decision": "grant", "csrf_token": token})
    assert no_reason.status_code == 400 and "Give a reason." in text(no_reason)
    granted = client.post(
        path, data={"decision": "grant", "reason": "Vendored in pip.", "csrf_token": token}
    )
    assert granted.status_code == 302
    assert "granted" in mailbox.to("quiet@example.org")[-1]["Subject"]
    # Decided, so the page has no form: a second decision without a reason said nothing.
    late = client.post(path, data={"decision": "deny", "csrf_token": token})
    assert late.status_code == 400 and "This appeal was already granted." in text(late)

    sign_in_as(client, maintainer)
    page = text(client.get("/eligibility"))
    assert "You are eligible" in page and "Vendored in pip." in page


def test_staff_upload_statistics(app_factory, session):
    # A small request limit, so that a file larger than it stays below the size at which the
    # test client spools its body to a temporary file.
    client = app_factory(max_request_bytes=64 * 1024).test_client()
    sign_in_as(client, make_staff(session, roles=[StaffRole.PROGRAMME]))
    token = csrf_token(client, "/staff/critical-lists")
    bad = client.post(
        "/staff/critical-lists",
        data={
            "file": (io.BytesIO(b"project,downloads\na,1\nb,x\n"), "bad.csv"),
            "csrf_token": token,
        },
        content_type="multipart/form-data",
    )
    assert bad.status_code == 422 and "line 3: &#39;x&#39; is not a download count" in text(bad)

    big = b"project,downloads\n" + b"".join(b"p%d,%d\n" % (n, n) for n in range(20_000))
    assert len(big) > 64 * 1024  # more than an ordinary request may carry here
    good = client.post(
        "/staff/critical-lists",
        data={"file": (io.BytesIO(big), "big.csv"), "csrf_token": token},
        content_type="multipart/form-data",
    )
    assert good.status_code == 302
    detail = text(client.get(good.headers["Location"]))
    assert "big.csv" in detail and "20,000" in detail
