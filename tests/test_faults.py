"""Faults: a process killed with SIGKILL in the middle of a label run or of a redemption loses
nothing and duplicates nothing.

Each test gives real processes a database of their own (a file, or a database on the test
server), kills one with SIGKILL at a chosen moment — no handler runs, nothing is rolled back
by the app — and then reads what the database holds, and carries on as the shipping desk or
the maintainer would: the parcels print once, the code redeems once.
"""

from __future__ import annotations

import json
import os
import select as io_select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from pypdf import PdfReader
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from accounts.models import Maintainer
from accounts.services import actor_for
from adapters.addresses import validate_address
from core.audit import AuditEvent
from core.db import create_db_engine, utcnow
from core.mail import OutboxMailer, OutboxMessage
from core.settings import Settings
from distribution.claims import services as claims
from distribution.errors import ClaimLocked, CodeUsed
from distribution.models import Claim, ClaimItem, LabelRun, Shipment, StockBalance, StockMovement
from distribution.reports.services import stock_report
from distribution.shipping import fulfilment, label_runs
from tests.conftest import DatabaseFactory, Mailbox, make_settings
from tests.factories import (
    ACTOR,
    BERLIN,
    USB_A,
    USB_C,
    make_owner,
    redeem_parcel,
    stock_famous_project,
)

ROOT = Path(__file__).resolve().parent.parent
PARCELS = 40
HELPER = "keys-redeem-and-wait"  # the application_name of the helper's PostgreSQL connection
T = TypeVar("T")


@dataclass(frozen=True)
class Programme:
    """A database of the test's own, committed for real, and the settings that reach it."""

    kind: str
    settings: Settings
    engine: sa.Engine


@pytest.fixture
def programme(
    databases: DatabaseFactory,
    smtp_server: tuple[Mailbox, int],
    ratelimit_storage_url: str,
    tmp_path: Path,
) -> Iterator[Programme]:
    url = databases.create("faults")
    settings = make_settings(
        url, smtp_server[1], ratelimit_storage_url=ratelimit_storage_url, instance_path=tmp_path
    )
    engine = create_db_engine(url)
    yield Programme(databases.kind, settings, engine)
    engine.dispose()


