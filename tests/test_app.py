"""The app as production runs it: behind a TLS reverse proxy, with rate limits shared in Redis."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import request, url_for

from app import create_app
from core.db import get_database, upgrade_database
from tests.conftest import free_port, make_settings
from tests.factories import csrf_token, make_maintainer, sign_in_as

PG_CLUSTER = Path(__file__).resolve().parents[1] / "scripts" / "pg-cluster.sh"

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


def test_rate_limits_fall_back_to_memory_while_redis_is_away(app_factory):
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    client = app_factory(proxy_hops=1, ratelimit_storage_url=nobody).test_client()
    statuses = [
        ask_for_link(client, f"person{n}@example.org", CLIENT).status_code for n in range(31)
    ]
    assert statuses == [302] * 30 + [429]  # still limited, per process


# --- health and outages ----------------------------------------------------------------------


def test_the_health_check_runs_a_query_and_says_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "database": "ok",
        "tasks": {
            "waiting": 0,
            "oldest_waiting_seconds": None,
            "consumer_checked_in_seconds_ago": None,
            "consumers": "in-process",  # tests run each task at its enqueuer's commit
        },
    }


@dataclass
class Outage:
    """A database of the test's own that it can take away and bring back: a PostgreSQL cluster
    it stops and starts, or on SQLite a file whose directory goes away."""

    kind: str
    url: str
    down: Callable[[], object]
    up: Callable[[], object]


@pytest.fixture
def outage(databases, tmp_path) -> Iterator[Outage]:
    if databases.kind == "postgresql":
        # Not under tmp_path: the server runs as the postgres user, who may not enter it.
        directory = tempfile.mkdtemp(prefix="keys-outage-")

        def cluster(command: str) -> str:
            done = subprocess.run(
                [str(PG_CLUSTER), command, directory], capture_output=True, text=True, check=True
            )
            return done.stdout.strip()

        try:
            url = cluster("start")
            upgrade_database(url)
            yield Outage("postgresql", url, lambda: cluster("down"), lambda: cluster("up"))
        finally:
            cluster("stop")
    else:
        here, away = tmp_path / "database", tmp_path / "database-away"
        here.mkdir()
        url = f"sqlite:///{here / 'keys.sqlite3'}"
        upgrade_database(url)
        yield Outage("sqlite", url, lambda: here.rename(away), lambda: away.rename(here))


def test_an_unreachable_database_gets_a_friendly_503_until_it_is_back(
    outage, smtp_server, ratelimit_storage_url, tmp_path
):
    app = create_app(
        make_settings(
            outage.url,
            smtp_server[1],
            ratelimit_storage_url=ratelimit_storage_url,
            instance_path=tmp_path,
        )
    )
    database = get_database(app)
    with database.transaction() as session:
        maintainer = make_maintainer(session)
    client = app.test_client()
    sign_in_as(client, maintainer)
    assert client.get("/account").status_code == 200
    token = csrf_token(client, "/sign-in")

    outage.down()
    if outage.kind == "sqlite":
        # Connections that opened the file before it went would go on reading it: start
        # afresh, as a restarted worker would. PostgreSQL's pool notices by itself (pre-ping).
        database.engine.dispose()
    try:
        page = client.get("/account")
        assert page.status_code == 503
        assert page.headers["Retry-After"] == "30"
        text = page.get_data(as_text=True)
        assert "We will be back in a moment" in text
        assert "cannot reach its database" in text
        assert "Traceback" not in text and "OperationalError" not in text
        assert 'href="/sign-in"' in text  # drawn as for a visitor: nobody could be looked up
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]

        api = client.get("/api/projects/requests")
        assert api.status_code == 503 and api.headers["Retry-After"] == "30"
        assert api.get_json()["message"].startswith("The site cannot reach its database")

        public = client.get("/transparency.json")  # a JSON route answers in JSON
        assert public.status_code == 503 and public.get_json()["status"] == 503
        # A rate-limited form: the outage's Retry-After, not the limit's window (900 s).
        limited = client.post("/sign-in", data={"email": "a@example.org", "csrf_token": token})
        assert limited.status_code == 503 and limited.headers["Retry-After"] == "30"

        health = app.test_client().get("/healthz")  # monitoring sends no cookie
        assert health.status_code == 503 and health.headers["Retry-After"] == "30"
        assert health.get_json() == {"status": "unavailable", "database": "unreachable"}
    finally:
        outage.up()

    health = app.test_client().get("/healthz").get_json()
    assert (health["status"], health["database"]) == ("ok", "ok")
    back = client.get("/account")
    assert back.status_code == 200 and maintainer.username in back.get_data(as_text=True)
    sent = client.post(
        "/sign-in",
        data={"email": "someone@example.org", "csrf_token": csrf_token(client, "/account")},
    )
    assert sent.status_code == 302 and "Retry-After" not in sent.headers  # nothing to retry
    database.engine.dispose()
