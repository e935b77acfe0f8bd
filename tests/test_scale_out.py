"""Scale-out: two gunicorn servers sharing one PostgreSQL and one Redis behave as one site.

Two real ``gunicorn wsgi:app`` processes (two sync workers each, production settings, one
secret) listen on two loopback ports behind one public origin. The test plays the load balancer
and the visitors: it sends each request to the server it chooses, follows mailed links by their
path, and gives every visitor a loopback source address of its own (127.77.x.y), as real
visitors have, so that per-IP limits count each one alone. Maintainers sign in by emailed link
and race for codes and for the last keys of a model, every step crossing from one server to
the other; the database must promise no key twice. A sign-in rate limit must trip at its count
across both servers, not at twice it; a session signed out or ended on one server is ended on
both. A WebAuthn challenge begun on one server must complete on
the other, and only once.

PostgreSQL only: an SQLite file cannot be shared by two machines, so there is nothing to scale.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from accounts import enrolment
from accounts.models import KeyOutcome, SecurityKey, StaffRole
from core.actors import Actor
from core.audit import AuditEvent
from core.db import create_db_engine
from core.tasks import LIVE_STATUSES, Task, TaskConsumer
from distribution.models import Claim, ClaimStatus, Shipment, StockBalance, WaitlistEntry
from distribution.reports import services as reports
from distribution.stock import services as stock
from eligibility.services import ensure_project
from tests.conftest import DatabaseFactory, Mailbox, free_port
from tests.factories import (
    STAFF_PASSWORD,
    USB_A,
    USB_C,
    import_statistics,
    make_maintainer,
    make_owner,
    make_staff,
    receive_keys,
)
from tests.soft_authenticator import SoftAuthenticator

pytestmark = pytest.mark.skipif(
    not os.environ.get("KEYS_TEST_DATABASE_URL"),
    reason="scale-out needs a PostgreSQL server that both gunicorns share: set "
    "KEYS_TEST_DATABASE_URL (make test does, for its PostgreSQL run)",
)

ROOT = Path(__file__).resolve().parent.parent
# The origin the load balancer would serve, in links and WebAuthn; nothing listens there.
PUBLIC_ORIGIN = "http://localhost:8080"
WORKERS = 2
TIMEOUT = 30.0
MAINTAINERS = 12
STOCK = {USB_A: 4, USB_C: 6}  # 10 keys: 5 codes of 2; the USB-A keys for 2 parcels only
BERLIN = {
    "recipient_name": "Racer Demo",
    "phone": "030 1234567",
    "address_street_address": "Unter den Linden 1",
    "address_postal_code": "10117",
    "address_city": "Berlin",
}

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
_CODE = re.compile(r'data-testid="claim-code"[^>]*>\s*([0-9A-Z-]+)')
_IDEMPOTENCY = re.compile(r'name="idempotency_key"[^>]*value="([^"]+)"')
# The page's own heading, read after the race; the message shown on joining counts only the
# places committed at that moment, so two people who join together may both read "number 2".
_WAITING = re.compile(r'id="waiting-heading">You are number (\d+) on the waiting list')
_addresses = (f"127.77.{n // 250}.{1 + n % 250}" for n in itertools.count())
T = TypeVar("T")


# --- the servers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def problems(self) -> list[str]:
        """What a log monitor would flag: a line that is not JSON (gunicorn's own lines are
        JSON too), and a line at level ERROR or for a 5xx answer."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            record = _json_or_nothing(line)
            status = record.get("status")
            if (
                not record
                or record.get("level") in ("ERROR", "CRITICAL")
                or (isinstance(status, int) and status >= 500)
            ):
                found.append(line)
        return found


