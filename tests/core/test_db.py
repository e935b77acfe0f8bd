"""The database layer: migrations match the models, times stay aware, the audit log is append-only,
and a request commits once or not at all."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask, abort, flash
from flask import session as flask_session
from sqlmodel import Session, select

from accounts.models import Maintainer, SecurityKey
from app import import_models
from core.actors import Actor
from core.audit import AuditEvent, AuditFilter, record_event, search_audit_events
from core.db import CONFLICT_RETRIES, alembic_config, get_session, retry_conflicts, utcnow
from distribution.models import MovementKind, StockMovement
from tests.factories import make_maintainer, make_staff


def test_migrations_create_exactly_the_models(engine):
    with engine.connect() as connection, warnings.catch_warnings():
        # Expression indexes (lower(email)) cannot be reflected on every backend; the
        # case-insensitivity tests below check them for real.
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, import_models().metadata)
    assert differences == []


def test_datetimes_come_back_aware_in_utc(session):
    local = datetime(2026, 11, 22, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    maintainer = make_maintainer(session)
    maintainer.email_verified_at = local
    session.flush()
    session.expire_all()
    stored = session.get(Maintainer, maintainer.id)
    assert stored.email_verified_at == datetime(2026, 11, 22, 14, 30, tzinfo=UTC)
    assert stored.email_verified_at.tzinfo is UTC


def test_naive_datetimes_are_refused(session):
    maintainer = make_maintainer(session)
    maintainer.email_verified_at = datetime(2026, 1, 1)  # noqa: DTZ001 - the point of the test
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        session.flush()


@pytest.mark.parametrize("change", ["update", "delete"])
def test_audit_events_cannot_be_changed_or_deleted(session, change):
    record_event(session=session, actor=Actor.system("test"), action="test.happened")
    session.flush()
    statement = (
        sa.update(AuditEvent).values(action="test.rewritten")
        if change == "update"
        else sa.delete(AuditEvent)
    )
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), session.begin_nested():
        session.execute(statement)


def test_stock_movements_cannot_be_edited(session):
    movement = StockMovement(
        sku="TITAN-USB-A-NFC",
        kind=MovementKind.RECEIVED.value,
        quantity=5,
        occurred_at=utcnow(),
        actor_kind="system",
        reference="T-1",
    )
    session.add(movement)
    session.flush()
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), session.begin_nested():
        session.execute(sa.update(StockMovement).values(quantity=500))


def test_ledger_refuses_a_quantity_with_the_wrong_sign(session):
    session.add(
        StockMovement(
            sku="TITAN-USB-A-NFC",
            kind=MovementKind.SHIPPED.value,
            quantity=2,
            occurred_at=utcnow(),
            actor_kind="system",
            reference="T-2",
        )
    )
    with pytest.raises(sa.exc.IntegrityError), session.begin_nested():
        session.flush()


def test_sqlite_runs_with_wal_and_foreign_keys(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_audit_search_filters_and_pages(session):
    actor = Actor.system("test")
    for number in range(5):
        record_event(
            session=session,
            actor=actor,
            action=f"demo.step{number % 2}",
            subject_kind="thing",
            subject_id=number,
        )
    record_event(session=session, actor=actor, action="other.event")
    session.flush()

    found = search_audit_events(session=session, audit_filter=AuditFilter(action="demo."))
    assert [e.subject_id for e in found] == ["4", "3", "2", "1", "0"]
    page = search_audit_events(
        session=session, audit_filter=AuditFilter(action="demo."), before_id=found[1].id, limit=2
    )
    assert [e.subject_id for e in page] == ["2", "1"]
    one = search_audit_events(
        session=session, audit_filter=AuditFilter(subject_kind="thing", subject_id="3")
    )
    assert [e.action for e in one] == ["demo.step1"]
    # "_" and "%" in a prefix are literal characters, not wildcards.
    assert search_audit_events(session=session, audit_filter=AuditFilter(action="demo%")) == []
    tomorrow = utcnow() + timedelta(days=1)
    assert search_audit_events(session=session, audit_filter=AuditFilter(since=tomorrow)) == []


@pytest.fixture
def app(app):
    """The app with test-only routes allowed to skip CSRF."""
    app.config["WTF_CSRF_ENABLED"] = False
    return app


def test_a_request_commits_its_changes_once_at_the_end(app, client, session):
    @app.post("/test/write")
    def write():
        make_maintainer(get_session(), username="committed-one")
        return "ok"

    assert client.post("/test/write").status_code == 200
    assert session.exec(select(Maintainer).where(Maintainer.username == "committed-one")).one()


def test_a_failing_request_leaves_nothing_behind(app, client, session):
    @app.post("/test/half-write")
    def half_write():
        make_maintainer(get_session(), username="half-written")
        abort(409, "refused after writing")

    assert client.post("/test/half-write").status_code == 409
    assert session.exec(select(Maintainer).where(Maintainer.username == "half-written")).all() == []


def test_an_unexpected_error_rolls_back_and_shows_a_friendly_500(app, client, session):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.post("/test/crash")
    def crash():
        make_maintainer(get_session(), username="crashed")
        raise RuntimeError("boom")

    response = client.post("/test/crash")
    assert response.status_code == 500
    assert "Something went wrong on our side" in response.get_data(as_text=True)
    assert "boom" not in response.get_data(as_text=True)
    assert session.exec(select(Maintainer).where(Maintainer.username == "crashed")).all() == []


def test_key_removal_migrates_down_and_up_but_never_revives_a_removed_key(databases):
    url = databases.create("removal")
    engine = sa.create_engine(url)
    config = alembic_config(url)

    def columns() -> set[str]:
        return {column["name"] for column in sa.inspect(engine).get_columns("security_key")}

    alembic_command.downgrade(config, "0008")
    assert "removed_at" not in columns()
    alembic_command.upgrade(config, "head")
    assert "removed_at" in columns()

    with Session(engine) as session:
        staff = make_staff(session)
        session.add(
            SecurityKey(
                staff_id=staff.id,
                credential_id="AAAA",
                public_key=b"\x00",
                name="Removed",
                aaguid="00000000-0000-0000-0000-000000000000",
                attestation_format="none",
                attestation_object=b"\x00",
                client_data=b"{}",
                outcome="withheld",
                created_at=utcnow(),
                removed_at=utcnow(),
            )
        )
        session.commit()
    with pytest.raises(RuntimeError, match="usable again"):
        alembic_command.downgrade(config, "0008")
    assert "removed_at" in columns()
    engine.dispose()


def test_a_view_ended_by_a_deadlock_runs_again_as_if_the_first_run_had_not():
    """PostgreSQL breaks a deadlock by ending one transaction: that view runs again, and what
    its first run put in the session (a message) is not there twice; past the retries, the
    error stands."""
    app = Flask(__name__)
    app.secret_key = "test"
    runs: list[str] = []

    def deadlock() -> sa.exc.OperationalError:
        return sa.exc.OperationalError(
            "UPDATE stock_balance …", {}, psycopg.errors.DeadlockDetected("deadlock detected")
        )

    @app.post("/once")
    def once():
        runs.append("once")
        flash("Received.")
        if runs.count("once") == 1:
            raise deadlock()
        return {"messages": [message for _category, message in flask_session["_flashes"]]}

    @app.post("/always")
    def always():
        runs.append("always")
        raise deadlock()

    @app.post("/other")
    def other():
        runs.append("other")
        raise sa.exc.OperationalError("SELECT 1", {}, psycopg.errors.UndefinedTable("no table"))

    retry_conflicts(app)
    app.testing = False
    client = app.test_client()

    assert client.post("/once").get_json() == {"messages": ["Received."]}
    assert client.post("/always").status_code == 500
    assert client.post("/other").status_code == 500
    assert runs == ["once", "once"] + ["always"] * (1 + CONFLICT_RETRIES) + ["other"]
