"""Benchmark: a mixed workload against the app under gunicorn on PostgreSQL, and its ceiling.

Set-up: a throw-away PostgreSQL (``scripts/pg-cluster.sh``) and Redis (``redis-server`` on a
free loopback port, keeping nothing on disk); ``flask --app app db upgrade`` and ``seed --scale
2000`` (the demo and a programme of 2,000 claims in every state, so the staff pages read
realistic volumes); then, through the services, ``--maintainers`` new maintainers who own a
critical project, two keys for each, and a staff member with the shipping and programme roles.

The app runs as in production: ``gunicorn wsgi:app``, ``KEYS_ENV=production``, rate limits
counted in Redis, mail over SMTP (to the load generator, which reads the sign-in links) from one
task consumer (``flask --app app tasks worker``, its queue in the same Redis) beside it. Four
sync workers: two per core of this two-core machine, so that a worker waiting on PostgreSQL,
Redis or SMTP leaves its core to another, and no more, since the load generator, PostgreSQL and
Redis need the same two cores. ``--preload`` imports the app once and forks the workers, so
every worker is ready when the clock starts.

The load generator is a separate process (this file, ``--drive``) on loopback: ``--concurrency``
threads, each repeating a task picked at random by weight (``TASKS``):

- a maintainer's visit (10 requests): ask for a sign-in link, open it from the mail and press
  the button, read the eligibility page and My claim, ask for a code, open the redemption form
  and send it with a Berlin address and one key of each model, read My claim again;
- the public transparency JSON;
- the staff fulfilment queue, and the staff report page, as a signed-in staff member (a session
  cookie made as a completed sign-in leaves it: staff sign in with a password and a key).

Every visit is a new maintainer from a loopback source address of its own, as real visitors
are, so no rate limit trips (they are counted all the same). A request has a 30 s timeout on a
new connection; none starts after the duration or past ``--max-requests``. The first
``--warm-up`` seconds are not counted (templates compile, connections open).

The ceiling: ``bench/ceiling/bare.py``, a bare Flask app whose one endpoint returns "pong",
under the same gunicorn command and configuration, driven by the same generator with the same
concurrency for the same time (``--seconds``, 60 by default, after the same warm-up). The ratio
is the app's requests per second over the ceiling's. The generator shares the two cores, so its
own CPU time is printed too.

Printed: requests per second, p50/p95/p99 per endpoint, errors (a connection error or any
status but the step's expected one; must be 0), the ceiling and the ratio, and what the
database holds afterwards. The last line is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import html
import http.client
import itertools
import json
import os
import random
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servers import flask, free_port, postgresql, redis_server

if TYPE_CHECKING:
    import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 60.0
WARM_UP = 5.0
CONCURRENCY = 8  # two requests per worker: one being served, one waiting for it
WORKERS = 4
CONSUMERS = 2  # task consumer processes beside gunicorn: one per core
SCALE = 2_000
MAINTAINERS = 1_500  # fresh maintainers for the visits: more than a run of 60 s can use
MAX_REQUESTS = 200_000
REQUEST_TIMEOUT = 30.0
MAIL_TIMEOUT = 10.0
COUNTRY = "DE"
MODELS = ("TITAN-USB-A-NFC", "TITAN-USB-C-NFC")
EMAIL = "load-{:05d}@example.org"
STAFF_EMAIL = "load-staff@example.org"
SESSION_COOKIE = "keys_session"
BERLIN = {
    "recipient_name": "Load Maintainer",
    "phone": "030 1234567",
    "address_street_address": "Unter den Linden 1",
    "address_postal_code": "10117",
    "address_city": "Berlin",
}
# Task and weight: of every 11 tasks, 6 are maintainers' visits (60 of 65 requests).
TASKS = {"visit": 6, "transparency": 3, "staff queue": 1, "staff reports": 1}
ENDPOINTS = (
    "GET /sign-in",
    "POST /sign-in",
    "GET /sign-in/link/<token>",
    "POST /sign-in/link/<token>",
    "GET /eligibility",
    "GET /claim",
    "POST /claim/code",
    "GET /claim/redeem",
    "POST /claim/redeem",
    "GET /transparency.json",
    "GET /staff/shipping",
    "GET /staff/reports",
)
CEILING_ENDPOINT = "GET /ping"
CONNECTION_ERROR = 0  # the status recorded for a request that got no HTTP response

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
_IDEMPOTENCY = re.compile(r'name="idempotency_key"[^>]*value="([^"]+)"')
_CODE = re.compile(r'data-testid="claim-code"[^>]*>\s*([0-9A-Z-]+)')
_LINK = re.compile(r"/sign-in/link/([A-Za-z0-9_-]+)")


# --- the load generator (a separate process: standard library and aiosmtpd only) --------------


class Stop(Exception):
    """The run is over (its time, or its requests): no new request starts."""


class VisitFailed(Exception):
    """A step got an answer (or none) that a browser could not go on from."""


@dataclass(frozen=True)
class Sample:
    endpoint: str
    status: int
    milliseconds: float
    started: float  # seconds since the run's clock started (negative: the warm-up)
    error: bool


@dataclass
class Run:
    """What every thread shares: the clock, the request budget, the supplies."""

    port: int
    started: float  # time.monotonic() when counting starts (after the warm-up)
    deadline: float
    max_requests: int
    staff_cookie: str
    emails: Iterator[str]
    addresses: Iterator[str]
    mailbox: Mailbox | None
    requests: Iterator[int] = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_request(self) -> None:
        with self.lock:
            if time.monotonic() >= self.deadline or next(self.requests) >= self.max_requests:
                raise Stop

    def next_email(self) -> str | None:
        with self.lock:
            return next(self.emails, None)

    def next_address(self) -> str:
        with self.lock:
            return next(self.addresses)


@dataclass(frozen=True)
class Page:
    status: int
    location: str
    body: str

    def value(self, pattern: re.Pattern[str]) -> str:
        found = pattern.search(self.body)
        if found is None:
            raise VisitFailed(f"{pattern.pattern} not on the page (HTTP {self.status})")
        return html.unescape(found.group(1))


class Browser:
    """One visitor: cookies and a loopback source address. A new connection per request, as
    gunicorn's sync workers close each one."""

    def __init__(
        self, run: Run, samples: list[Sample], cookies: Mapping[str, str] | None = None
    ) -> None:
        self.run = run
        self.samples = samples
        self.address = run.next_address()
        self.cookies = dict(cookies or {})

    def get(self, endpoint: str, path: str, *expected: int) -> Page:
        return self._request(endpoint, "GET", path, None, expected)

    def post(self, endpoint: str, path: str, form: Mapping[str, str], *expected: int) -> Page:
        return self._request(endpoint, "POST", path, urllib.parse.urlencode(form), expected)

    def _request(
        self, endpoint: str, method: str, path: str, body: str | None, expected: tuple[int, ...]
    ) -> Page:
        self.run.next_request()
        headers = {"Connection": "close"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.run.port, timeout=REQUEST_TIMEOUT, source_address=(self.address, 0)
        )
        started = time.monotonic()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as problem:
            self._record(endpoint, CONNECTION_ERROR, started, error=True)
            raise VisitFailed(f"{endpoint}: {problem!r}") from None
        finally:
            connection.close()
        error = response.status not in expected
        self._record(endpoint, response.status, started, error=error)
        if error:
            raise VisitFailed(f"{endpoint} answered {response.status}")
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return Page(response.status, response.headers.get("Location", ""), text)

    def _record(self, endpoint: str, status: int, started: float, *, error: bool) -> None:
        ended = time.monotonic()
        self.samples.append(
            Sample(endpoint, status, (ended - started) * 1000, started - self.run.started, error)
        )


