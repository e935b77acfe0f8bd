"""Benchmark: 400 maintainers racing over HTTP for 200 keys, against gunicorn and PostgreSQL.

It starts a throw-away PostgreSQL (``scripts/pg-cluster.sh``), migrates it and seeds, in one
committed transaction through the services: 400 maintainers in Germany, each the owner of one
project that an imported statistics file makes critical, and 200 keys (100 of each model). It
then serves the app with gunicorn (4 sync workers, production settings, demo mode for the
outbox mailer) and signs the maintainers in by handing each a session cookie signed with the
server's secret, as a completed emailed sign-in would leave it.

Four client processes then play the maintainers, eight at a time each: GET /claim (for the
CSRF token), POST /claim/code, and with a code GET and POST /claim/redeem with a Berlin address
and one key of each model. Every request has a timeout and the run stops starting new ones
after 120 s. Code entry is rate-limited per IP, so the clients spread over source addresses
127.0.0.2 and up, ten maintainers to an address.

Afterwards it reads the database: codes issued, parcels, the waiting list, keys handed out
(allocated to parcels plus reserved by unredeemed codes), whether the ledger reconciles, and
reports them with throughput and latency per endpoint. Goals: nothing oversold yet every key
handed out, no 5xx or connection errors, the ledger reconciles; a miss is reported, not
failed. The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import html
import http.client
import io
import json
import multiprocessing
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from servers import free_port, postgresql, redis_server

if TYPE_CHECKING:
    import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
MAINTAINERS = 400
MODELS = ("TITAN-USB-A-NFC", "TITAN-USB-C-NFC")
KEYS_PER_MODEL = 100
COUNTRY = "DE"
SERVER_WORKERS = 4
CLIENT_PROCESSES = 4
CLIENT_THREADS = 8  # journeys in flight in each client process
MAINTAINERS_PER_ADDRESS = 10  # well under the 30 code entries per hour allowed to one IP
REQUEST_TIMEOUT = 30.0
RUN_SECONDS = 120.0
START_DELAY = 2.0  # lets every client process start before the clock does
SESSION_COOKIE = "keys_session"
BERLIN = {
    "recipient_name": "Bench Maintainer",
    "phone": "030 1234567",
    "address_street_address": "Unter den Linden 1",
    "address_postal_code": "10117",
    "address_city": "Berlin",
}

Endpoint = Literal["GET /claim", "POST /claim/code", "GET /claim/redeem", "POST /claim/redeem"]
ENDPOINTS: tuple[Endpoint, ...] = (
    "GET /claim",
    "POST /claim/code",
    "GET /claim/redeem",
    "POST /claim/redeem",
)
Outcome = Literal["redeemed", "waitlisted", "failed", "unfinished"]
CONNECTION_ERROR = 0  # the status recorded for a request that got no HTTP response

_CODE = re.compile(r'data-testid="claim-code"[^>]*>\s*([0-9A-Z-]+)')


# --- the clients (run in child processes: standard library only) -----------------------------


@dataclass(frozen=True)
class Visitor:
    """One signed-in maintainer as a browser holds them: a session cookie and a source IP."""

    maintainer_id: int
    cookie: str
    source_address: str


@dataclass(frozen=True)
class Sample:
    endpoint: Endpoint
    status: int
    milliseconds: float
    error: str = ""


@dataclass(frozen=True)
class Journey:
    maintainer_id: int
    outcome: Outcome
    detail: str = ""


@dataclass
class ClientReport:
    samples: list[Sample] = field(default_factory=list)
    journeys: list[Journey] = field(default_factory=list)
    finished_at: float = 0.0


@dataclass(frozen=True)
class Page:
    status: int
    location: str
    body: str


class JourneyFailed(Exception):
    """A step got an answer (or none) that a maintainer's browser could not go on from."""


class TimeUp(Exception):
    """The run's time is over: no new request is started."""