def _json_or_nothing(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


@dataclass(frozen=True)
class Cluster:
    database_url: str
    servers: tuple[Server, Server]
    mailbox: Mailbox
    environment: Mapping[str, str]  # the servers' settings
    directory: Path  # their instance folder and logs

    def check_logs(self) -> None:
        for server in self.servers:
            assert not server.problems(), f"server {server.name} logged:\n" + "\n".join(
                server.problems()
            )


def server_environment(
    database_url: str, *, secret: str, smtp_port: int, redis_url: str, instance: Path
) -> dict[str, str]:
    """Production settings, the same on both servers: one secret (so either reads the other's
    sessions), one database, one rate-limit storage; mail to the test's SMTP server."""
    now = datetime.now(UTC)
    keys = {
        "KEYS_ENV": "production",
        "KEYS_SECRET_KEY": secret,
        "KEYS_DATABASE_URL": database_url,
        "KEYS_BASE_URL": PUBLIC_ORIGIN,
        "KEYS_RATELIMIT_STORAGE_URL": redis_url,
        # Background work on the same Redis, run by a consumer beside the servers.
        "KEYS_TASK_QUEUE_URL": redis_url,
        "KEYS_TASK_CHECK_IN_SECONDS": "1",
        "KEYS_MAIL_BACKEND": "smtp",
        "KEYS_SMTP_HOST": "127.0.0.1",
        "KEYS_SMTP_PORT": str(smtp_port),
        "KEYS_INSTANCE_PATH": str(instance),
        "KEYS_PROGRAMME_OPENS": (now - timedelta(days=30)).isoformat(),
        "KEYS_PROGRAMME_CLOSES": (now + timedelta(days=365)).isoformat(),
    }
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("KEYS_")}
    return inherited | keys


def start_server(name: str, environment: Mapping[str, str], log: Path) -> Server:
    """``gunicorn wsgi:app`` on a free loopback port. ``--preload`` imports the app once and
    forks the workers, instead of each worker importing it (seconds each on two shared cores);
    requests are served the same way. No control socket: two masters would share its path."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--preload", "--no-control-socket"]
    command += ["-w", str(WORKERS), "-b", f"127.0.0.1:{port}", "wsgi:app"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=dict(environment), stdout=output, stderr=subprocess.STDOUT
        )
    return Server(name, port, process, log)


def start_consumer(name: str, environment: Mapping[str, str], log: Path) -> Server:
    """``flask --app app tasks worker``, as the README's systemd unit runs it (no port)."""
    command = [sys.executable, "-m", "flask", "--app", "app", "tasks", "worker"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=dict(environment), stdout=output, stderr=subprocess.STDOUT
        )
    return Server(name, 0, process, log)