def environment(settings: Settings, **changes: str) -> dict[str, str]:
    """The ``KEYS_*`` variables that make a new process read ``settings``, and nothing else
    of ours."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("KEYS_")}
    return {
        **inherited,
        "KEYS_ENV": settings.environment,
        "KEYS_SECRET_KEY": settings.secret_key,
        "KEYS_DATABASE_URL": settings.database_url,
        "KEYS_BASE_URL": settings.base_url,
        "KEYS_INSTANCE_PATH": str(settings.instance_path),
        "KEYS_RATELIMIT_STORAGE_URL": settings.ratelimit_storage_url,
        "KEYS_MAIL_BACKEND": settings.mail_backend,
        "KEYS_SMTP_HOST": settings.smtp_host,
        "KEYS_SMTP_PORT": str(settings.smtp_port),
        "KEYS_PROGRAMME_OPENS": settings.programme_opens_at.isoformat(),
        "KEYS_PROGRAMME_CLOSES": settings.programme_closes_at.isoformat(),
        **changes,
    }


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """``python ARGS`` in a session of its own (so that its label workers can be killed with
    it), stderr to ``log``; whatever is left of it is killed on the way out."""
    with log.open("w") as errors:
        started = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,
        )
        try:
            yield started
        finally:
            kill(started)
            for pipe in (started.stdin, started.stdout):
                if pipe is not None:
                    pipe.close()


def kill(started: subprocess.Popen[str]) -> None:
    """SIGKILL the process and every process of its group (forkserver, label workers)."""
    with suppress(ProcessLookupError):  # all gone already
        os.killpg(started.pid, signal.SIGKILL)
    started.wait(timeout=30)


def wait_for(
    condition: Callable[[], T | None], what: str, alive: subprocess.Popen[str] | None = None
) -> T:
    """Poll ``condition`` until it returns something; fail if ``alive`` ends first."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = condition()
        if found is not None:
            return found
        if alive is not None and alive.poll() is not None:
            pytest.fail(f"the process ended (exit {alive.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def actions(session: Session) -> Counter[str]:
    return Counter(session.exec(select(AuditEvent.action)).all())


# --- a label run ------------------------------------------------------------------------------

LABELS = ["shipping", "labels", "--status", "redeemed", "--layout", "4x6", "--json"]

# The same command, but rendering chunks of 10 pages instead of 100: progress is written, and
# the run can be killed between pages, a few seconds in rather than after the first hundred.
SMALL_CHUNKS = (
    "import functools\n"
    "from distribution.shipping import label_runs, labels\n"
    "label_runs.render_run = functools.partial(labels.render_run, chunk_pages=10)\n"
    "from flask.cli import main\n"
    "main()\n"
)


def rendering_part_way(engine: sa.Engine) -> LabelRun | None:
    with Session(engine) as session:
        run = session.exec(
            select(LabelRun).options(sa.orm.defer(LabelRun.pdf))  # type: ignore[arg-type]
        ).first()
    if run is None or run.status != "rendering" or not 0 < run.pages_done < run.pages_total:
        return None
    return run


def test_a_label_run_killed_half_way_prints_nothing_and_the_next_prints_everything_once(
    programme, tmp_path
):
    engine, settings = programme.engine, programme.settings
    with Session(engine) as session:
        stock_famous_project(session, {USB_A: PARCELS, USB_C: PARCELS})
        references = {redeem_parcel(session, settings)[1].reference for _ in range(PARCELS)}
        session.commit()
    out = tmp_path / "labels.pdf"
    env = environment(settings)

    arguments = ["-c", SMALL_CHUNKS, "--app", "app", *LABELS, "--out", str(out)]
    with process(arguments, env, tmp_path / "killed.log") as run:
        dead_id = wait_for(lambda: rendering_part_way(engine), "pages were done", run).id
        kill(run)

    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    with Session(engine) as session:
        dead = session.get(LabelRun, dead_id)
        assert dead.status == "rendering" and dead.pdf is None and dead.printed == 0
        assert 0 < dead.pages_done < dead.pages_total == 2 * PARCELS
        held = session.exec(select(Claim)).all()
        assert {c.status for c in held} == {"redeemed"}  # moved only with a complete PDF
        # Until its heartbeat is stale the run may still be alive: nobody else prints them.
        assert {c.label_run_id for c in held} == {dead_id}
        queue = fulfilment.label_queue(session=session, base_url=settings.base_url)
        assert (queue.total, queue.in_runs) == (0, PARCELS)
        with pytest.raises(ClaimLocked):
            label_runs.start_run(
                session=session, actor=ACTOR, claim_ids=[c.id for c in held], layout="4x6"
            )
        session.rollback()
        assert actions(session)["labels.printed"] == 0
        assert actions(session)["claim.label_printed"] == 0
        assert stock_report(session=session).reconciles

        # LabelRun.STALE_AFTER passes without a heartbeat (in the database, not on the clock).
        session.execute(
            sa.update(LabelRun)
            .where(col(LabelRun.id) == dead_id)
            .values(heartbeat_at=utcnow() - LabelRun.STALE_AFTER - timedelta(seconds=1))
        )
        session.commit()
    with Session(engine) as session:
        assert label_runs.get_run(session=session, run_id=dead_id).interrupted
        queue = fulfilment.label_queue(session=session, base_url=settings.base_url)
        assert {parcel.label.reference for parcel in queue.parcels} == references

    again = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *LABELS, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["parcels"], report["label_printed"], report["skipped"]) == (PARCELS, PARCELS, [])
    assert report["run"] != dead_id
    pages = [page.extract_text() for page in PdfReader(out).pages]
    assert len(pages) == 2 * PARCELS
    # Every parcel's reference is on two pages, its label and its packing slip: no parcel is
    # missing, none is printed twice.
    on_pages = Counter(reference for text in pages for reference in references if reference in text)
    assert on_pages == dict.fromkeys(references, 2)
    with Session(engine) as session:
        printed = session.exec(select(Claim)).all()
        assert {(c.status, c.label_run_id) for c in printed} == {("label_printed", None)}
        events = actions(session)
        assert (events["labels.run_started"], events["labels.printed"]) == (2, 1)
        assert events["claim.label_printed"] == PARCELS
        report_now = stock_report(session=session)
        assert report_now.reconciles and report_now.figure("allocated") == 2 * PARCELS
        assert fulfilment.label_queue(session=session, base_url=settings.base_url).total == 0