class Browser:
    """One maintainer's cookies and source address; a fresh connection per request, as
    gunicorn's sync workers close each one anyway."""

    def __init__(self, port: int, visitor: Visitor, deadline: float) -> None:
        self.port = port
        self.visitor = visitor
        self.deadline = deadline
        self.cookies = {SESSION_COOKIE: visitor.cookie}
        self.samples: list[Sample] = []

    def get(self, endpoint: Endpoint, path: str) -> Page:
        return self._request(endpoint, "GET", path, None)

    def post(self, endpoint: Endpoint, path: str, form: Mapping[str, str]) -> Page:
        return self._request(endpoint, "POST", path, urllib.parse.urlencode(form))

    def _request(self, endpoint: Endpoint, method: str, path: str, body: str | None) -> Page:
        if time.time() >= self.deadline:
            raise TimeUp(f"stopped before {endpoint}: the run's time is up")
        headers = {
            "Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items()),
            "Connection": "close",
        }
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection(
            "127.0.0.1",
            self.port,
            timeout=REQUEST_TIMEOUT,
            source_address=(self.visitor.source_address, 0),
        )
        start = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as problem:
            elapsed = (time.perf_counter() - start) * 1000
            self.samples.append(Sample(endpoint, CONNECTION_ERROR, elapsed, repr(problem)))
            raise JourneyFailed(f"{endpoint}: {problem!r}") from None
        finally:
            connection.close()
        self.samples.append(Sample(endpoint, response.status, (time.perf_counter() - start) * 1000))
        for header in response.headers.get_all("Set-Cookie") or []:
            jar = SimpleCookie(header)
            self.cookies.update({name: morsel.value for name, morsel in jar.items()})
        return Page(response.status, response.headers.get("Location", ""), text)


def hidden_value(page: Page, name: str) -> str:
    """The value of the form input called ``name`` (attributes in any order)."""
    tag = re.search(rf'<input[^>]*\bname="{re.escape(name)}"[^>]*>', page.body)
    value = re.search(r'\bvalue="([^"]*)"', tag.group(0)) if tag else None
    if value is None:
        raise JourneyFailed(f"no {name} on the page (HTTP {page.status})")
    return html.unescape(value.group(1))


def expect(page: Page, endpoint: Endpoint, *statuses: int) -> Page:
    if page.status not in statuses:
        raise JourneyFailed(f"{endpoint} answered {page.status}")
    return page


def claim_and_redeem(browser: Browser) -> Outcome:
    """What a maintainer does: ask for a code and, given one, redeem it at once."""
    page = expect(browser.get("GET /claim", "/claim"), "GET /claim", 200)
    issued = browser.post(
        "POST /claim/code", "/claim/code", {"csrf_token": hidden_value(page, "csrf_token")}
    )
    if issued.status == 302 and urllib.parse.urlsplit(issued.location).path == "/claim":
        return "waitlisted"  # no keys left: back to /claim with a place in the queue
    found = _CODE.search(expect(issued, "POST /claim/code", 200).body)
    if found is None:
        raise JourneyFailed("POST /claim/code showed no code")
    code = found.group(1)
    query = urllib.parse.urlencode({"country": COUNTRY, "code": code})
    form_page = expect(
        browser.get("GET /claim/redeem", f"/claim/redeem?{query}"), "GET /claim/redeem", 200
    )
    form = {
        "csrf_token": hidden_value(form_page, "csrf_token"),
        "idempotency_key": hidden_value(form_page, "idempotency_key"),
        "code": code,
        "country": COUNTRY,
        **{f"quantity_{sku}": "1" for sku in MODELS},
        **BERLIN,
    }
    done = browser.post("POST /claim/redeem", f"/claim/redeem?country={COUNTRY}", form)
    expect(done, "POST /claim/redeem", 302)
    return "redeemed"


def run_journey(port: int, visitor: Visitor, deadline: float) -> tuple[Journey, list[Sample]]:
    browser = Browser(port, visitor, deadline)
    try:
        journey = Journey(visitor.maintainer_id, claim_and_redeem(browser))
    except TimeUp as stopped:
        journey = Journey(visitor.maintainer_id, "unfinished", str(stopped))
    except JourneyFailed as problem:
        journey = Journey(visitor.maintainer_id, "failed", str(problem))
    return journey, browser.samples


def run_clients(
    port: int, visitors: list[Visitor], start_at: float, deadline: float
) -> ClientReport:
    """One client process: its maintainers' journeys, ``CLIENT_THREADS`` at a time."""
    time.sleep(max(0.0, start_at - time.time()))
    report = ClientReport()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        for journey, samples in pool.map(lambda v: run_journey(port, v, deadline), visitors):
            report.journeys.append(journey)
            report.samples.extend(samples)
    report.finished_at = time.time()
    return report


# --- the database and the server ---------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    maintainer_ids: list[int]
    keys_available: int
    critical_count: int


