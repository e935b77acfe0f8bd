"""The app as production runs it: behind a TLS reverse proxy, with rate limits shared in Redis."""

from __future__ import annotations

from flask import request, url_for

from tests.factories import csrf_token

CLIENT = "203.0.113.9"
NEIGHBOUR = "198.51.100.7"


def ask_for_link(client, email, forwarded_for):
    headers = {
        "X-Forwarded-For": forwarded_for,
        "X-Forwarded-Proto": "https",
        # Over https, CSRF protection also wants the form to come from this site, as a
        # browser says it does.
        "Referer": "https://localhost/sign-in",
    }
    token = csrf_token(client, "/sign-in")
    return client.post("/sign-in", data={"email": email, "csrf_token": token}, headers=headers)


def test_behind_one_proxy_links_are_https_and_the_client_is_the_forwarded_address(app_factory):
    client = app_factory(proxy_hops=1).test_client()
    with client:
        response = client.get(
            "/", headers={"X-Forwarded-For": f"10.0.0.1, {CLIENT}", "X-Forwarded-Proto": "https"}
        )
        assert response.status_code == 200
        # Only the last address was written by the trusted proxy; the first came from the client.
        assert request.remote_addr == CLIENT
        assert url_for("accounts.sign_in", _external=True) == "https://localhost/sign-in"


def test_without_a_proxy_forwarded_headers_are_ignored(app_factory):
    client = app_factory().test_client()
    with client:
        client.get("/", headers={"X-Forwarded-For": CLIENT, "X-Forwarded-Proto": "https"})
        assert request.remote_addr == "127.0.0.1"
        assert url_for("accounts.sign_in", _external=True) == "http://localhost/sign-in"


def test_rate_limits_count_each_client_behind_the_proxy(app_factory):
    client = app_factory(proxy_hops=1).test_client()
    statuses = [
        ask_for_link(client, f"person{n}@example.org", CLIENT).status_code for n in range(31)
    ]
    assert statuses == [302] * 30 + [429]  # 30 per hour per address
    # Someone else behind the same proxy still gets through.
    assert ask_for_link(client, "neighbour@example.org", NEIGHBOUR).status_code == 302