def wait_for_check_in(consumer: Server, database_url: str) -> None:
    """Until the consumer has checked in (in the database the servers read)."""
    engine = create_db_engine(database_url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if consumer.process.poll() is not None:
                pytest.fail(f"the consumer exited:\n{consumer.log.read_text(errors='replace')}")
            with Session(engine) as session:
                if session.exec(select(TaskConsumer.id)).first() is not None:
                    return
            time.sleep(0.1)
        pytest.fail("the consumer did not check in")
    finally:
        engine.dispose()


def tasks_done(engine: sa.Engine) -> None:
    """Until no task waits or runs: the consumer has done what the requests enqueued."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with Session(engine) as session:
            busy = session.exec(select(Task.id).where(col(Task.status).in_(LIVE_STATUSES))).first()
        if busy is None:
            return
        time.sleep(0.05)
    pytest.fail("the consumer left tasks waiting")


def wait_until_healthy(server: Server, deadline: float) -> None:
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"server {server.name} exited:\n{server.log.read_text(errors='replace')}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            try:
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    return
            finally:
                connection.close()
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"server {server.name} not healthy:\n{server.log.read_text()}")
        time.sleep(0.2)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def cluster(
    databases: DatabaseFactory,
    smtp_server: tuple[Mailbox, int],
    redis_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Two servers on a fresh migrated database, both healthy; stopped afterwards."""
    database_url = databases.create("scale_out")
    mailbox, smtp_port = smtp_server
    directory = tmp_path_factory.mktemp("scale-out")
    environment = server_environment(
        database_url,
        secret=secrets.token_urlsafe(48),
        smtp_port=smtp_port,
        redis_url=redis_server,
        instance=directory,
    )
    servers: list[Server] = []
    consumer = start_consumer("Q", environment, directory / "consumer.log")
    try:
        wait_for_check_in(consumer, database_url)  # or the servers' first /healthz says 503
        for name in ("A", "B"):
            servers.append(start_server(name, environment, directory / f"gunicorn-{name}.log"))
        deadline = time.monotonic() + 60
        for server in servers:
            wait_until_healthy(server, deadline)
        yield Cluster(database_url, (servers[0], servers[1]), mailbox, environment, directory)
    finally:
        for server in [*servers, consumer]:
            stop_server(server)


@pytest.fixture(scope="module")
def shared_engine(cluster: Cluster) -> Iterator[sa.Engine]:
    """The servers' database, for arranging data (committed) and reading what they did."""
    engine = create_db_engine(cluster.database_url)
    yield engine
    engine.dispose()


# --- the visitors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    location: str
    body: str
    headers: http.client.HTTPMessage

    def json(self) -> Any:
        return json.loads(self.body)

    def form_value(self, pattern: re.Pattern[str]) -> str:
        found = pattern.search(self.body)
        assert found, f"{pattern.pattern} not on the page (HTTP {self.status})"
        return found.group(1)


class Visitor:
    """One browser: its cookies (either server reads the session they name from the database)
    and its own loopback source address. A connection per request, as sync workers close
    each one anyway."""

    def __init__(self) -> None:
        self.address = next(_addresses)
        self.cookies: dict[str, str] = {}

    def get(self, server: Server, path: str) -> Answer:
        return self._request(server, "GET", path, None, {})

    def post_form(self, server: Server, path: str, form: Mapping[str, str]) -> Answer:
        body = urllib.parse.urlencode(form)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return self._request(server, "POST", path, body, headers)

    def post_json(self, server: Server, path: str, data: object, csrf: str) -> Answer:
        headers = {"Content-Type": "application/json", "X-CSRFToken": csrf}
        return self._request(server, "POST", path, json.dumps(data), headers)

    def _request(
        self, server: Server, method: str, path: str, body: str | None, headers: dict[str, str]
    ) -> Answer:
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection = http.client.HTTPConnection(
            "127.0.0.1", server.port, timeout=TIMEOUT, source_address=(self.address, 0)
        )
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:  # deleted
                    self.cookies.pop(name, None)
        return Answer(response.status, response.headers.get("Location", ""), text, response.headers)


SIGN_IN_SUBJECT = "Your sign-in link for the Security Key Giveaway"


def sign_in_by_link(
    visitor: Visitor, email: str, mailbox: Mailbox, *, ask: Server, open_on: Server
) -> None:
    """Ask ``ask`` for a link; open it and press the button on ``open_on``."""
    mailed_before = len(mailbox.to(email, SIGN_IN_SUBJECT))
    form = visitor.get(ask, "/sign-in")
    sent = visitor.post_form(
        ask, "/sign-in", {"email": email, "csrf_token": form.form_value(_CSRF)}
    )
    assert (sent.status, sent.location) == (302, "/sign-in/sent"), sent.body
    mailbox.wait_for(email, mailed_before + 1, subject=SIGN_IN_SUBJECT)  # from the consumer
    link = urllib.parse.urlsplit(mailbox.last_link(email, SIGN_IN_SUBJECT))
    assert f"{link.scheme}://{link.netloc}" == PUBLIC_ORIGIN
    button = visitor.get(open_on, link.path)
    assert button.status == 200, button.body
    done = visitor.post_form(open_on, link.path, {"csrf_token": button.form_value(_CSRF)})
    assert (done.status, done.location) == (302, "/account"), done.body


def all_at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released together by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls), timeout=TIMEOUT)

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls, timeout=TIMEOUT * 3))


def in_parallel(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run the calls in threads as they come; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls, timeout=TIMEOUT * 3))


# --- claims and redemptions ---------------------------------------------------------------------


@dataclass
class Racer:
    email: str
    maintainer_id: int
    home: Server  # where the visitor reads pages
    away: Server  # where the visitor sends forms
    visitor: Visitor