def server_environment(
    database_url: str, ratelimit_storage_url: str, port: int, instance: Path
) -> dict[str, str]:
    """Production settings but for the environment, which demo mode (for the outbox mailer)
    needs (it changes only what start-up accepts), and a programme window around today (so the
    bench does not expire with the calendar)."""
    now = datetime.now(UTC)
    return {
        "KEYS_ENV": "development",
        "KEYS_DEMO_MODE": "1",
        "KEYS_MAIL_BACKEND": "outbox",
        "KEYS_SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
        # A host name: an IP address is refused (browsers refuse security keys there).
        "KEYS_BASE_URL": f"http://localhost:{port}",
        "KEYS_DATABASE_URL": database_url,
        "KEYS_INSTANCE_PATH": str(instance),
        "KEYS_RATELIMIT_STORAGE_URL": ratelimit_storage_url,
        "KEYS_PROGRAMME_OPENS": (now - timedelta(days=1)).isoformat(),
        "KEYS_PROGRAMME_CLOSES": (now + timedelta(days=365)).isoformat(),
    }


def seed(engine: sa.Engine) -> Seeded:
    """Maintainers, their critical projects and the keys, in one committed transaction."""
    from sqlmodel import Session

    from accounts.services import create_maintainer
    from core.actors import Actor
    from distribution.stock import services as stock
    from eligibility.critical import import_download_statistics
    from eligibility.models import ProjectRoleKind
    from eligibility.services import ensure_project, grant_project_role

    actor = Actor.system("bench")
    names = [f"bench-project-{number}" for number in range(MAINTAINERS)]
    # As many obscure projects as bench ones, so the top 50% are exactly the bench's.
    rows = [f"{name},{1_000_000 - number}" for number, name in enumerate(names)]
    rows += [f"obscure-{number},{1 + number % 50}" for number in range(MAINTAINERS)]
    statistics = ("project,downloads\n" + "\n".join(rows) + "\n").encode()
    with Session(engine, expire_on_commit=False) as session:
        projects = [ensure_project(session=session, name=name) for name in names]
        summary = import_download_statistics(
            session=session,
            actor=actor,
            stream=io.BytesIO(statistics),
            source_name="bench-downloads.csv",
            percent=50,
            sticky=True,
        )
        ids = []
        for number, project in enumerate(projects):
            maintainer = create_maintainer(
                session=session,
                actor=actor,
                username=f"bench-{number}",
                email=f"bench-{number}@example.org",
                display_name=f"Bench Maintainer {number}",
                country=COUNTRY,
            )
            grant_project_role(
                session=session,
                actor=actor,
                project=project,
                maintainer=maintainer,
                role=ProjectRoleKind.OWNER,
            )
            assert maintainer.id is not None
            ids.append(maintainer.id)
        for sku in MODELS:
            stock.receive_stock(
                session=session, actor=actor, sku=sku, quantity=KEYS_PER_MODEL, reference="BENCH"
            )
        available = stock.stock_figures(session=session).available
        session.commit()
    return Seeded(ids, available, summary.critical_list.critical_count)


def session_cookies(environment: Mapping[str, str], maintainer_ids: list[int]) -> list[str]:
    """What the emailed sign-in link leaves in a browser: a signed Flask session per person."""
    from app import create_app
    from core.settings import Settings

    app = create_app(Settings.from_env(environment))
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    assert serializer is not None
    return [
        str(serializer.dumps({"_user_id": f"maintainer:{id_}", "_fresh": True}))
        for id_ in maintainer_ids
    ]


