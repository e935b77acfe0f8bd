"""Input no database can hold is refused at the door, with a reason, before any view reads it:
NUL (PostgreSQL refuses it in text), lone surrogates (no driver can encode them), JSON nested
past the parser's depth, and ids past the largest row id. Each was a 500 before."""

from __future__ import annotations

from sqlmodel import select

from eligibility.models import Appeal
from tests.factories import (
    USB_A,
    csrf_token,
    make_maintainer,
    redeem_parcel,
    sign_in_as,
    stock_famous_project,
)
from web.security import MAX_ROW_ID


def test_a_nul_in_a_form_is_refused_and_nothing_is_saved(client, session):
    sign_in_as(client, make_maintainer(session))
    token = csrf_token(client, "/eligibility/appeal")

    response = client.post(
        "/eligibility/appeal",
        data={"csrf_token": token, "text": "I maintain\x00 a critical project's build tooling."},
    )

    assert response.status_code == 400 and "a NUL byte" in response.get_data(as_text=True)
    assert session.exec(select(Appeal)).all() == []


def test_a_nul_in_a_path_or_query_is_refused(client):
    assert client.get("/api/projects/a%00b").get_json()["message"].startswith("The request holds")
    assert client.get("/projects?name=famous%00").status_code == 400


def test_escaped_surrogates_in_json_are_refused_before_the_lookup(client):
    token = csrf_token(client, "/sign-in")

    response = client.post(
        "/api/sign-in/key/options",
        data=b'{"email": "ada\\ud800@example.org"}',
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )

    assert response.status_code == 400
    assert "half of a surrogate pair" in response.get_json()["message"]


def test_json_nested_past_the_parser_is_refused(client):
    token = csrf_token(client, "/sign-in")

    response = client.post(
        "/api/sign-in/key",
        data=b"[" * 100_000,
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )

    assert response.status_code == 400 and "nested too deeply" in response.get_json()["message"]


def test_an_id_past_the_largest_row_is_not_found(client, session, settings):
    stock_famous_project(session, {USB_A: 2})
    person, _parcel = redeem_parcel(session, settings, items={USB_A: 1})
    sign_in_as(client, person)

    for claim_id in (MAX_ROW_ID + 1, 2**63, 10**30):
        response = client.get(f"/claim/{claim_id}/address")
        assert response.status_code == 404, claim_id
        assert "Not Found" in response.get_data(as_text=True)
