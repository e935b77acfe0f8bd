"""Faults in background work: a consumer killed with SIGKILL mid-task loses nothing, repeats
nothing, and leaves no process behind.

Real consumers (``flask --app app tasks worker``) take tasks from a real queue: the SQLite
queue file on the SQLite run, Redis on the PostgreSQL run. The test kills one with SIGKILL at
a chosen moment, checks that none of its processes (label workers, forkserver) lives on,
starts another, and reads what the database and the SMTP server hold.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from pypdf import PdfReader
from sqlmodel import Session, select

from app import create_app
from core import tasks
from core.db import get_database
from core.mail import UNCERTAIN, Mail, OutboxMessage, SMTPMailer
from core.settings import Settings
from distribution.models import Claim, LabelRun
from distribution.shipping import label_runs
from tests.conftest import DatabaseFactory, free_port, make_settings
from tests.factories import ACTOR, USB_A, USB_C, redeem_parcel, stock_famous_project
from tests.test_faults import actions, environment, rendering_part_way, wait_for

ROOT = Path(__file__).resolve().parent.parent
PARCELS = 40
# A consumer rendering chunks of 10 pages instead of 100: progress is written, and the run can
# be killed between pages.
SMALL_CHUNKS = (
    "import functools\n"
    "from distribution.shipping import label_runs, labels\n"
    "label_runs.render_run = functools.partial(labels.render_run, chunk_pages=10)\n"
    "from flask.cli import main\n"
    "main()\n"
)


@dataclass
class HoldingMailbox:
    """An SMTP server that takes a message and then holds its answer until released: the
    moment between the relay having the message and the sender hearing so."""

    received: list[bytes] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    hold: bool = False  # until a test asks, it answers at once

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append(envelope.content)
        self.arrived.set()
        if self.hold:
            await asyncio.sleep(20)  # the consumer is killed meanwhile
        return "250 Message accepted for delivery"


@pytest.fixture
def queued(
    databases: DatabaseFactory, ratelimit_storage_url: str, tmp_path: Path
) -> Iterator[tuple[Any, HoldingMailbox, int]]:
    """An app (what a web worker would be) with a real queue, and its holding mailbox."""
    mailbox = HoldingMailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    queue_url = (
        ratelimit_storage_url
        if databases.kind == "postgresql"
        else f"sqlite:///{tmp_path / 'tasks.sqlite3'}"
    )
    settings = make_settings(
        databases.create("task_faults"),
        port,
        ratelimit_storage_url=ratelimit_storage_url,
        instance_path=tmp_path,
        task_queue_url=queue_url,
        task_check_in_seconds=0.2,
    )
    app = create_app(settings)
    yield app, mailbox, port
    get_database(app).engine.dispose()
    controller.stop()


def start_consumer(
    settings: Settings, log: Path, *, code: str | None = None
) -> subprocess.Popen[bytes]:
    """``flask --app app tasks worker`` reading ``settings`` (``code`` instead of ``-m flask``:
    the same command with something patched first)."""
    env = environment(
        settings,
        KEYS_TASK_QUEUE_URL=settings.task_queue_url,
        KEYS_TASK_CHECK_IN_SECONDS=str(settings.task_check_in_seconds),
    )
    start = ["-c", code] if code is not None else ["-m", "flask"]
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, *start, "--app", "app", "tasks", "worker"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def descendants(pid: int) -> set[int]:
    """Every process started by ``pid``, and by those, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def kill_consumer(consumer: subprocess.Popen[bytes]) -> set[int]:
    """SIGKILL the consumer process alone, as the kernel's OOM killer or a crash would; its
    processes must follow by themselves. Returns them."""
    children = descendants(consumer.pid)
    os.kill(consumer.pid, signal.SIGKILL)
    consumer.wait(timeout=30)
    deadline = time.monotonic() + 15
    while alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    return children


def stop(consumer: subprocess.Popen[bytes]) -> None:
    if consumer.poll() is None:
        consumer.send_signal(signal.SIGINT)
        try:
            consumer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait()


def task_row(engine: sa.Engine, name: str) -> tasks.Task:
    with Session(engine) as session:
        return session.exec(select(tasks.Task).where(tasks.Task.name == name)).one()