# --- a redemption -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Code:
    """A maintainer's unredeemed claim code."""

    username: str
    maintainer_id: int
    claim_id: int
    code: str


def issue_code(programme: Programme) -> Code:
    with Session(programme.engine) as session:
        stock_famous_project(session, {USB_A: 2, USB_C: 2})
        person = make_owner(session, "famous", country="DE")
        issued = claims.issue_claim_code(
            session=session,
            mailer=OutboxMailer(),
            settings=programme.settings,
            actor=ACTOR,
            maintainer=person,
        )
        assert isinstance(issued, claims.IssuedCode)
        session.commit()
        return Code(person.username, person.id or 0, issued.claim.id or 0, issued.code)


def holdings(engine: sa.Engine, claim_id: int) -> dict[str, Any]:
    """Everything a redemption writes: the claim, its parcel and items, the stock balances and
    ledger, the audit log and the outbox."""

    def count(table: type[Any]) -> int:
        return int(session.exec(select(sa.func.count()).select_from(table)).one())

    with Session(engine) as session:
        claim = session.get(Claim, claim_id)
        assert claim is not None
        return {
            "claim": (claim.status, claim.keys_reserved, claim.redeemed_at),
            "shipments": count(Shipment),
            "items": count(ClaimItem),
            "balances": sorted(
                (b.sku, b.on_hand, b.committed) for b in session.exec(select(StockBalance)).all()
            ),
            "movements": count(StockMovement),
            "audit": count(AuditEvent),
            "outbox": count(OutboxMessage),
        }


def redeem_here(programme: Programme, code: Code, idempotency_key: str) -> Shipment:
    """The maintainer sends the form (again): a redemption in this process, committed."""
    settings = programme.settings
    with Session(programme.engine, expire_on_commit=False) as session:
        maintainer = session.get(Maintainer, code.maintainer_id)
        assert maintainer is not None
        shipment = claims.redeem_claim(
            session=session,
            mailer=OutboxMailer(),
            settings=settings,
            actor=actor_for(maintainer),
            maintainer=maintainer,
            code=code.code,
            items={USB_A: 1, USB_C: 1},
            recipient=claims.Recipient(
                validate_address(BERLIN, served=settings.countries), "+49301234567", "Ada"
            ),
            idempotency_key=idempotency_key,
        )
        session.commit()
        return shipment


def assert_redeemed_once(programme: Programme, code: Code, reference: str) -> None:
    with Session(programme.engine) as session:
        claim = session.get(Claim, code.claim_id)
        assert claim is not None
        assert (claim.status, claim.keys_reserved) == ("redeemed", 0)
        [shipment] = session.exec(select(Shipment)).all()
        assert (shipment.claim_id, shipment.reference) == (code.claim_id, reference)
        items = session.exec(select(ClaimItem).where(ClaimItem.claim_id == code.claim_id)).all()
        assert sorted((i.sku, i.quantity) for i in items) == [(USB_A, 1), (USB_C, 1)]
        events = actions(session)
        assert (events["claim.redeemed"], events["shipment.created"]) == (1, 1)
        report = stock_report(session=session)
        assert report.reconciles
        assert (report.figure("reserved"), report.figure("allocated")) == (0, 2)


