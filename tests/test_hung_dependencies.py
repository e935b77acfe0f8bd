"""Faults that must not freeze the site: a PostgreSQL that stops answering (every one of its
processes stopped with SIGSTOP: connections are accepted, nothing comes back), a mail relay
that accepts and never answers, a Redis stopped with SIGSTOP.

A gunicorn of its own serves a PostgreSQL cluster of its own, so that stopping the database
disturbs no other test. While the database is silent, the health check answers 503 (within
its own short wait), pages that need the database answer 503 with Retry-After, JSON routes in
JSON, static files still load, and no worker is killed by gunicorn's timeout; after SIGCONT,
everything answers 200 again.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.db import create_db_engine
from core.mail import OutboxMessage
from core.tasks import Task
from tests.conftest import DatabaseFactory, Mailbox, start_redis
from tests.core.test_mail import silent_relay
from tests.factories import make_maintainer, make_staff
from tests.test_scale_out import (
    _CSRF,
    ROOT,
    Answer,
    Server,
    Visitor,
    server_environment,
    start_consumer,
    start_server,
    stop_server,
    wait_for_check_in,
    wait_until_healthy,
)

pytestmark = pytest.mark.skipif(
    not os.environ.get("KEYS_TEST_DATABASE_URL"),
    reason="a hung PostgreSQL needs the PostgreSQL run (make test starts one)",
)


def get(server: Server, path: str) -> Answer:
    """A GET from a new visitor, who gives up after the scale-out tests' ``TIMEOUT`` (30 s):
    a frozen site fails the test by answering nothing rather than by hanging it."""
    return Visitor().get(server, path)


@pytest.fixture
def silent_database_server(
    tmp_path: Path, smtp_server: tuple[Mailbox, int], redis_server: str
) -> Iterator[tuple[Server, Path]]:
    """A migrated database on a PostgreSQL cluster of the test's own, and a gunicorn on it."""
    # Outside pytest's temporary folder, which the server's own user may not enter.
    cluster = Path(tempfile.mkdtemp(prefix="keys-pg-hung."))
    started = subprocess.run(
        ["scripts/pg-cluster.sh", "start", str(cluster)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    server = None
    try:
        url = DatabaseFactory(started.stdout.strip(), tmp_path).create("hung")
        environment = server_environment(
            url,
            secret=secrets.token_urlsafe(48),
            smtp_port=smtp_server[1],
            redis_url=redis_server,
            instance=tmp_path,
        )
        environment["KEYS_TASK_QUEUE_URL"] = "immediate://"  # the database is the point here
        server = start_server("silent-db", environment, tmp_path / "gunicorn.log")
        wait_until_healthy(server, time.monotonic() + 60)
        yield server, cluster
    finally:
        postgres(cluster, signal.SIGCONT)
        if server is not None:
            stop_server(server)
        subprocess.run(["scripts/pg-cluster.sh", "stop", str(cluster)], cwd=ROOT, check=False)


def postgres(cluster: Path, signal_number: signal.Signals) -> None:
    """Send a signal to the cluster's postmaster and every process it started."""
    pid_file = cluster / "data" / "postmaster.pid"
    if not pid_file.exists():
        return
    postmaster = int(pid_file.read_text().split()[0])
    children = subprocess.run(
        ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in [postmaster, *map(int, children)]:
        os.kill(pid, signal_number)


def test_a_silent_postgresql_gives_fast_503s_and_the_site_recovers(silent_database_server):
    server, cluster = silent_database_server
    # The workers' pools are warm. (No statistics are imported: the lookup reads and says so.)
    assert get(server, "/api/projects/requests").status == 404
    assert get(server, "/projects?name=requests").status == 200

    postgres(cluster, signal.SIGSTOP)
    paths = ("/healthz", "/api/projects/requests", "/projects?name=requests", "/healthz")
    timed = []  # the second /healthz is the next probe, after the first silence
    for path in paths:
        started = time.monotonic()
        timed.append((get(server, path), round(time.monotonic() - started, 1)))
    print([(path, seconds) for path, (_answer, seconds) in zip(paths, timed, strict=True)])
    health, public, page, again = (answer for answer, _seconds in timed)
    static = get(server, "/static/css/app.css")

    assert health.status == again.status == 503
    assert json.loads(health.body) == {"status": "unavailable", "database": "unreachable"}
    assert public.status == 503 and public.headers["Content-Type"] == "application/json"
    assert json.loads(public.body)["error"] == "We will be back in a moment"
    assert public.headers["Retry-After"] == "30"
    assert page.status == 503 and "cannot reach its database" in page.body
    assert page.headers["Retry-After"] == "30"
    assert static.status == 200

    postgres(cluster, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while get(server, "/healthz").status != 200:
        assert time.monotonic() < deadline, "the site did not recover"
        time.sleep(0.2)
    assert get(server, "/api/projects/requests").status == 404
    assert get(server, "/projects?name=requests").status == 200

    # No worker was killed by gunicorn's timeout; every line the server wrote is JSON.
    lines = [json.loads(line) for line in server.log.read_text().splitlines()]
    assert not [line for line in lines if line.get("level") == "CRITICAL"]
    assert not [line for line in lines if "WORKER TIMEOUT" in line.get("message", "")]


def test_a_silent_relay_or_a_hung_redis_does_not_freeze_sign_in(
    databases: DatabaseFactory, tmp_path: Path
):
    """The mail relay accepts and never answers; later Redis (the rate limits' counters) is
    stopped with SIGSTOP. Sign-in goes on answering, well inside gunicorn's timeout: mail
    waits in the outbox for `mail send-pending`, the limits count in memory meanwhile."""
    url = databases.create("silent_relay")
    engine = create_db_engine(url)
    with Session(engine) as session:
        for number in range(5):
            make_maintainer(session, email=f"waiting-{number}@example.org")
        make_staff(session, email="desk@example.org")
        session.commit()
    redis_process, redis_url = start_redis(tmp_path)
    server = consumer = None
    try:
        with silent_relay() as relay_port:
            environment = server_environment(
                url,
                secret=secrets.token_urlsafe(48),
                smtp_port=relay_port,
                redis_url=redis_url,
                instance=tmp_path,
            )
            environment["KEYS_SMTP_TIMEOUT_SECONDS"] = "3"
            consumer = start_consumer("Q", environment, tmp_path / "consumer.log")
            wait_for_check_in(consumer, url)  # or the server's first /healthz says 503
            server = start_server("silent-relay", environment, tmp_path / "gunicorn.log")
            wait_until_healthy(server, time.monotonic() + 60)
            visitor = Visitor()

            def ask_for_link(number: int) -> tuple[int, str, float]:
                started = time.monotonic()
                form = visitor.get(server, "/sign-in").form_value(_CSRF)
                email = f"waiting-{number}@example.org"
                sent = visitor.post_form(server, "/sign-in", {"email": email, "csrf_token": form})
                return sent.status, sent.location, round(time.monotonic() - started, 1)

            relay_silent = [ask_for_link(number) for number in range(3)]
            redis_process.send_signal(signal.SIGSTOP)
            redis_stopped = [ask_for_link(number) for number in (3, 4)]
            form = visitor.get(server, "/staff/sign-in").form_value(_CSRF)
            wrong = visitor.post_form(
                server,
                "/staff/sign-in",
                {"email": "desk@example.org", "password": "wrong", "csrf_token": form},
            )
            health = get(server, "/healthz")
            redis_process.send_signal(signal.SIGCONT)
            back = ask_for_link(0)
            print(relay_silent, redis_stopped, back)

            assert [(status, where) for status, where, _s in relay_silent + redis_stopped] == [
                (302, "/sign-in/sent")
            ] * 5
            assert wrong.status == 401 and health.status == 200
            assert back[:2] == (302, "/sign-in/sent")  # and after SIGCONT
    finally:
        redis_process.send_signal(signal.SIGCONT)
        redis_process.terminate()
        redis_process.wait(timeout=30)
        for process in (server, consumer):
            if process is not None:
                stop_server(process)
    with Session(engine) as session:
        # Every request recorded its sign-in request, and the consumer its link and message;
        # none was delivered (the relay never spoke), none lost: each waits for its retry.
        asked = session.exec(select(Task).where(Task.name == "accounts.sign_in_link")).all()
        assert len(asked) == 6
        pending = session.exec(select(OutboxMessage).where(OutboxMessage.sent_at == None)).all()  # noqa: E711
        assert len(pending) + sum(t.status != "done" for t in asked) == 6
    engine.dispose()
    lines = [json.loads(line) for line in server.log.read_text().splitlines()]
    assert not [line for line in lines if line.get("level") == "CRITICAL"]
    assert not [line for line in lines if (line.get("status") or 0) >= 500]