def test_racing_for_codes_and_keys_on_two_servers_promises_no_key_twice(cluster, shared_engine):
    a, b = cluster.servers
    with Session(shared_engine, expire_on_commit=False) as session:
        ensure_project(session=session, name="scaled-project")
        import_statistics(session, "project,downloads\nscaled-project,9\nother,1\n")
        people = [
            make_owner(
                session, "scaled-project", email=f"racer-{n}@scale.example.org", country="DE"
            )
            for n in range(MAINTAINERS)
        ]
        receive_keys(session, STOCK, "SCALE")
        session.commit()
    racers = [
        Racer(p.email, p.id or 0, home, away, Visitor())
        for p, (home, away) in zip(people, itertools.cycle([(a, b), (b, a)]), strict=False)
    ]

    # Everyone signs in at once: the link asked for on one server, opened on the other.
    in_parallel(
        [
            partial(
                sign_in_by_link, r.visitor, r.email, cluster.mailbox, ask=r.home, open_on=r.away
            )
            for r in racers
        ]
    )

    # Everyone asks for a code at the same moment; 10 keys make 5 codes of 2.
    tokens = [r.visitor.get(r.home, "/claim").form_value(_CSRF) for r in racers]
    asked = all_at_once(
        [
            partial(r.visitor.post_form, r.away, "/claim/code", {"csrf_token": t})
            for r, t in zip(racers, tokens, strict=True)
        ]
    )
    assert Counter(answer.status for answer in asked) == {200: 5, 302: 7}
    holders = {
        r.maintainer_id: r for r, answer in zip(racers, asked, strict=True) if answer.status == 200
    }
    codes = {
        r.maintainer_id: answer.form_value(_CODE)
        for r, answer in zip(racers, asked, strict=True)
        if answer.status == 200
    }
    for maintainer_id, code in codes.items():
        assert code in cluster.mailbox.to(holders[maintainer_id].email)[-1].get_content()
    waiting = [r for r in racers if r.maintainer_id not in holders]
    places = [int(r.visitor.get(r.home, "/claim").form_value(_WAITING)) for r in waiting]
    assert sorted(places) == list(range(1, 8))
    assert {a.location for a in asked if a.status == 302} == {"/claim"}

    # The five holders each want both USB-A keys: there are four. Each sends the form to both
    # servers at once, as a double click might, with the form's one idempotency key.
    forms = {}
    for holder in holders.values():
        code = codes[holder.maintainer_id]
        page = holder.visitor.get(holder.home, f"/claim/redeem?country=DE&code={code}")
        forms[holder.maintainer_id] = {
            "csrf_token": page.form_value(_CSRF),
            "idempotency_key": page.form_value(_IDEMPOTENCY),
            "code": code,
            "country": "DE",
            f"quantity_{USB_A}": "2",
            f"quantity_{USB_C}": "0",
            **BERLIN,
        }
    sends = [
        (holder, server) for holder in holders.values() for server in (holder.away, holder.home)
    ]
    redeemed = all_at_once(
        [
            partial(h.visitor.post_form, s, "/claim/redeem?country=DE", forms[h.maintainer_id])
            for h, s in sends
        ]
    )
    outcomes: dict[int, list[Answer]] = {}
    for (holder, _server), answer in zip(sends, redeemed, strict=True):
        outcomes.setdefault(holder.maintainer_id, []).append(answer)
    assert {answer.status for answer in redeemed} <= {302, 409}, [a.body for a in redeemed]
    for answer in redeemed:
        if answer.status == 409:
            assert any(
                reason in answer.body
                for reason in ("too few keys left", "changed a moment ago", "already used")
            ), answer.body
    served = {m for m, answers in outcomes.items() if any(a.status == 302 for a in answers)}
    assert len(served) == 2

    with Session(shared_engine) as session:
        claims = session.exec(select(Claim).where(col(Claim.maintainer_id).in_(holders))).all()
        assert sorted(c.maintainer_id for c in claims) == sorted(holders)  # one each
        assert Counter(c.status for c in claims) == {
            ClaimStatus.REDEEMED.value: 2,
            ClaimStatus.ISSUED.value: 3,
        }
        shipments = session.exec(select(Shipment)).all()
        assert sorted(s.claim_id for s in shipments) == sorted(
            c.id for c in claims if c.status == ClaimStatus.REDEEMED.value
        )
        assert {c.maintainer_id for c in claims if c.status == "redeemed"} == served
        assert all(s.items == {USB_A: 2} for s in shipments)
        assert len(session.exec(select(WaitlistEntry)).all()) == 7

        # The database promises no more keys than it holds, per model and in total.
        for balance in session.exec(select(StockBalance)).all():
            assert 0 <= balance.committed <= balance.on_hand, balance
        figures = stock.stock_figures(session=session)
        assert (figures.allocated, figures.reserved, figures.available) == (4, 6, 0)
        assert figures.reconciles
        report = reports.stock_report(session=session)
        assert report.reconciles, report.failed

        # Each code and each parcel was recorded once.
        actions = Counter(
            session.exec(
                select(AuditEvent.action).where(
                    col(AuditEvent.action).in_(["claim.issued", "shipment.created"])
                )
            ).all()
        )
        assert actions == {"claim.issued": 5, "shipment.created": 2}
    cluster.check_logs()


