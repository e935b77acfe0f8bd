"""Fixtures: a migrated database (SQLite, or PostgreSQL when KEYS_TEST_DATABASE_URL names a
server), a real SMTP server and a real Redis (the rate-limit storage) on loopback, and an app
whose every test runs inside a transaction that is rolled back afterwards (the app's own commits
become savepoint releases)."""

from __future__ import annotations

import email
import email.policy
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url
from sqlmodel import Session

from app import create_app
from core import tasks
from core.db import create_db_engine, get_database, upgrade_database
from core.mail import SMTPMailer
from core.settings import Settings

# --- databases --------------------------------------------------------------------------------


class DatabaseFactory:
    """Creates empty, migrated databases of the kind this run tests (SQLite or PostgreSQL)."""

    def __init__(self, server_url: str | None, tmp: Path) -> None:
        self.server_url = server_url
        self.tmp = tmp
        self.created: list[str] = []

    @property
    def kind(self) -> str:
        return "postgresql" if self.server_url else "sqlite"

    def create(self, name: str) -> str:
        """A new migrated database; its URL."""
        if self.server_url is None:
            url = f"sqlite:///{self.tmp / f'{name}-{secrets.token_hex(4)}.sqlite3'}"
        else:
            database = f"keys_{name}_{secrets.token_hex(4)}"
            admin = sa.create_engine(self.server_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
            admin.dispose()
            url = make_url(self.server_url).set(database=database).render_as_string(False)
            self.created.append(database)
        upgrade_database(url)
        return url

    def drop_all(self) -> None:
        if self.server_url is None:
            return
        admin = sa.create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for database in self.created:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(
        os.environ.get("KEYS_TEST_DATABASE_URL"), tmp_path_factory.mktemp("databases")
    )
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def database_url(databases: DatabaseFactory) -> str:
    """The shared, migrated database of the rolled-back tests."""
    return databases.create("main")


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


# --- mail -------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the loopback SMTP server received."""

    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.endswith("@refused.example.org"):  # a mailbox that does not exist
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str, subject: str | None = None) -> list[EmailMessage]:
        return [
            m
            for m in self.messages
            if m["To"] == address and (subject is None or m["Subject"] == subject)
        ]

    def wait_for(
        self, address: str, count: int = 1, *, subject: str | None = None, timeout: float = 15
    ) -> None:
        """Wait until ``count`` messages to ``address`` arrived (a consumer sends them)."""
        deadline = time.monotonic() + timeout
        while len(self.to(address, subject)) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def last_link(self, address: str, subject: str | None = None) -> str:
        """The last URL mailed to ``address`` (with ``subject``), waiting a moment for a
        first message."""
        self.wait_for(address, subject=subject)
        body = self.to(address, subject)[-1].get_content()
        return str(re.findall(r"https?://\S+", body)[-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, int]) -> Mailbox:
    box, _port = smtp_server
    box.messages.clear()
    return box


# --- rate-limit storage -----------------------------------------------------------------------


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's redis-server on a free loopback port, keeping nothing on disk, answering; the
    process and its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server not found: run `make test`, which installs it")
    port = free_port()
    server = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory)]
        + ["--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    with redis.Redis.from_url(url) as client:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.05)
    return server, url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for the whole run; its URL. Production settings refuse per-process counters,
    so the tests count in Redis too."""
    server, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def ratelimit_storage_url(redis_server: str) -> str:
    """The Redis URL with its counters emptied: each test starts with every allowance."""
    with redis.Redis.from_url(redis_server) as client:
        client.flushdb()
    return redis_server


# --- the app ----------------------------------------------------------------------------------


def make_settings(
    database_url: str, smtp_port: int, *, ratelimit_storage_url: str, **overrides: Any
) -> Settings:
    """Production-like settings: a real secret, SMTP on loopback, rate limits counted in
    Redis, no demo mode."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "environment": "production",
        # A programme window around today, so tests do not expire with the calendar.
        "programme_opens_at": now - timedelta(days=30),
        "programme_closes_at": now + timedelta(days=365),
        "secret_key": secrets.token_urlsafe(48),
        "database_url": database_url,
        "base_url": "http://localhost",
        "mail_backend": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_port,
        "smtp_timeout_seconds": 5.0,
        "ratelimit_storage_url": ratelimit_storage_url,
        # Each task runs in the test's process once its enqueuer commits (memory:// holds them
        # until tasks.drain(); the consumer tests start real consumers).
        "task_queue_url": "immediate://",
    }
    values.update(overrides)
    settings = Settings(**values)
    settings.validate()
    return settings


@pytest.fixture
def settings(
    database_url: str,
    smtp_server: tuple[Mailbox, int],
    ratelimit_storage_url: str,
    tmp_path: Path,
) -> Settings:
    return make_settings(
        database_url,
        smtp_server[1],
        ratelimit_storage_url=ratelimit_storage_url,
        instance_path=tmp_path,
    )


@pytest.fixture
def connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One connection in an outer transaction that is rolled back after the test."""
    connection = engine.connect()
    transaction = connection.begin()
    yield connection
    transaction.rollback()
    connection.close()


def bind_to(app: Flask, connection: sa.Connection) -> None:
    """Make the app's sessions join ``connection``; their commits release savepoints (and run
    the tasks they enqueued, in this thread: immediate://)."""
    get_database(app).sessionmaker.configure(
        bind=connection, join_transaction_mode="create_savepoint"
    )


AppFactory = Callable[..., Flask]


@pytest.fixture
def app_factory(
    database_url: str,
    smtp_server: tuple[Mailbox, int],
    ratelimit_storage_url: str,
    tmp_path: Path,
    connection: sa.Connection,
) -> Iterator[AppFactory]:
    """Builds apps with changed settings, all joined to the test's rolled-back connection."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        overrides.setdefault("instance_path", tmp_path)
        overrides.setdefault("ratelimit_storage_url", ratelimit_storage_url)
        smtp_port = overrides.pop("smtp_port", smtp_server[1])
        app = create_app(make_settings(database_url, smtp_port, **overrides))
        bind_to(app, connection)
        apps.append(app)
        return app

    yield build
    for app in apps:
        get_database(app).engine.dispose()


@pytest.fixture
def app(app_factory: AppFactory) -> Flask:
    return app_factory()


@pytest.fixture
def session(connection: sa.Connection) -> Iterator[Session]:
    """A session for arranging and checking data, on the test's connection."""
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    yield session
    session.close()


@pytest.fixture
def mailer(session: Session, app: Flask) -> SMTPMailer:
    """The SMTP back-end for services called with ``session``: the mail tasks they enqueue run
    (in ``app``, on the test's connection) once ``session`` commits."""
    tasks.attach(session, tasks.get_queue(app))
    return SMTPMailer()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