class Mailbox:
    """An SMTP server's handler (aiosmtpd) that keeps the last sign-in link per address."""

    def __init__(self) -> None:
        self._links: dict[str, str] = {}
        self._arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(("plain",))
        found = _LINK.search(body.get_content() if body is not None else "")
        if found is not None:
            with self._arrived:
                for recipient in envelope.rcpt_tos:
                    self._links[recipient.lower()] = found.group(0)
                self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def take_link(self, address: str) -> str:
        with self._arrived:
            if not self._arrived.wait_for(lambda: address in self._links, MAIL_TIMEOUT):
                raise VisitFailed(f"no sign-in link within {MAIL_TIMEOUT:.0f} s")
            return self._links.pop(address)


def maintainer_visit(run: Run, browser: Browser, address: str) -> str:
    """Sign in by emailed link, read, claim and redeem; how it ended."""
    assert run.mailbox is not None
    form = browser.get("GET /sign-in", "/sign-in", 200)
    browser.post(
        "POST /sign-in", "/sign-in", {"email": address, "csrf_token": form.value(_CSRF)}, 302
    )
    link = run.mailbox.take_link(address)
    button = browser.get("GET /sign-in/link/<token>", link, 200)
    browser.post("POST /sign-in/link/<token>", link, {"csrf_token": button.value(_CSRF)}, 302)
    browser.get("GET /eligibility", "/eligibility", 200)
    mine = browser.get("GET /claim", "/claim", 200)
    issued = browser.post(
        "POST /claim/code", "/claim/code", {"csrf_token": mine.value(_CSRF)}, 200, 302
    )
    if issued.status == 302:
        return "waitlisted"  # no keys left: My claim shows a place in the queue
    code = issued.value(_CODE)
    query = urllib.parse.urlencode({"country": COUNTRY, "code": code})
    redeem = browser.get("GET /claim/redeem", f"/claim/redeem?{query}", 200)
    form_data = {
        "csrf_token": redeem.value(_CSRF),
        "idempotency_key": redeem.value(_IDEMPOTENCY),
        "code": code,
        "country": COUNTRY,
        **{f"quantity_{sku}": "1" for sku in MODELS},
        **BERLIN,
    }
    browser.post("POST /claim/redeem", f"/claim/redeem?country={COUNTRY}", form_data, 302)
    browser.get("GET /claim", "/claim", 200)
    return "redeemed"