# --- rate limits --------------------------------------------------------------------------------


def test_a_rate_limit_counts_requests_to_both_servers(cluster: Cluster, shared_engine):
    """Sign-in links: at most 5 mailed per address per 15 minutes, across the site, not per
    server; the form answers alike every time, so a stranger locks nobody out."""
    email = "hammered@scale.example.org"
    with Session(shared_engine) as session:
        make_maintainer(session, email=email)
        session.commit()
    visitor = Visitor()

    def ask(server: Server, address: str = email) -> Answer:
        form = visitor.get(server, "/sign-in").form_value(_CSRF)
        return visitor.post_form(server, "/sign-in", {"email": address, "csrf_token": form})

    a, b = cluster.servers
    answers = [ask(server) for server in (a, b, a, b, a, b, a)]
    assert [(answer.status, answer.location) for answer in answers] == [(302, "/sign-in/sent")] * 7
    tasks_done(shared_engine)  # the consumer answered every request
    assert len(cluster.mailbox.to(email)) == 5
    # The limit is the address's, not the visitor's: another address still gets its link.
    with Session(shared_engine) as session:
        make_maintainer(session, email="someone-else@scale.example.org")
        session.commit()
    assert ask(b, "someone-else@scale.example.org").status == 302
    tasks_done(shared_engine)
    assert len(cluster.mailbox.to("someone-else@scale.example.org")) == 1
    cluster.check_logs()


def test_signing_out_or_ending_a_session_ends_it_on_both_servers(cluster, shared_engine):
    """Sessions live in the shared database: a cookie copied before sign-out opens nothing on
    either server after it, and a session ended from the list is ended on both."""
    email = "leaving@scale.example.org"
    with Session(shared_engine) as session:
        make_maintainer(session, email=email)
        session.commit()
    a, b = cluster.servers
    laptop = Visitor()
    sign_in_by_link(laptop, email, cluster.mailbox, ask=a, open_on=b)
    copied = dict(laptop.cookies)
    assert laptop.get(a, "/account/data/download").status == 200

    account = laptop.get(b, "/account")
    assert laptop.post_form(b, "/sign-out", {"csrf_token": account.form_value(_CSRF)}).status == 302

    thief = Visitor()
    thief.cookies = copied
    for server in (a, b):
        refused = thief.get(server, "/account/data/download")
        assert (refused.status, refused.location) == (302, "/sign-in"), server.name

    desk, phone = Visitor(), Visitor()
    sign_in_by_link(desk, email, cluster.mailbox, ask=a, open_on=a)
    sign_in_by_link(phone, email, cluster.mailbox, ask=b, open_on=b)
    page = desk.get(a, "/account")
    assert page.body.count("Sign out there") == 1  # the phone; the laptop signed out
    ended = desk.post_form(
        a, "/account/sessions/end", {"which": "others", "csrf_token": page.form_value(_CSRF)}
    )
    assert ended.status == 302
    for server in (a, b):
        assert phone.get(server, "/account").status == 302, server.name
        assert desk.get(server, "/account").status == 200, server.name
    cluster.check_logs()


