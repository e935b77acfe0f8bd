"""Every response carries the security headers: every route with every method, asked by someone
who may use it, and the error pages and static files too. HSTS only when the site is https."""

from __future__ import annotations

import pytest

from accounts.models import StaffRole
from tests.accounts.test_second_factor import issue_link
from tests.factories import (
    STAFF_PASSWORD,
    USB_A,
    USB_C,
    make_maintainer,
    make_staff,
    redeem_parcel,
    sign_in_as,
    stock_famous_project,
)
from tests.test_authorization import (
    AFTER_PASSWORD,
    ANY_STAFF,
    EXPECTED,
    MAINTAINER,
    PUBLIC,
    SAMPLE_ARGUMENTS,
)
from web.security import CONTENT_SECURITY_POLICY

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
HSTS = "Strict-Transport-Security"
BASE_URLS = ["http://localhost", "https://localhost"]


def test_the_policy_allows_no_inline_script_and_no_framing():
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY


def missing_headers(response, https: bool) -> list[str]:
    """The security headers a response lacks or gets wrong."""
    wrong = [
        name for name, value in SECURITY_HEADERS.items() if response.headers.get(name) != value
    ]
    if (HSTS in response.headers) != https:
        wrong.append(HSTS if https else f"{HSTS} (on http)")
    elif https and "max-age=31536000" not in response.headers[HSTS]:
        wrong.append(HSTS)
    return wrong


def visitor_for(expectation: str | set[StaffRole]) -> str:
    """Someone the route is for: the first role of a staff page, not an admin."""
    if isinstance(expectation, set):
        return sorted(role.value for role in expectation)[0]
    return StaffRole.VIEWER.value if expectation == ANY_STAFF else expectation


@pytest.mark.parametrize("base_url", BASE_URLS)
def test_every_route_and_method_answers_with_the_security_headers(app_factory, session, base_url):
    app = app_factory(base_url=base_url)
    https = base_url.startswith("https")
    # Whoever may use the route gets past CSRF to the view; the refusal is checked below.
    app.config["WTF_CSRF_ENABLED"] = False
    settings = app.extensions["keys_settings"]
    stock_famous_project(session, {USB_A: 4, USB_C: 4})
    maintainer, shipment = redeem_parcel(session, settings)
    staff = {role.value: make_staff(session, roles=[role]) for role in StaffRole}
    samples = {
        **SAMPLE_ARGUMENTS,
        "staff_id": make_staff(session, email="colleague@example.org").id,
        "claim_id": shipment.claim_id,
        "reference": shipment.reference,
    }
    client = app.test_client()
    wrong: list[str] = []
    refused: list[str] = []

    for rule in app.url_map.iter_rules():
        visitor = visitor_for(EXPECTED[rule.endpoint])
        built = rule.build({name: samples[name] for name in rule.arguments})
        assert built is not None and rule.methods is not None
        path = built[1]
        for method in sorted(rule.methods):
            client.delete_cookie("keys_session")
            if visitor == MAINTAINER:
                sign_in_as(client, maintainer)
            elif visitor == AFTER_PASSWORD:
                # Past the password, before the key, with the enrolment link: each time a
                # fresh account, so the per-account sign-in limit is not what answers.
                person = make_staff(session)
                client.get(f"/staff/enrol/{issue_link(session, person)}")
                client.post(
                    "/staff/sign-in", data={"email": person.email, "password": STAFF_PASSWORD}
                )
            elif visitor != PUBLIC:
                sign_in_as(client, staff[visitor])
            with client.open(path, method=method) as response:
                problems = missing_headers(response, https)
                status = response.status_code
                location = response.headers.get("Location", "")
            if problems:
                wrong.append(f"{method} {path} ({visitor}, {status}): {', '.join(problems)}")
            # (A 401 from a page is its answer, e.g. to a wrong recovery code; from the API,
            # a refusal.)
            if (
                status == 403
                or (status == 401 and path.startswith("/api/"))
                or (status == 302 and "sign-in" in location)
            ):
                refused.append(f"{method} {path} ({visitor}, {status} {location})")
    assert not wrong, "\n".join(wrong)
    assert not refused, "\n".join(refused)  # each was asked by someone it is for


@pytest.mark.parametrize("base_url", BASE_URLS)
def test_error_pages_answer_with_the_security_headers(app_factory, session, base_url):
    app = app_factory(base_url=base_url)
    https = base_url.startswith("https")
    client = app.test_client()
    answers = {}

    def ask(name, method, path, **kwargs):
        with client.open(path, method=method, **kwargs) as response:
            answers[name] = (response.status_code, missing_headers(response, https))

    ask("not found", "GET", "/no-such-page")
    ask("no such static file", "GET", "/static/no-such-file.css")
    ask("method not allowed", "PUT", "/sign-in")
    ask("form without its CSRF token", "POST", "/sign-in", data={"email": "a@example.org"})
    ask("too large", "POST", "/sign-in", data={"email": "a" * (3 * 1024 * 1024)})
    sign_in_as(client, make_maintainer(session))
    ask("not for maintainers", "GET", "/staff/")
    client.delete_cookie("keys_session")
    app.config["WTF_CSRF_ENABLED"] = False
    ask("script signed out", "POST", "/api/claim/keys/options", json={})
    for _attempt in range(31):  # past the per-address limit of staff sign-in
        ask("too many attempts", "POST", "/staff/sign-in", data={"email": "x@example.org"})

    assert answers == {
        "not found": (404, []),
        "no such static file": (404, []),
        "method not allowed": (405, []),
        "form without its CSRF token": (400, []),
        "too large": (413, []),
        "script signed out": (401, []),
        "not for maintainers": (403, []),
        "too many attempts": (429, []),
    }


@pytest.mark.parametrize("base_url", BASE_URLS)
def test_a_server_error_answers_with_the_security_headers(app_factory, base_url):
    def broken() -> str:
        raise RuntimeError("a bug")

    app = app_factory(base_url=base_url)
    app.add_url_rule("/test-only/broken", view_func=broken)
    with app.test_client().get("/test-only/broken") as response:
        assert response.status_code == 500
        assert missing_headers(response, base_url.startswith("https")) == []
