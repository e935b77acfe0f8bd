"""The database: engine, one session per request or command, aware UTC datetimes, migrations
and backups.

A request gets one session, created on first use and kept in ``g``; it is committed once, just
before the response leaves (so a failed commit still becomes an error page), and rolled back
on any error. Services flush but never commit; what must wait for the commit goes through
``core.after_commit``. The audit log (``core.audit``) is append-only. A view whose transaction
PostgreSQL ended to break a deadlock runs again from the start (``retry_conflicts``)."""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import psycopg
import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.config import Config
from flask import Flask, current_app, g, has_request_context
from flask import session as cookie
from flask.cli import with_appcontext
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, SQLModel

# Constraint names that Alembic and every database agree on.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_EXTENSION = "keys_db"

# JSON everywhere, JSONB where PostgreSQL can index and compare it.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, aware and in UTC: the only clock the domain reads."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always returns them aware, even from SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use db.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Bounded waits on PostgreSQL. A stopped server refuses at once, but a hung one (stopped with
# SIGSTOP, a dead network path) accepts and then says nothing: without limits each worker waits
# until gunicorn kills it. Connecting gives up after CONNECT_SECONDS; the server ends a
# statement after STATEMENT_SECONDS and a wait for a lock after LOCK_SECONDS; a web request
# stops waiting for an answer after REQUEST_WAIT_SECONDS (the health check after
# HEALTH_WAIT_SECONDS), well inside gunicorn's 30 s, and answers 503. Commands have no such
# client-side limit. Once the server was silent, the next waits and connections in this
# process are short for SILENCE_SECONDS, so the following requests fail fast too.
CONNECT_SECONDS = 3
STATEMENT_SECONDS = 60
LOCK_SECONDS = 15
REQUEST_WAIT_SECONDS = 5.0
HEALTH_WAIT_SECONDS = 2.0
SILENCE_SECONDS = 10.0
POOL_WAIT_SECONDS = 5
_silent_until = 0.0


class DatabaseSilent(psycopg.OperationalError):
    """PostgreSQL did not answer within the wait: the connection is closed and not reused."""


