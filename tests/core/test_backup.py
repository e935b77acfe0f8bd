"""Backups: `db backup` copies a running SQLite database; PostgreSQL is dumped with pg_dump and
restored with pg_restore. Either way the restored stock figures are the originals and reconcile."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

import jobs
from app import create_app
from core import tasks
from core.db import get_database
from core.mail import OutboxMailer
from distribution.claims import services as claims
from distribution.models import Claim
from distribution.stock.services import StockFigures, stock_figures
from tests.conftest import make_settings
from tests.factories import (
    ACTOR,
    USB_A,
    USB_C,
    make_owner,
    receive_keys,
    redeem_parcel,
    shipped_parcel,
    stock_famous_project,
)


@pytest.fixture
def build_app(smtp_server, ratelimit_storage_url, tmp_path):
    """Apps on databases of their own, committed to for real (not the rolled-back one)."""
    apps = []

    def build(database_url, **overrides):
        app = create_app(
            make_settings(
                database_url,
                smtp_server[1],
                ratelimit_storage_url=ratelimit_storage_url,
                instance_path=tmp_path,
                **overrides,
            )
        )
        apps.append(app)
        return app

    yield build
    for app in apps:
        get_database(app).engine.dispose()


def programme_in_progress(app) -> tuple[StockFigures, Counter[str]]:
    """Keys received, codes issued, parcels redeemed, printed and shipped, through the
    services; the stock figures and the claims by status, as committed."""
    settings = app.extensions["keys_settings"]
    with get_database(app).transaction() as session:
        stock_famous_project(session, {USB_A: 6, USB_C: 6}, reference="BATCH-1")
        receive_keys(session, {USB_A: 2}, reference="BATCH-2")
        redeem_parcel(session, settings)
        redeem_parcel(session, settings, items={USB_C: 2})
        shipped_parcel(session, settings)
        waiting = make_owner(session, "famous", country="DE")
        issued = claims.issue_claim_code(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=ACTOR,
            maintainer=waiting,
        )
        assert isinstance(issued, claims.IssuedCode)
    return figures_of(app)


def figures_of(app) -> tuple[StockFigures, Counter[str]]:
    with get_database(app).transaction() as session:
        statuses = Counter(claim.status for claim in session.exec(select(Claim)).all())
        return stock_figures(session=session), statuses


def test_a_running_sqlite_database_is_backed_up_and_restored(build_app, databases, tmp_path):
    if databases.kind != "sqlite":
        pytest.skip("SQLite's online backup; PostgreSQL is dumped with pg_dump")
    app = build_app(databases.create("live"))
    figures, statuses = programme_in_progress(app)
    assert figures.reconciles and figures.allocated > 0 and figures.reserved > 0
    assert statuses == {"redeemed": 2, "shipped": 1, "issued": 1}

    # Someone is writing while the backup runs: the copy has what was committed, not that.
    backup = tmp_path / "keys-backup.sqlite3"
    with Session(get_database(app).engine) as writer:
        receive_keys(writer, {USB_A: 100}, reference="NOT-COMMITTED")
        writer.flush()
        result = app.test_cli_runner().invoke(args=["db", "backup", str(backup), "--json"])
        writer.rollback()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "backup": str(backup),
        "bytes": backup.stat().st_size,
        "database": "sqlite",
        "integrity": "ok",
    }
    # One self-contained file: no write-ahead log beside it.
    assert sorted(p.name for p in tmp_path.glob("keys-backup*")) == ["keys-backup.sqlite3"]

    again = app.test_cli_runner().invoke(args=["db", "backup", str(backup)])
    assert again.exit_code != 0 and "exists already" in again.output

    # Restore: with the app stopped, copy the backup into place.
    restored = tmp_path / "restored.sqlite3"
    shutil.copyfile(backup, restored)
    assert figures_of(build_app(f"sqlite:///{restored}")) == (figures, statuses)


def test_postgresql_is_dumped_and_restored_with_its_own_tools(build_app, databases, tmp_path):
    if databases.kind != "postgresql":
        pytest.skip("pg_dump and pg_restore need the PostgreSQL run")
    live_url = databases.create("live")
    app = build_app(live_url)
    figures, statuses = programme_in_progress(app)

    refused = app.test_cli_runner().invoke(args=["db", "backup", str(tmp_path / "x.sqlite3")])
    assert refused.exit_code != 0 and "pg_dump -Fc" in refused.output

    # The README's recipe, while the app holds connections open.
    dump = tmp_path / "keys.dump"
    with get_database(app).engine.connect():
        run("pg_dump", "-Fc", "-f", str(dump), libpq(live_url))
    restored_url = empty_database(databases, "restored")
    run("pg_restore", "--clean", "--if-exists", "-d", libpq(restored_url), str(dump))
    assert figures_of(build_app(restored_url)) == (figures, statuses)


def libpq(url: str) -> str:
    """The URL as pg_dump and pg_restore read it (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def empty_database(databases, name: str) -> str:
    """A new database with no tables, dropped with the others after the run."""
    assert databases.server_url is not None
    database = f"keys_{name}_{len(databases.created)}"
    admin = sa.create_engine(databases.server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}"')
        connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
    admin.dispose()
    databases.created.append(database)
    return make_url(databases.server_url).set(database=database).render_as_string(False)


def run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_the_queue_backs_the_database_up_nightly_once_a_day(build_app, databases, tmp_path):
    if databases.kind != "sqlite":
        pytest.skip("SQLite's online backup; PostgreSQL is dumped with pg_dump")
    url = databases.create("nightly")
    app = build_app(url, backup_directory=tmp_path / "nightly", task_queue_url="memory://")
    figures, _statuses = programme_in_progress(app)
    queue = tasks.get_queue(app)
    nightly = tasks.Periodic(jobs.DATABASE_BACKUP, lambda _now: True, timedelta(days=1))

    queue.fire(nightly)
    queue.drain()

    (backup,) = (tmp_path / "nightly").glob("keys-*.sqlite3")
    copy = build_app(f"sqlite:///{backup}")
    assert figures_of(copy)[0] == figures
    with get_database(app).transaction() as session:
        (task,) = session.exec(select(tasks.Task).where(tasks.Task.name == "db.backup")).all()
        assert task.status == "done"