def test_a_consumer_killed_mid_label_run_leaves_it_to_the_next_which_prints_it_once(
    queued, tmp_path
):
    app, _mailbox, _port = queued
    settings = app.extensions["keys_settings"]
    database = get_database(app)
    engine = database.engine
    with database.transaction() as session:
        stock_famous_project(session, {USB_A: PARCELS, USB_C: PARCELS})
        references = {redeem_parcel(session, settings)[1].reference for _ in range(PARCELS)}
    with database.transaction() as session:  # as the shipping desk's request does
        claim_ids = list(session.exec(select(Claim.id)).all())
        run = label_runs.start_run(session=session, actor=ACTOR, claim_ids=claim_ids, layout="4x6")
        tasks.enqueue(session=session, name=label_runs.RENDER_TASK, subject_id=run.id)
    run_id = run.id

    first = start_consumer(settings, tmp_path / "first.log", code=SMALL_CHUNKS)
    try:
        wait_for(lambda: rendering_part_way(engine), "pages were done", None)
        children = kill_consumer(first)
    finally:
        stop(first)
    assert children, "the consumer rendered with worker processes"
    assert alive(children) == set(), "processes of the killed consumer live on"
    with Session(engine) as session:
        dead = session.get(LabelRun, run_id)
        assert dead.status == "rendering" and dead.pdf is None
        assert {c.status for c in session.exec(select(Claim)).all()} == {"redeemed"}
        assert actions(session)["labels.printed"] == 0

    second = start_consumer(settings, tmp_path / "second.log", code=SMALL_CHUNKS)
    try:
        wait_for(
            lambda: True if task_row(engine, label_runs.RENDER_TASK).status == "done" else None,
            "the next consumer finished the run",
            second,
        )
    finally:
        stop(second)

    task = task_row(engine, label_runs.RENDER_TASK)
    assert (task.status, task.attempts) == ("done", 2)
    with Session(engine) as session:
        done = session.get(LabelRun, run_id)
        assert (done.status, done.printed, done.skipped) == ("done", PARCELS, [])
        pages = [page.extract_text() for page in PdfReader(io.BytesIO(done.pdf)).pages]
        assert {c.status for c in session.exec(select(Claim)).all()} == {"label_printed"}
        events = actions(session)
        assert (events["labels.run_started"], events["labels.printed"]) == (1, 1)
        assert events["claim.label_printed"] == PARCELS
    assert len(pages) == 2 * PARCELS
    on_pages = Counter(ref for text in pages for ref in references if ref in text)
    assert on_pages == dict.fromkeys(references, 2)  # every parcel, none twice


def test_a_consumer_killed_after_the_relay_took_a_message_does_not_send_it_twice(queued, tmp_path):
    app, mailbox, _port = queued
    settings = app.extensions["keys_settings"]
    database = get_database(app)
    with database.transaction() as session:
        message = SMTPMailer().send(
            session=session,
            mail=Mail(recipient="ada@example.org", subject="Hi", body="Hello", purpose="test"),
        )
    assert mailbox.received == []  # the request's commit opened no SMTP connection

    mailbox.hold = True
    first = start_consumer(settings, tmp_path / "first.log", code=SMALL_CHUNKS)
    try:
        assert mailbox.arrived.wait(timeout=60), "the consumer never reached the relay"
        kill_consumer(first)
    finally:
        stop(first)
    with Session(database.engine) as session:
        held = session.get(OutboxMessage, message.id)
        assert held.handed_over_at is not None and held.sent_at is None

    second = start_consumer(settings, tmp_path / "second.log", code=SMALL_CHUNKS)
    try:
        wait_for(
            lambda: True if task_row(database.engine, "mail.deliver").status == "failed" else None,
            "the next consumer judged the message",
            second,
        )
    finally:
        stop(second)

    assert len(mailbox.received) == 1  # the person got it once, not twice
    with Session(database.engine) as session:
        judged = session.get(OutboxMessage, message.id)
        assert judged.failed_at is not None and judged.last_error == UNCERTAIN
    assert task_row(database.engine, "mail.deliver").error == UNCERTAIN