class _BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose waits for the server end, in a web request, after
    ``REQUEST_WAIT_SECONDS`` (psycopg's own waits have no limit)."""

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        limit = timeout if timeout is not None else wait_limit()
        try:
            return super().wait(gen, interval=interval, timeout=limit)
        except psycopg.errors._WaitTimeout:  # internal: psycopg asks callers to convert it
            # The server said nothing: the query may still be running there, so this
            # connection cannot be used again.
            global _silent_until
            _silent_until = time.monotonic() + SILENCE_SECONDS
            self.pgconn.finish()
            raise DatabaseSilent(f"the database did not answer within {limit:g} s") from None


def wait_limit() -> float | None:
    """How long a query may wait for the server now: nothing limits commands; a request
    waits ``REQUEST_WAIT_SECONDS``, the health check less, and 1 s just after a silence."""
    if not has_request_context():
        return None
    if time.monotonic() < _silent_until:
        return 1.0
    limit: float = g.get("database_wait", REQUEST_WAIT_SECONDS)
    return limit


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and write-ahead locking, PostgreSQL
    bounded waits.

    Statement parameters are kept out of error messages and logs (``hide_parameters``): they
    hold addresses, phone numbers and emails.
    """
    if not url.startswith("sqlite"):
        return _postgresql_engine(url)
    engine = sa.create_engine(url, connect_args={"timeout": 15}, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (pysqlite's own is broken for savepoints).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front, so two racing writers queue on the busy
        # timeout instead of one failing when it upgrades a read lock.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgresql_engine(url: str) -> Engine:
    options = (
        f"-c statement_timeout={STATEMENT_SECONDS}s -c lock_timeout={LOCK_SECONDS}s "
        "-c idle_in_transaction_session_timeout=300s"
    )
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=POOL_WAIT_SECONDS,
        hide_parameters=True,
        connect_args={"connect_timeout": CONNECT_SECONDS, "options": options},
    )

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        limit = wait_limit()  # the health check's, or just after a silence: shorter
        if limit is not None and limit < CONNECT_SECONDS:
            cparams = {**cparams, "connect_timeout": max(1, int(limit))}
        return _BoundedConnection.connect(*cargs, **cparams)

    @event.listens_for(engine, "handle_error")
    def _silence_is_a_disconnect(context: sa.engine.ExceptionContext) -> None:
        if isinstance(context.original_exception, DatabaseSilent):
            context.is_disconnect = True  # the pool drops the connection

    return engine


class Database:
    """The engine and session factory of one app; tests may rebind the factory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessionmaker: sessionmaker[Session] = sessionmaker(
            bind=engine, class_=Session, expire_on_commit=False
        )

    def session(self) -> Session:
        return self.sessionmaker()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session committed once at the end, rolled back on error (CLI commands use it)."""
        session = self.session()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def init_app(app: Flask, database: Database) -> None:
    """Install the database and the one-commit-per-request cycle."""
    app.extensions[_EXTENSION] = database

    @app.after_request
    def _commit(response: Any) -> Any:
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            try:
                if response.status_code >= 500:
                    session.rollback()
                else:
                    session.commit()
            finally:
                session.close()
        return response

    @app.teardown_request
    def _rollback(_exc: BaseException | None) -> None:
        # Only reached with a session still open when the request failed before after_request.
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            session.rollback()
            session.close()


def get_database(app: Flask | None = None) -> Database:
    database: Database = (app or current_app).extensions[_EXTENSION]
    return database


def get_session() -> Session:
    """The session of the current request: unique for each request and reused within it."""
    if "db_session" not in g:
        g.db_session = get_database().session()
    session: Session = g.db_session
    return session


def discard_changes() -> None:
    """Roll back what the current request has done so far (an error handler's first step)."""
    session: Session | None = g.get("db_session")
    if session is not None:
        session.rollback()


# PostgreSQL's answers that mean "not now" rather than "not that": a connection exception
# (class 08), the server shutting down or starting up, or every connection slot taken.
_UNAVAILABLE_SQLSTATES = ("57P01", "57P02", "57P03", "53300")


def is_unavailable(error: BaseException | None) -> bool:
    """Whether ``error`` means the database cannot be reached for the moment (the connection
    was refused or lost, the server is restarting, an SQLite file cannot be opened), as
    opposed to a fault in what was asked of it: the first is worth a retry, the second not."""
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    original = error.orig
    if isinstance(original, sqlite3.OperationalError):
        return original.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN
    if isinstance(original, psycopg.InterfaceError):  # "the connection is closed"
        return True
    if isinstance(original, psycopg.OperationalError):
        # No SQLSTATE: the server never answered (refused, timed out, gone mid-query).
        state = original.sqlstate
        return state is None or state.startswith("08") or state in _UNAVAILABLE_SQLSTATES
    return False


# A deadlock broken by PostgreSQL, or a serialization failure: the transaction was undone whole
# and may simply run again.
_CONFLICT_SQLSTATES = ("40P01", "40001")
CONFLICT_RETRIES = 3
_log = logging.getLogger("keys.db")


def is_conflict(error: BaseException) -> bool:
    return isinstance(error, sa.exc.DBAPIError) and (
        getattr(error.orig, "sqlstate", None) in _CONFLICT_SQLSTATES
    )


def retry_conflicts(app: Flask) -> None:
    """Run a view again, from the start, when the database ended its transaction to break a
    deadlock or a serialization failure (at most ``CONFLICT_RETRIES`` more times, after a short
    random pause): what the first run wrote is undone, and so is what it put in the browser's
    session (messages), so the repeat is as if the first had not happened. Stock rows are locked
    in one order, so these should not happen; this keeps a rare one from becoming a 500. Call
    it once every view is registered."""
    for endpoint, view in app.view_functions.items():
        app.view_functions[endpoint] = _retrying(view)


def _retrying(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def run(*args: Any, **kwargs: Any) -> Any:
        before = copy.deepcopy(dict(cookie))
        for attempt in range(1, CONFLICT_RETRIES + 2):
            try:
                return view(*args, **kwargs)
            except sa.exc.DBAPIError as error:
                if not is_conflict(error) or attempt > CONFLICT_RETRIES:
                    raise
                discard_changes()
                cookie.clear()
                cookie.update(copy.deepcopy(before))
                sqlstate = getattr(error.orig, "sqlstate", None)
                _log.warning(
                    json.dumps(
                        {"event": "conflict_retried", "attempt": attempt, "sqlstate": sqlstate}
                    )
                )
                time.sleep(random.uniform(0.01, 0.05) * attempt)  # noqa: S311 - not a secret
        raise AssertionError("unreachable: the last attempt returns or raises")

    return run


def database_status(*, session: Session) -> str:
    """Whether the database answers ``SELECT 1``, for the health check: "ok", or why not:
    "unreachable" (see ``is_unavailable``) or "error"."""
    try:
        session.execute(sa.text("SELECT 1")).one()
    except sa.exc.SQLAlchemyError as error:
        return "unreachable" if is_unavailable(error) else "error"
    return "ok"


# --- migrations -------------------------------------------------------------------------------

MIGRATIONS_PATH = Path(__file__).resolve().parents[1] / "migrations"


def alembic_config(database_url: str, connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration for ``database_url`` (or an open ``connection``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_PATH))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision``."""
    alembic_command.upgrade(alembic_config(database_url), revision)


@click.group("db")
def db_cli() -> None:
    """Database schema commands."""


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@with_appcontext
def upgrade_command(revision: str) -> None:
    """Apply the Alembic migrations to KEYS_DATABASE_URL."""
    upgrade_database(get_database().engine.url.render_as_string(hide_password=False), revision)
    click.echo(f"Database is at migration {revision}.")


# --- backups ----------------------------------------------------------------------------------

POSTGRESQL_BACKUP_RECIPE = (
    "db backup copies an SQLite database. For PostgreSQL use its own tools (README, Backups): "
    'pg_dump -Fc -f keys.dump "$DATABASE_URL", and to restore, '
    'pg_restore --clean --if-exists -d "$DATABASE_URL" keys.dump'
)


class BackupError(Exception):
    """A backup that was not made; the message says why."""


def backup_sqlite(*, engine: Engine, target: Path) -> int:
    """Copy the SQLite database behind ``engine`` to ``target`` with SQLite's online backup API:
    a consistent copy of what is committed, made while the app goes on reading and writing.
    The copy is checked, is one self-contained file, and appears at ``target`` only once
    complete. Returns its size in bytes."""
    if engine.dialect.name != "sqlite":
        raise BackupError(POSTGRESQL_BACKUP_RECIPE)
    if target.exists():
        raise BackupError(f"{target} exists already: back up to a new file")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)  # left by a backup that was interrupted
    source = engine.raw_connection()
    try:
        copy = sqlite3.connect(partial)
        try:
            source.driver_connection.backup(copy)  # type: ignore[union-attr]
            # The copy inherits write-ahead logging; a plain journal keeps it one file.
            copy.execute("PRAGMA journal_mode=DELETE")
            (integrity,) = copy.execute("PRAGMA integrity_check").fetchone()
        finally:
            copy.close()
    finally:
        source.close()
    if integrity != "ok":
        partial.unlink()
        raise BackupError(f"The copy failed its integrity check ({integrity}); nothing was kept")
    os.replace(partial, target)
    return target.stat().st_size


@db_cli.command("backup")
@click.argument("target", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@with_appcontext
def backup_command(target: Path, as_json: bool) -> None:
    """Copy the SQLite database to TARGET, safely while the app runs (PostgreSQL: pg_dump)."""
    try:
        size = backup_sqlite(engine=get_database().engine, target=target)
    except BackupError as error:
        raise click.ClickException(str(error)) from error
    report = {"backup": str(target), "bytes": size, "database": "sqlite", "integrity": "ok"}
    click.echo(json.dumps(report) if as_json else f"Backed up to {target} ({size} bytes).")