def first_line(helper: subprocess.Popen[str], log: Path) -> str:
    """The helper's line saying it reached its point (or a failure with its errors)."""
    assert helper.stdout is not None
    ready, _, _ = io_select.select([helper.stdout], [], [], 180)
    line = helper.stdout.readline() if ready else ""
    if not line:
        pytest.fail(f"the helper did not reach its point:\n{log.read_text()}")
    return line


@contextmanager
def commits_held_back(engine: sa.Engine) -> Iterator[Callable[[], None]]:
    """Make a new shipment's COMMIT wait for a lock this test holds: a deferred constraint
    trigger, which PostgreSQL runs inside COMMIT, takes it. Yields the release."""
    with engine.connect() as connection:
        connection.execute(
            sa.text(
                "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_advisory_xact_lock(8008); RETURN NULL; END $$"
            )
        )
        connection.execute(
            sa.text(
                "CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON shipment "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit()"
            )
        )
        connection.commit()
    holder = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    holder.execute(sa.text("SELECT pg_advisory_lock(8008)"))
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            holder.execute(sa.text("SELECT pg_advisory_unlock(8008)"))
            released = True

    try:
        yield release
    finally:
        release()
        holder.close()


def helper_backends(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": HELPER},
            ).scalar_one()
        )


def no_op() -> None:
    pass


def waiting_for_the_lock(engine: sa.Engine) -> bool | None:
    with engine.connect() as connection:
        waiting = connection.execute(
            sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        ).scalar_one()
    return True if waiting else None


@pytest.mark.parametrize("point", ["before-commit", "in-commit", "after-commit"])
def test_a_redemption_killed_mid_way_happens_once_or_not_at_all(
    programme, point, tmp_path, mailbox
):
    postgresql = programme.kind == "postgresql"
    if point == "in-commit" and not postgresql:
        pytest.skip("SQLite runs nothing of ours inside COMMIT: no point to stop a commit at")
    engine, code = programme.engine, issue_code(programme)
    before = holdings(engine, code.claim_id)
    url = make_url(programme.settings.database_url)
    if postgresql:  # the helper's connection, recognisable on the server
        url = url.update_query_dict({"application_name": HELPER})
    env = environment(
        programme.settings, KEYS_DATABASE_URL=url.render_as_string(hide_password=False)
    )
    log = tmp_path / "helper.log"
    arguments = ["-m", "tests.redeem_and_wait", code.username, code.code, "form-1", point]

    with (
        commits_held_back(engine) if point == "in-commit" else nullcontext(no_op) as release,
        process(arguments, env, log) as helper,
    ):
        reference = first_line(helper, log).split()[1].rstrip(",")
        if point == "in-commit":
            wait_for(lambda: waiting_for_the_lock(engine), "the commit waited", helper)
        kill(helper)
        if point == "in-commit":
            # Killed inside COMMIT: nothing is visible yet. The server, which does not watch for
            # a client that went away while it waits (client_connection_check_interval is 0),
            # finishes the commit once the lock is free, with nobody left to tell.
            assert holdings(engine, code.claim_id) == before
            release()
    if postgresql:  # the server has let go of the helper's transaction and locks
        wait_for(lambda: True if helper_backends(engine) == 0 else None, "the helper's backend")

    if point == "before-commit":
        assert holdings(engine, code.claim_id) == before  # nothing written, nothing half-written
        assert mailbox.messages == []  # nor anyone told of a parcel that does not exist
        with Session(engine) as session:  # the code still works
            maintainer = session.get(Maintainer, code.maintainer_id)
            claims.find_claim_by_code(session=session, maintainer=maintainer, code=code.code)
        # The maintainer sends the form again: it goes through this time.
        reference = redeem_here(programme, code, "form-1").reference
    assert_redeemed_once(programme, code, reference)

    # Sent once more, the same form finds its parcel; a new form finds the code used.
    assert redeem_here(programme, code, "form-1").reference == reference
    with pytest.raises(CodeUsed):
        redeem_here(programme, code, "form-2")
    assert_redeemed_once(programme, code, reference)