def one_task(run: Run, rng: random.Random, samples: list[Sample]) -> str:
    """Pick a task by weight and do it; its outcome."""
    task = rng.choices(list(TASKS), weights=list(TASKS.values()))[0]
    staff = {SESSION_COOKIE: run.staff_cookie}
    if task == "visit":
        address = run.next_email()
        if address is None:
            return "no maintainer left"
        return maintainer_visit(run, Browser(run, samples), address)
    if task == "transparency":
        Browser(run, samples).get("GET /transparency.json", "/transparency.json", 200)
    elif task == "staff queue":
        Browser(run, samples, staff).get("GET /staff/shipping", "/staff/shipping", 200)
    else:
        Browser(run, samples, staff).get("GET /staff/reports", "/staff/reports", 200)
    return task


def ceiling_task(run: Run, rng: random.Random, samples: list[Sample]) -> str:
    Browser(run, samples).get(CEILING_ENDPOINT, "/ping", 200)
    return "ping"


def drive(config: Mapping[str, Any]) -> dict[str, Any]:
    """Run the workload (or the ceiling's) from ``concurrency`` threads; the samples."""
    mailbox = None
    controller = None
    if config["smtp_port"]:
        from aiosmtpd.controller import Controller

        mailbox = Mailbox()
        controller = Controller(mailbox, hostname="127.0.0.1", port=config["smtp_port"])
        controller.start()
    now = time.monotonic()
    run = Run(
        port=config["port"],
        started=now + config["warm_up"],
        deadline=now + config["warm_up"] + config["seconds"],
        max_requests=config["max_requests"],
        staff_cookie=config["staff_cookie"],
        emails=(config["email"].format(n) for n in range(config["maintainers"])),
        addresses=(
            f"127.{1 + n // 62_500}.{n // 250 % 250}.{1 + n % 250}" for n in itertools.count()
        ),
        mailbox=mailbox,
    )
    task = ceiling_task if config["ceiling"] else one_task
    outcomes: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    every_sample: list[list[Sample]] = []

    def thread(index: int) -> None:
        rng = random.Random(index)
        samples: list[Sample] = []
        every_sample.append(samples)
        while True:
            try:
                outcome = task(run, rng, samples)
            except Stop:
                return
            except VisitFailed as problem:
                outcome = "failed"
                with run.lock:
                    problems[str(problem)[:200]] += 1
            with run.lock:
                outcomes[outcome] += 1

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(config["concurrency"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if controller is not None:
        controller.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "samples": [
            [s.endpoint, s.status, s.milliseconds, s.started, s.error]
            for samples in every_sample
            for s in samples
        ],
        "outcomes": dict(outcomes),
        "problems": dict(problems.most_common(10)),
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "seconds": time.monotonic() - run.started,
    }


# --- the database, Redis and the servers ------------------------------------------------------


def programme_window() -> dict[str, str]:
    """A programme opened six months ago, as the scale seed's history assumes."""
    now = datetime.now(UTC)
    return {
        "KEYS_PROGRAMME_OPENS": (now - timedelta(days=180)).isoformat(timespec="seconds"),
        "KEYS_PROGRAMME_CLOSES": (now + timedelta(days=185)).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class Seeded:
    claims_before: int
    keys_available: int
    critical_project: str


def seed(engine: sa.Engine, maintainers: int) -> Seeded:
    """The visitors: maintainers who own a critical project, their keys, and a staff member,
    in one committed transaction through the services."""
    import sqlalchemy as sa
    from sqlmodel import Session, col, select

    from accounts.models import StaffRole
    from accounts.services import create_maintainer, create_staff
    from core.actors import Actor
    from distribution.stock import services as stock
    from eligibility.critical import current_list
    from eligibility.models import CriticalEntry, ProjectRoleKind
    from eligibility.services import ensure_project, grant_project_role

    actor = Actor.system("bench")
    with Session(engine, expire_on_commit=False) as session:
        critical = current_list(session=session)
        assert critical is not None, "the demo seed imports a critical list"
        name = session.exec(
            select(CriticalEntry.project_name)
            .where(CriticalEntry.list_id == critical.id)
            .order_by(col(CriticalEntry.project_name))
        ).first()
        assert name is not None, "the critical list has projects"
        project = ensure_project(session=session, name=name)
        for number in range(maintainers):
            maintainer = create_maintainer(
                session=session,
                actor=actor,
                username=f"load-{number:05d}",
                email=EMAIL.format(number),
                display_name=f"Load Maintainer {number}",
                country=COUNTRY,
            )
            grant_project_role(
                session=session,
                actor=actor,
                project=project,
                maintainer=maintainer,
                role=ProjectRoleKind.OWNER,
            )
        for sku in MODELS:
            stock.receive_stock(
                session=session, actor=actor, sku=sku, quantity=maintainers, reference="LOAD"
            )
        create_staff(
            session=session,
            actor=actor,
            email=STAFF_EMAIL,
            name="Load Staff",
            roles=[StaffRole.SHIPPING, StaffRole.PROGRAMME],
            password=secrets.token_urlsafe(24),
        )
        claims = session.execute(sa.text("SELECT count(*) FROM claim")).scalar_one()
        available = stock.stock_figures(session=session).available
        session.commit()
    return Seeded(int(claims), available, name)


def staff_cookie(environment: Mapping[str, str]) -> str:
    """What a completed staff sign-in (password and key) leaves in a browser: a session."""
    from app import create_app
    from core.db import get_database
    from core.settings import Settings

    app = create_app(Settings.from_env(environment))
    try:
        from sqlmodel import Session

        from accounts.services import find_staff_by_email

        with Session(get_database(app).engine) as session:
            staff = find_staff_by_email(session=session, email=STAFF_EMAIL)
            assert staff is not None
            user_id = staff.get_id()
        # Sessions live on the server: the cookie names one, recorded as a sign-in would.
        client = app.test_client()
        with client.session_transaction() as flask_session:
            flask_session["_user_id"] = user_id
            flask_session["_fresh"] = True
        cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
        assert cookie is not None
        return cookie.value
    finally:
        get_database(app).engine.dispose()


def server_environment(
    database_url: str, redis_url: str, port: int, smtp_port: int, instance: Path
) -> dict[str, str]:
    return {
        "KEYS_ENV": "production",
        "KEYS_SECRET_KEY": secrets.token_urlsafe(48),
        "KEYS_DATABASE_URL": database_url,
        "KEYS_BASE_URL": f"http://localhost:{port}",
        "KEYS_RATELIMIT_STORAGE_URL": redis_url,
        # Mail and sign-in links leave from a task consumer (one, beside gunicorn), not the
        # request: the queue is in the same Redis.
        "KEYS_TASK_QUEUE_URL": redis_url,
        "KEYS_MAIL_BACKEND": "smtp",
        "KEYS_SMTP_HOST": "127.0.0.1",
        "KEYS_SMTP_PORT": str(smtp_port),
        "KEYS_INSTANCE_PATH": str(instance),
        **programme_window(),
    }


@contextmanager
def gunicorn(
    app: str, port: int, workers: int, environment: Mapping[str, str], log: Path, *extra: str
) -> Iterator[None]:
    """``app`` under gunicorn until the block ends, once it answers ``/healthz`` or ``/ping``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYS_")} | dict(environment)
    command = [sys.executable, "-m", "gunicorn", "--preload", "--no-control-socket", *extra]
    command += ["-w", str(workers), "-b", f"127.0.0.1:{port}", app]
    with log.open("wb") as output:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_until_answering(server, port, log)
        yield
    finally:
        stop(server, signal.SIGTERM)


def stop(process: subprocess.Popen[bytes], signal_number: signal.Signals) -> None:
    process.send_signal(signal_number)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def consumer(environment: Mapping[str, str], log: Path) -> Iterator[None]:
    """``flask --app app tasks worker`` until the block ends (the app's background work): one
    process per core, as the README's systemd unit suggests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYS_")} | dict(environment)
    command = [sys.executable, "-m", "flask", "--app", "app", "tasks", "worker"]
    processes = []
    with log.open("wb") as output:
        for _core in range(CONSUMERS):
            processes.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
                )
            )
    try:
        yield
    finally:
        for process in processes:
            stop(process, signal.SIGINT)


def wait_until_answering(server: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"load: gunicorn exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        for path in ("/healthz", "/ping"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", path)
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
        time.sleep(0.2)
    sys.exit("load: gunicorn did not answer within 120 s")


def generate(config: dict[str, Any], directory: Path, name: str) -> dict[str, Any]:
    """Run the load generator in its own process; what it measured."""
    path = directory / f"{name}.json"
    path.write_text(json.dumps(config))
    limit = config["warm_up"] + config["seconds"] + REQUEST_TIMEOUT + 60
    try:
        subprocess.run(
            [sys.executable, __file__, "--drive", str(path)], cwd=ROOT, check=True, timeout=limit
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as problem:
        sys.exit(f"load: the load generator failed: {problem}")
    result: dict[str, Any] = json.loads(path.read_text())
    return result


# --- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    codes_issued: int
    parcels: int
    people_with_two_claims: int
    reconciles: bool


def tally(engine: sa.Engine, seeded: Seeded) -> Tally:
    import sqlalchemy as sa
    from sqlmodel import Session, col

    from distribution.models import CLOSED_STATUSES, Claim
    from distribution.reports import services as reports
    from distribution.stock import services as stock

    with Session(engine) as session:
        claims = session.execute(sa.text("SELECT count(*) FROM claim")).scalar_one()
        parcels = session.execute(
            sa.text(
                "SELECT count(*) FROM shipment JOIN claim ON claim.id = shipment.claim_id "
                "JOIN maintainer ON maintainer.id = claim.maintainer_id "
                "WHERE maintainer.username LIKE 'load-%'"
            )
        ).scalar_one()
        open_claims = (
            sa.select(col(Claim.maintainer_id))
            .where(col(Claim.status).not_in(CLOSED_STATUSES))
            .group_by(col(Claim.maintainer_id))
            .having(sa.func.count() > 1)
            .subquery()
        )
        doubles = session.execute(sa.select(sa.func.count()).select_from(open_claims)).scalar_one()
        reconciles = (
            stock.stock_figures(session=session).reconciles
            and reports.stock_report(session=session).reconciles
        )
    return Tally(int(claims) - seeded.claims_before, int(parcels), int(doubles), reconciles)


@dataclass(frozen=True)
class Measured:
    seeded: Seeded
    app: dict[str, Any]
    ceiling: dict[str, Any]
    tally: Tally
    server_log: str
    options: argparse.Namespace
    load_before: float  # the machine's load average before the set-up: other work on it


def measure(options: argparse.Namespace) -> Measured:
    from core.db import create_db_engine

    load_before = os.getloadavg()[0]
    print(
        f"load: PostgreSQL, Redis, seed --scale {options.scale} and {options.maintainers:,} "
        "maintainers, then the app and the ceiling under load…",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        directory = Path(tmp)
        # Its own directory: the server's user must reach it (the script removes it).
        cluster = Path(tempfile.mkdtemp(prefix="bench-load-pg-"))
        with postgresql(cluster) as url, redis_server(directory, "load") as redis_url:
            seed_env = {
                "KEYS_ENV": "development",
                "KEYS_DEMO_MODE": "1",
                "KEYS_DATABASE_URL": url,
                "KEYS_INSTANCE_PATH": str(directory / "instance"),
                **programme_window(),
            }
            flask(seed_env, "db", "upgrade", bench="load")
            flask(seed_env, "seed", "--scale", str(options.scale), "--json", bench="load")
            engine = create_db_engine(url)
            try:
                seeded = seed(engine, options.maintainers)
                port, smtp_port = free_port(), free_port()
                environment = server_environment(
                    url, redis_url, port, smtp_port, directory / "instance"
                )
                config = {
                    "port": port,
                    "smtp_port": smtp_port,
                    "ceiling": False,
                    "seconds": options.seconds,
                    "warm_up": options.warm_up,
                    "concurrency": options.concurrency,
                    "max_requests": options.max_requests,
                    "maintainers": options.maintainers,
                    "email": EMAIL,
                    "staff_cookie": staff_cookie(environment),
                }
                log = directory / "gunicorn.log"
                with (
                    consumer(environment, directory / "consumer.log"),
                    gunicorn("wsgi:app", port, options.workers, environment, log),
                ):
                    app = generate(config, directory, "app")
                server_log = log.read_text(errors="replace")
                result = tally(engine, seeded)
            finally:
                engine.dispose()
        port = free_port()
        ceiling_config = config | {"port": port, "smtp_port": 0, "ceiling": True}
        bare = ["--pythonpath", str(ROOT / "bench" / "ceiling")]
        with gunicorn("bare:app", port, options.workers, {}, directory / "ceiling.log", *bare):
            ceiling = generate(ceiling_config, directory, "ceiling")
    return Measured(seeded, app, ceiling, result, server_log, options, load_before)


# --- the report -------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


@dataclass(frozen=True)
class Figures:
    """One run's counted samples (after the warm-up), per endpoint and in all."""

    rps: float
    requests: int
    errors: int
    seconds: float
    cpu_seconds: float
    endpoints: dict[str, dict[str, float]]
    statuses: dict[str, Counter[int]]


def figures(result: Mapping[str, Any]) -> Figures:
    counted = [s for s in result["samples"] if s[3] >= 0]
    by_endpoint: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    errors: Counter[str] = Counter()
    for endpoint, status, ms, _started, error in counted:
        statuses[endpoint][status] += 1
        if status != CONNECTION_ERROR:
            by_endpoint[endpoint].append(ms)
        if error:
            errors[endpoint] += 1
    every = [ms for values in by_endpoint.values() for ms in values]
    endpoints = {
        name: {
            "requests": len(values),
            "errors": errors[name],
            "p50_ms": round(percentile(values, 0.50), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
            "p99_ms": round(percentile(values, 0.99), 1),
        }
        for name, values in [*sorted(by_endpoint.items()), ("all", every)]
    }
    endpoints["all"]["errors"] = sum(errors.values())
    seconds = float(result["seconds"])
    return Figures(
        rps=len(counted) / seconds if seconds > 0 else 0.0,
        requests=len(counted),
        errors=sum(errors.values()),
        seconds=seconds,
        cpu_seconds=float(result["cpu_seconds"]),
        endpoints=endpoints,
        statuses=statuses,
    )


def server_problems(log: str) -> Counter[str]:
    """The errors in the server's log, counted: the app's JSON lines at level ERROR (by the
    exception's last line) or for a 5xx answer (by route), gunicorn's own errors and any raw
    traceback's exception."""
    problems: Counter[str] = Counter()
    in_traceback = False
    for line in log.splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                record = {}
            status = record.get("status")
            if record.get("level") in ("ERROR", "CRITICAL"):
                lines = str(record.get("exception") or record.get("message", "")).splitlines()
                problems[(lines[-1] if lines else "an error")[:200]] += 1
            elif isinstance(status, int) and status >= 500:
                problems[f"{status} from {record.get('route', '?')}"] += 1
        elif line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace():
            problems[line.strip()[:200]] += 1
            in_traceback = False
        elif "[ERROR]" in line or "[CRITICAL]" in line or "WORKER TIMEOUT" in line:
            problems[line.split("] ", 3)[-1].strip()[:200]] += 1
    return problems


def print_table(title: str, figures: Figures, order: tuple[str, ...]) -> None:
    print(f"  {title}")
    print(f"    {'endpoint':<28} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} errors")
    for name in [*(n for n in order if n in figures.endpoints), "all"]:
        row = figures.endpoints[name]
        print(
            f"    {name:<28} {row['requests']:>8,} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
            f"{row['p99_ms']:>8.1f} {row['errors']:>6}"
        )


def report(measured: Measured) -> dict[str, object]:
    options, app, ceiling = measured.options, figures(measured.app), figures(measured.ceiling)
    ratio = app.rps / ceiling.rps if ceiling.rps else 0.0
    t, seeded = measured.tally, measured.seeded
    print(
        f"load: {options.seconds:.0f} s (after {options.warm_up:.0f} s of warm-up) at "
        f"concurrency {options.concurrency} against gunicorn ({options.workers} sync workers, "
        f"--preload) on PostgreSQL and Redis; {os.cpu_count()} CPUs, load average "
        f"{measured.load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"{seeded.claims_before:,} claims seeded, critical project "
        f"{seeded.critical_project!r}"
    )
    print_table(f"the app: {app.rps:,.1f} requests/s, {app.errors} errors", app, ENDPOINTS)
    outcomes = Counter(measured.app["outcomes"])
    print(
        "    tasks: "
        + ", ".join(f"{name} {count:,}" for name, count in sorted(outcomes.items()))
        + " (a visit cut off by the clock is not counted)"
    )
    for problem, count in measured.app["problems"].items():
        print(f"    problem ×{count}: {problem}")
    print_table(
        f"the ceiling (bare Flask, GET /ping, same server and generator): {ceiling.rps:,.1f} "
        "requests/s",
        ceiling,
        (CEILING_ENDPOINT,),
    )
    print(f"  ratio app/ceiling: {ratio:.3f}")
    for name, run in (("app", app), ("ceiling", ceiling)):
        print(
            f"  load generator CPU in the {name} run: {run.cpu_seconds:.1f} s over "
            f"{options.warm_up + run.seconds:.1f} s"
        )
    problems = server_problems(measured.server_log)
    print(
        f"  database after: {t.codes_issued:,} codes issued and {t.parcels:,} parcels for the "
        f"visitors, people with two open claims {t.people_with_two_claims}, the stock "
        f"{'reconciles' if t.reconciles else 'DOES NOT reconcile'}; server log: "
        f"{sum(problems.values())} exceptions and worker errors"
    )
    for problem, count in problems.most_common(5):
        print(f"    ×{count}: {problem}")
    print(f"  goal errors == 0: {app.errors}   {'PASS' if app.errors == 0 else 'MISS'}")
    return {
        "bench": Path(__file__).stem,
        "seconds": options.seconds,
        "concurrency": options.concurrency,
        "workers": options.workers,
        "rps": round(app.rps, 1),
        "requests": app.requests,
        "error_count": app.errors,
        "endpoints": {
            name: {k: row[k] for k in ("requests", "p50_ms", "p95_ms", "p99_ms")}
            for name, row in app.endpoints.items()
        },
        "ceiling_rps": round(ceiling.rps, 1),
        "ratio": round(ratio, 3),
        "visits_redeemed": outcomes["redeemed"],
        "reconciles": t.reconciles,
        "server_exceptions": sum(problems.values()),
    }


def options_from(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help="of each run (60)")
    parser.add_argument("--warm-up", type=float, default=WARM_UP, help="seconds not counted")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--workers", type=int, default=WORKERS, help="gunicorn sync workers")
    parser.add_argument("--scale", type=int, default=SCALE, help="seed --scale N")
    parser.add_argument("--maintainers", type=int, default=MAINTAINERS)
    parser.add_argument("--max-requests", type=int, default=MAX_REQUESTS)
    parser.add_argument("--drive", type=Path, help=argparse.SUPPRESS)  # the generator's side
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    options = options_from(argv)
    if options.drive is not None:
        config = json.loads(options.drive.read_text())
        options.drive.write_text(json.dumps(drive(config)))
        return 0
    sys.path.insert(0, str(ROOT))  # measure this working tree, however the file is started
    print(json.dumps(report(measure(options))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