# --- security-key ceremonies ----------------------------------------------------------------------


def test_a_key_ceremony_begun_on_one_server_completes_on_the_other(cluster, shared_engine):
    """Registration and sign-in with a key, each begun on one server and finished on the other.

    The servers trust only the FIDO metadata bundled with the app (a test CA cannot be trusted
    from outside the process, rightly), so the software key withholds its make and model
    (attestation ``none``), which the app accepts and records as withheld. The challenges are
    kept and spent the same way whatever the attestation.
    """
    a, b = cluster.servers
    email = "keyholder@scale.example.org"
    with Session(shared_engine, expire_on_commit=False) as session:
        maintainer = make_maintainer(session, email=email)
        session.commit()
    key = SoftAuthenticator(aaguid=UUID(int=0))
    browser = Visitor()
    sign_in_by_link(browser, email, cluster.mailbox, ask=a, open_on=b)

    csrf = browser.get(a, "/claim/keys").form_value(_CSRF)
    begun = browser.post_json(a, "/api/claim/keys/options", {}, csrf)
    assert begun.status == 200, begun.body
    options = begun.json()
    answer = key.register(options["publicKey"], origin=PUBLIC_ORIGIN, attestation="none")
    body = {"token": options["token"], "name": "Soft key", "credential": answer}
    registered = browser.post_json(b, "/api/claim/keys", body, csrf)
    replayed = browser.post_json(a, "/api/claim/keys", body, csrf)
    assert registered.status == 200, registered.body
    assert replayed.status == 400 and "used already" in replayed.json()["message"]
    with Session(shared_engine) as session:
        keys = session.exec(
            select(SecurityKey).where(SecurityKey.maintainer_id == maintainer.id)
        ).all()
        assert [k.outcome for k in keys] == [KeyOutcome.WITHHELD.value]

    # Another browser signs in with the key: options from B, the answer to A.
    other = Visitor()
    csrf = other.get(b, "/sign-in").form_value(_CSRF)
    asked = other.post_json(b, "/api/sign-in/key/options", {"email": email}, csrf)
    assert asked.status == 200, asked.body
    options = asked.json()
    signature = key.sign_in(options["publicKey"], origin=PUBLIC_ORIGIN)
    body = {"token": options["token"], "credential": signature}
    signed_in = other.post_json(a, "/api/sign-in/key", body, csrf)
    thief = Visitor()
    replayed = thief.post_json(
        b, "/api/sign-in/key", body, thief.get(b, "/sign-in").form_value(_CSRF)
    )
    assert signed_in.status == 200 and signed_in.json()["next"] == "/account", signed_in.body
    assert replayed.status == 400 and "used already" in replayed.json()["message"]
    account = other.get(b, "/account")
    assert account.status == 200 and "with your security key" in account.body
    cluster.check_logs()


# --- staff enrolment and lockouts ---------------------------------------------------------------


def staff_password(visitor: Visitor, server: Server, email: str, password: str) -> Answer:
    form = visitor.get(server, "/staff/sign-in").form_value(_CSRF)
    return visitor.post_form(
        server, "/staff/sign-in", {"email": email, "password": password, "csrf_token": form}
    )