@contextmanager
def gunicorn(environment: Mapping[str, str], port: int, log: Path) -> Iterator[None]:
    """The app under gunicorn until the block ends; waits until it answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYS_")} | dict(environment)
    command = [sys.executable, "-m", "gunicorn", "-w", str(SERVER_WORKERS)]
    command += ["-b", f"127.0.0.1:{port}", "wsgi:app"]
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    try:
        wait_until_answering(server, port)
        yield
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_until_answering(server: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.returncode} before answering")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/")
            if connection.getresponse().status < 500:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within 60 s")


# --- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """What the database holds after the run."""

    claims_granted: int
    redemptions: int
    waitlisted: int
    allocated: int
    reserved: int
    ledger_reserved: int
    ledger_allocated: int
    available_after: int
    reconciles: bool
    people_with_two_claims: int
    mails: int


@dataclass(frozen=True)
class Run:
    seeded: Seeded
    reports: list[ClientReport]
    started_at: float
    tally: Tally
    server_log: str
    database_log: str

    @property
    def samples(self) -> list[Sample]:
        return [sample for report in self.reports for sample in report.samples]

    @property
    def journeys(self) -> list[Journey]:
        return [journey for report in self.reports for journey in report.journeys]

    @property
    def seconds(self) -> float:
        return max(report.finished_at for report in self.reports) - self.started_at


def visitors_for(maintainer_ids: list[int], cookies: list[str]) -> list[Visitor]:
    """Each maintainer with a loopback source address: 127.0.0.2 and up, a few per address."""
    return [
        Visitor(id_, cookie, f"127.0.0.{2 + number // MAINTAINERS_PER_ADDRESS}")
        for number, (id_, cookie) in enumerate(zip(maintainer_ids, cookies, strict=True))
    ]


def fire(port: int, visitors: list[Visitor]) -> tuple[float, list[ClientReport]]:
    """Every journey, from ``CLIENT_PROCESSES`` processes at once; when the clock started."""
    started_at = time.time() + START_DELAY
    deadline = started_at + RUN_SECONDS
    shares = [visitors[index::CLIENT_PROCESSES] for index in range(CLIENT_PROCESSES)]
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(CLIENT_PROCESSES, mp_context=context)
    try:
        futures = [pool.submit(run_clients, port, share, started_at, deadline) for share in shares]
        limit = time.time() + START_DELAY + RUN_SECONDS + REQUEST_TIMEOUT + 30
        return started_at, [future.result(timeout=limit - time.time()) for future in futures]
    finally:
        # Never wait for a stuck client: stopping the server ends its requests.
        pool.shutdown(wait=False, cancel_futures=True)


def tally(engine: sa.Engine) -> Tally:
    import sqlalchemy as sa
    from sqlmodel import Session, select

    from core.mail import OutboxMessage
    from distribution.models import Claim, ClaimItem, ClaimStatus, Shipment, WaitlistEntry
    from distribution.stock import services as stock

    def count(model: type) -> int:
        return int(session.execute(sa.select(sa.func.count()).select_from(model)).scalar_one())

    with Session(engine) as session:
        claims = session.exec(select(Claim)).all()
        items = session.exec(select(ClaimItem)).all()
        redeemed = {c.id for c in claims if c.status == ClaimStatus.REDEEMED.value}
        holders = Counter(c.maintainer_id for c in claims)
        figures = stock.stock_figures(session=session)
        return Tally(
            claims_granted=len(claims),
            redemptions=count(Shipment),
            waitlisted=count(WaitlistEntry),
            allocated=sum(item.quantity for item in items if item.claim_id in redeemed),
            reserved=sum(c.keys_reserved for c in claims if c.status == ClaimStatus.ISSUED.value),
            ledger_reserved=figures.reserved,
            ledger_allocated=figures.allocated,
            available_after=figures.available,
            reconciles=figures.reconciles,
            people_with_two_claims=sum(1 for n in holders.values() if n > 1),
            mails=count(OutboxMessage),
        )


def measure() -> Run:
    from core.db import create_db_engine, upgrade_database

    print("claims: seeding PostgreSQL, then racing over HTTP (about a minute)…", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-claims-") as tmp:
        directory = Path(tmp)
        cluster = Path(tempfile.mkdtemp(prefix="bench-claims-pg-"))
        with postgresql(cluster) as url, redis_server(directory, "claims") as redis_url:
            upgrade_database(url)
            engine = create_db_engine(url)
            try:
                seeded = seed(engine)
                port = free_port()
                environment = server_environment(url, redis_url, port, directory / "instance")
                visitors = visitors_for(
                    seeded.maintainer_ids, session_cookies(environment, seeded.maintainer_ids)
                )
                log = directory / "gunicorn.log"
                with gunicorn(environment, port, log):
                    started_at, reports = fire(port, visitors)
                database_log = (cluster / "server.log").read_text(errors="replace")
                return Run(
                    seeded, reports, started_at, tally(engine), log.read_text(), database_log
                )
            finally:
                engine.dispose()


# --- the report --------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def server_problems(log: str) -> Counter[str]:
    """What went wrong in gunicorn's workers: each traceback's exception, and gunicorn's own
    errors (a worker timing out or dying), counted."""
    problems: Counter[str] = Counter()
    in_traceback = False
    for line in log.splitlines():
        if line.startswith("{"):  # the app's log: JSON lines, an error's traceback inside
            record = json.loads(line)
            if record.get("level") in ("ERROR", "CRITICAL"):
                detail = str(record.get("exception") or record.get("message", ""))
                problems[detail.strip().splitlines()[-1][:200]] += 1
        elif line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace():
            problems[line.strip()[:200]] += 1
            in_traceback = False
        elif "[ERROR]" in line or "[CRITICAL]" in line or "WORKER TIMEOUT" in line:
            problems[line.split("] ", 3)[-1].strip()[:200]] += 1
    return problems


def database_errors(log: str) -> Counter[str]:
    """PostgreSQL's ERROR lines, counted by message (a refused CHECK is how a reservation
    learns that the keys ran out: expected, once per loser of the race)."""
    errors: Counter[str] = Counter()
    for line in log.splitlines():
        _, marker, message = line.partition("ERROR:")
        if marker:
            errors[re.sub(r"\d+", "N", message.strip())[:200]] += 1
    return errors


def _goal(label: str, value: str, met: bool) -> str:
    return f"  goal {label:<28} {value:>12}   {'PASS' if met else 'MISS'}"


def report(run: Run) -> dict[str, object]:
    """Print the figures; return the JSON summary."""
    samples, journeys, t = run.samples, run.journeys, run.tally
    answered = [s for s in samples if s.status != CONNECTION_ERROR]
    errors = [s for s in samples if s.status == CONNECTION_ERROR or s.status >= 500]
    available = run.seeded.keys_available
    handed_out = t.allocated + t.reserved
    oversold = max(0, handed_out - available)
    throughput = len(samples) / run.seconds if run.seconds > 0 else 0.0
    outcomes = Counter(journey.outcome for journey in journeys)
    print(
        f"claims: {MAINTAINERS} maintainers ({run.seeded.critical_count} critical projects) race "
        f"for {available} keys over HTTP; gunicorn {SERVER_WORKERS} sync workers, "
        f"{CLIENT_PROCESSES} client processes × {CLIENT_THREADS} in flight; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"  attempts {len(journeys)}: redeemed {outcomes['redeemed']}, waitlisted "
        f"{outcomes['waitlisted']}, failed {outcomes['failed']}, unfinished "
        f"{outcomes['unfinished']}"
    )
    print(
        f"  database: claims granted (codes issued) {t.claims_granted}, redemptions "
        f"{t.redemptions}, waitlisted {t.waitlisted}, people with two claims "
        f"{t.people_with_two_claims}, mails in the outbox {t.mails}"
    )
    print(
        f"  keys: available at start {available}, handed out {handed_out} (allocated "
        f"{t.allocated} + reserved {t.reserved}; ledger says {t.ledger_allocated} + "
        f"{t.ledger_reserved}), available after {t.available_after}, oversold {oversold}"
    )
    print(
        f"  requests {len(samples)} in {run.seconds:.1f} s: {throughput:.1f} requests/s; "
        f"errors {len(errors)} (5xx and connection errors)"
    )
    for endpoint in ENDPOINTS:
        mine = [s for s in answered if s.endpoint == endpoint]
        statuses = Counter(s.status for s in samples if s.endpoint == endpoint)
        ms = [s.milliseconds for s in mine]
        print(
            f"  {endpoint:<20} {len(mine):>4} answered  p50 {percentile(ms, 0.5):7.1f} ms  "
            f"p99 {percentile(ms, 0.99):7.1f} ms  statuses "
            + ", ".join(f"{status or 'no answer'}×{n}" for status, n in sorted(statuses.items()))
        )
    all_ms = [s.milliseconds for s in answered]
    p50, p99 = percentile(all_ms, 0.5), percentile(all_ms, 0.99)
    print(f"  {'overall':<20} {len(answered):>4} answered  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
    details = Counter(j.detail for j in journeys if j.outcome in ("failed", "unfinished"))
    for detail, n in details.most_common(5):
        print(f"  journey problem ×{n}: {detail}")
    problems = server_problems(run.server_log)
    print(f"  server log: {sum(problems.values())} exceptions and worker errors")
    for problem, n in problems.most_common(5):
        print(f"    ×{n}: {problem}")
    refusals = database_errors(run.database_log)
    print(f"  PostgreSQL log: {sum(refusals.values())} statements refused")
    for message, n in refusals.most_common(5):
        print(f"    ×{n}: {message}")
    print(f"  ledger reconciles: {t.reconciles}")
    print(_goal("oversold == 0", str(oversold), oversold == 0))
    print(_goal("all keys handed out", f"{handed_out}/{available}", handed_out == available))
    print(_goal("errors == 0", str(len(errors)), not errors))
    print(_goal("ledger reconciles", str(t.reconciles), t.reconciles))
    return {
        "bench": Path(__file__).stem,
        "keys_handed_out": handed_out,
        "keys_available_at_start": available,
        "oversold": oversold,
        "requests_per_second": round(throughput, 1),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "errors": len(errors),
        "reconciles": t.reconciles,
        "claims_granted": t.claims_granted,
        "waitlisted": t.waitlisted,
        "redemptions": t.redemptions,
        "attempts": len(journeys),
        "requests": len(samples),
    }


def main() -> int:
    sys.path.insert(0, str(ROOT))  # measure this working tree, however the file is started
    print(json.dumps(report(measure())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
