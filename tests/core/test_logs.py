"""The logs: one JSON line per request and per state change, and nothing personal in any line,
whatever logs at whatever level during a real journey."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlmodel import select
from werkzeug.serving import make_server

from core.logs import gunicorn_logconfig
from distribution.models import Shipment
from eligibility.services import ensure_project
from tests.accounts.test_second_factor import OTHER_MAKE, enrol, issue_link, password
from tests.conftest import free_port
from tests.distribution.claims.test_views import BERLIN, get_code, redeem
from tests.factories import (
    USB_A,
    USB_C,
    csrf_token,
    import_statistics,
    make_owner,
    make_staff,
    receive_keys,
)
from tests.soft_authenticator import SoftAuthenticator, TestCA

ROOT = Path(__file__).resolve().parents[2]
EMAIL = "ada.lovelace@example.org"
STAFF_EMAIL = "olu.ops@example.org"
REQUEST_FIELDS = {
    "time",
    "event",
    "request_id",
    "method",
    "route",
    "endpoint",
    "status",
    "duration_ms",
    "actor_kind",
    "actor_id",
}


class Requests:
    """What reached the app, counted outside it: each request's method, status and the id it
    answered with in X-Request-ID."""

    def __init__(self, app):
        self.seen: list[tuple[str, int, str]] = []
        inner = app.wsgi_app

        def counting(environ, start_response):
            def start(status, headers, exc_info=None):
                request_id = dict(headers).get("X-Request-ID", "")
                self.seen.append((environ["REQUEST_METHOD"], int(status[:3]), request_id))
                return start_response(status, headers, exc_info)

            return inner(environ, start)

        app.wsgi_app = counting


def lines(caplog, logger):
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == logger]


@pytest.fixture
def journey_data(session):
    ensure_project(session=session, name="famous")
    import_statistics(session, "project,downloads\nfamous,9\nx,1\n")
    receive_keys(session, {USB_A: 3, USB_C: 3}, "V")
    maintainer = make_owner(session, "famous", country="DE", email=EMAIL)
    staff = make_staff(session, email=STAFF_EMAIL, name="Olu Ops")
    return maintainer, staff


def test_a_journey_logs_one_line_per_request_and_nothing_personal(
    app, client, session, mailbox, caplog, journey_data
):
    maintainer, staff = journey_data
    requests = Requests(app)
    # The test's own SMTP server (aiosmtpd) logs each envelope; it is not part of the app.
    # (Set first: each call also sets the level of what caplog keeps.)
    caplog.set_level(logging.WARNING, logger="mail.log")
    caplog.set_level(logging.DEBUG)

    # A maintainer signs in by the emailed link, gets a code and redeems it.
    client.post("/sign-in", data={"email": EMAIL, "csrf_token": csrf_token(client, "/sign-in")})
    link = mailbox.last_link(EMAIL).removeprefix("http://localhost")
    token = link.rsplit("/", 1)[-1]
    assert client.get(link).status_code == 200
    assert client.post(link, data={"csrf_token": csrf_token(client, link)}).status_code == 302
    code = get_code(client)
    assert redeem(client, code).status_code == 302
    shipment = session.exec(select(Shipment)).one()
    assert shipment.phone == "+49301234567"
    client.post("/sign-out", data={"csrf_token": csrf_token(client, "/claim")})

    # A staff member opens their enrolment link, signs in with a password and a first key,
    # and sees recovery codes.
    enrolment_token = issue_link(session, staff)
    assert client.get(f"/staff/enrol/{enrolment_token}").status_code == 200
    assert password(client, email=STAFF_EMAIL).status_code == 302
    key = SoftAuthenticator(aaguid=OTHER_MAKE, ca=TestCA.create())
    assert enrol(client, key).status_code == 200
    codes_page = client.get("/staff/recovery-codes").get_data(as_text=True)
    recovery_codes = re.findall(r"<code>([A-Z0-9]{5}-[A-Z0-9]{5})</code>", codes_page)
    assert len(recovery_codes) == 8
    assert client.get("/staff/", headers={"X-Request-ID": "proxy-4f2a9c1e"}).status_code == 200
    client.get("/staff/", headers={"X-Request-ID": "no spaces\tor tabs please"})

    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    secrets = [
        EMAIL,
        STAFF_EMAIL,
        token,
        enrolment_token,
        code,
        code.replace("-", ""),
        BERLIN["address_street_address"],
        BERLIN["phone"],
        shipment.phone,
        *recovery_codes,
    ]
    leaked = [secret for secret in secrets if secret.lower() in logged.lower()]
    assert leaked == []

    # One request line per request, with the route and not the path.
    request_lines = lines(caplog, "keys.request")
    assert sorted(line["request_id"] for line in request_lines) == sorted(
        request_id for _method, _status, request_id in requests.seen
    )
    assert len(request_lines) == len(requests.seen) >= 20
    by_id = {line["request_id"]: line for line in request_lines}
    for method, status, request_id in requests.seen:
        line = by_id[request_id]
        assert set(line) == REQUEST_FIELDS
        assert (line["method"], line["status"]) == (method, status)
        assert line["duration_ms"] >= 0
    routes = {line["route"] for line in request_lines}
    assert "/sign-in/link/<token>" in routes and "/claim/redeem" in routes
    assert "/staff/enrol/<token>" in routes

    # Who: a kind and an id, once signed in; signing out makes the next request anonymous.
    redeemed = next(
        line
        for line in request_lines
        if (line["method"], line["route"]) == ("POST", "/claim/redeem")
    )
    assert (redeemed["actor_kind"], redeemed["actor_id"]) == ("maintainer", maintainer.id)
    staff_home = [line for line in request_lines if line["route"] == "/staff/"]
    assert [line["actor_id"] for line in staff_home] == [staff.id, staff.id]
    assert all(line["actor_kind"] == "staff" for line in staff_home)
    # A proxy's well-formed request id is kept (and echoed); anything else is replaced.
    assert staff_home[0]["request_id"] == "proxy-4f2a9c1e"
    assert re.fullmatch(r"[0-9a-f]{32}", staff_home[1]["request_id"])

    # State changes: one line per audit event, tied to the request that made it.
    changes = lines(caplog, "keys.state_change")
    redeem_change = next(c for c in changes if c["action"] == "claim.redeemed")
    assert redeem_change == {
        "time": redeem_change["time"],
        "event": "state_change",
        "action": "claim.redeemed",
        "subject_kind": "claim",
        "subject_id": str(shipment.claim_id),
        "actor_kind": "maintainer",
        "actor_id": maintainer.id,
        "request_id": redeemed["request_id"],
    }
    # The rest came from requests, but for the sign-in links a task sent, outside any request.
    from_tasks = {c["action"] for c in changes if c["request_id"] is None}
    assert from_tasks <= {"sign_in.link_sent", "sign_in.link_requested_unknown"}
    assert {c["request_id"] for c in changes} - {None} <= set(by_id)


def test_under_gunicorn_the_log_is_json_lines_without_paths(
    databases, smtp_server, redis_server, tmp_path
):
    """wsgi:app served by gunicorn as the README says, with its access log turned on: every
    line is JSON, and neither gunicorn's lines nor the app's hold the token of a sign-in link."""
    port = free_port()
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # gunicorn keeps a control socket in $HOME: one of its own, as two runs may overlap.
        "HOME": str(tmp_path),
        "KEYS_ENV": "production",
        "KEYS_SECRET_KEY": secrets.token_urlsafe(48),
        "KEYS_BASE_URL": f"http://localhost:{port}",
        "KEYS_DATABASE_URL": databases.create("gunicorn"),
        "KEYS_RATELIMIT_STORAGE_URL": redis_server,
        "KEYS_INSTANCE_PATH": str(tmp_path),
        "KEYS_SMTP_PORT": str(smtp_server[1]),
        "KEYS_PROXY_HOPS": "1",
        "KEYS_TASK_QUEUE_URL": "immediate://",  # no consumer: mail leaves from the worker
    }
    command = [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}"]
    command += ["--access-logfile", "-", "wsgi:app"]
    output = tmp_path / "gunicorn.log"
    token = "kq3Vw9ZrT2mN8pXb5LcF1dHs7GjYe4Ua"
    with output.open("w") as sink:
        server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=sink, stderr=sink)
    try:
        health = wait_for_health(server, port)
        assert (health["status"], health["database"]) == ("ok", "ok")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/sign-in/link/{token}",
            headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "edge-7c1d2e3f"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback
        refused.value.close()
        assert refused.value.code == 404
        assert refused.value.headers["X-Request-ID"] == "edge-7c1d2e3f"
    finally:
        server.terminate()
        server.wait(timeout=30)

    text = output.read_text()
    assert token not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every one: gunicorn's too
    link = next(line for line in lines if line.get("request_id") == "edge-7c1d2e3f")
    assert (link["route"], link["method"], link["status"]) == ("/sign-in/link/<token>", "GET", 404)
    # gunicorn's own access line is there, without the path, for the client behind the proxy.
    access = [line["message"] for line in lines if line.get("logger") == "gunicorn.access"]
    assert len(access) == 2 and access[-1].startswith('203.0.113.9 "GET" 404 ')
    assert any(line.get("message", "").startswith("Booting worker") for line in lines)


def wait_for_health(server, port):
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:  # noqa: S310
                return json.loads(answer.read())
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("gunicorn did not answer /healthz")
            time.sleep(0.2)


def test_an_exception_is_logged_with_its_route_not_its_path(app_factory, caplog):
    def broken(token: str) -> str:
        raise RuntimeError("a bug")

    app = app_factory()
    app.add_url_rule("/test-only/<token>", view_func=broken)

    caplog.set_level(logging.DEBUG)
    token = "Zt5cQ8rW2yLm4NvB7xKd9FgH3jPs6TaE"
    response = app.test_client().get(f"/test-only/{token}?code=7K3Q-M9XA")
    assert response.status_code == 500
    assert "Something went wrong on our side" in response.get_data(as_text=True)
    assert token not in caplog.text and "7K3Q" not in caplog.text
    error = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert error.getMessage().startswith("Exception on /test-only/<token> [GET], request ")
    assert error.exc_info is not None and "a bug" in caplog.text


def test_the_development_server_logs_requests_without_their_paths(app, caplog):
    caplog.set_level(logging.INFO)
    server = make_server("127.0.0.1", free_port(), app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = "Qw3eR5tY7uI9oP1aS3dF5gH7jK9lZ2xC"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(  # noqa: S310 - loopback
                f"http://127.0.0.1:{server.server_port}/sign-in/link/{token}", timeout=10
            )
        refused.value.close()
    finally:
        server.shutdown()
        thread.join(timeout=10)
    access = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any("GET [path hidden] HTTP/1.1" in line and " 404 " in line for line in access)
    assert token not in caplog.text


def test_gunicorns_own_lines_are_json_without_the_path():
    """gunicorn's error log, as ``gunicorn.conf.py`` configures it: a 500 gunicorn answers
    itself is one JSON line, with its traceback, and without the path (it may hold a token)."""
    config = gunicorn_logconfig()
    hide = config["filters"]["hide_paths"]["()"]()
    formatter = config["formatters"]["json"]["()"]()
    try:
        raise RuntimeError("the app failed outside Flask")
    except RuntimeError:
        record = logging.LogRecord(
            "gunicorn.error",
            logging.ERROR,
            __file__,
            1,
            "Error handling request %s",
            ("/sign-in/link/a-secret-token",),
            sys.exc_info(),
        )
    assert hide.filter(record)
    line = formatter.format(record)
    assert "\n" not in line and "a-secret-token" not in line
    document = json.loads(line)
    assert document["logger"] == "gunicorn.error" and document["level"] == "ERROR"
    assert document["message"] == "Error handling request [path hidden]; answered 500"
    assert "RuntimeError: the app failed outside Flask" in document["exception"]