def test_a_stolen_password_alone_cannot_register_a_staff_key(cluster, shared_engine):
    """A thief with a new staff member's password and their own key: refused on both servers,
    while the owner, with the enrolment link, registers theirs across the two."""
    a, b = cluster.servers
    email = "new-staff@scale.example.org"
    with Session(shared_engine, expire_on_commit=False) as session:
        staff = make_staff(session, email=email, roles=[StaffRole.SHIPPING])
        token = enrolment.issue_link(
            session=session, actor=Actor.system("test"), staff=staff, valid_for=timedelta(hours=1)
        )
        session.commit()
    thief, owner = Visitor(), Visitor()
    assert staff_password(thief, a, email, STAFF_PASSWORD).status == 302
    for server in (a, b):
        page = thief.get(server, "/staff/sign-in/key")
        assert page.status == 403 and "needs an enrolment link" in page.body, server.name
        csrf = thief.get(server, "/staff/sign-in").form_value(_CSRF)
        refused = thief.post_json(server, "/api/staff/keys/options", {}, csrf)
        assert refused.status == 403, refused.body

    # The owner opens the link on A, gives the password on B, and registers on A then B.
    assert owner.get(a, f"/staff/enrol/{token}").status == 200
    assert staff_password(owner, b, email, STAFF_PASSWORD).status == 302
    step = owner.get(a, "/staff/sign-in/key")
    assert step.status == 200 and "Register your security key" in step.body
    csrf = step.form_value(_CSRF)
    begun = owner.post_json(a, "/api/staff/keys/options", {}, csrf)
    assert begun.status == 200, begun.body
    options = begun.json()
    key = SoftAuthenticator(aaguid=UUID(int=0))
    answer = key.register(options["publicKey"], origin=PUBLIC_ORIGIN, attestation="none")
    body = {"token": options["token"], "name": "Keyring", "credential": answer}
    registered = owner.post_json(b, "/api/staff/keys", body, csrf)
    assert registered.status == 200, registered.body
    assert owner.get(a, "/staff/").status == 200

    # The thief, still past the password, now meets a key they do not have.
    assert "Present your security key" in thief.get(b, "/staff/sign-in/key").body
    assert thief.get(a, f"/staff/enrol/{token}").status == 410  # used
    with Session(shared_engine) as session:
        keys = session.exec(select(SecurityKey).where(SecurityKey.staff_id == staff.id)).all()
        assert [k.name for k in keys] == ["Keyring"]
    cluster.check_logs()


def test_strangers_cannot_lock_out_a_staff_password_or_a_key_sign_in(cluster, shared_engine):
    """Wrong staff passwords and key sign-in requests in someone's name, on both servers, stop
    the stranger's client; the owner, from their own, signs in."""
    a, b = cluster.servers
    staff_email, maintainer_email = "guarded@scale.example.org", "keyed@scale.example.org"
    with Session(shared_engine) as session:
        make_staff(session, email=staff_email)
        make_maintainer(session, email=maintainer_email)
        session.commit()
    stranger, owner = Visitor(), Visitor()

    guesses = [staff_password(stranger, (a, b)[n % 2], staff_email, "wrong") for n in range(12)]
    assert [g.status for g in guesses] == [401] * 10 + [429] * 2
    assert staff_password(owner, b, staff_email, STAFF_PASSWORD).location == "/staff/sign-in/key"

    def key_options(visitor: Visitor, server: Server) -> int:
        csrf = visitor.get(server, "/sign-in").form_value(_CSRF)
        asked = visitor.post_json(
            server, "/api/sign-in/key/options", {"email": maintainer_email}, csrf
        )
        return asked.status

    asked = [key_options(stranger, (a, b)[n % 2]) for n in range(7)]
    assert asked == [200] * 5 + [429] * 2
    assert key_options(owner, a) == 200
    cluster.check_logs()


def test_demo_mode_in_production_refuses_to_start(cluster):
    """The servers' own settings with demo mode on: gunicorn stops before serving anything,
    saying why (demo mode would show every sign-in link and claim code at /dev/outbox)."""
    environment = {**cluster.environment, "KEYS_DEMO_MODE": "1"}
    server = start_server("demo", environment, cluster.directory / "gunicorn-demo.log")
    try:
        exit_code = server.process.wait(timeout=TIMEOUT * 2)
    finally:
        if server.process.poll() is None:
            stop_server(server)
    assert exit_code != 0
    assert "cannot start: KEYS_DEMO_MODE=1 shows every sign-in link" in server.log.read_text()
