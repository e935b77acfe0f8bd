"""Background work: a ledger of tasks in the database, carried to consumers by Huey.

The database is the truth and Huey the carrier. ``enqueue`` writes a ``task`` row in the
caller's transaction and, once that commits, hands the row's id to Huey: a SQLite file in
``instance/`` on one machine, Redis for several (``KEYS_TASK_QUEUE_URL``). A consumer
(``flask --app app tasks worker``) takes the id, claims the row with a conditional UPDATE (a
task handed over twice runs once), runs the named handler in an app context and records the
outcome: done, waiting for a retry with back-off, or failed with a reason staff can read.

Every few seconds each consumer checks in. It refreshes the heartbeat of the tasks it runs and
offers Huey again whatever is due and not moving: a task whose hand-over failed (Redis or the
queue file away at commit), a task waiting for its retry, a task whose consumer stopped
checking in (killed with SIGKILL, its machine gone). So nothing is lost; handlers make their
effects idempotent, so a task taken over is not done twice. Tasks carry at most one row id,
never personal data. Periodic jobs are scheduled by Huey's own scheduler, and each becomes a
row once per slot however many consumers fire it.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import huey
import redis
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlmodel import Field, Session, SQLModel, col, select

from core.after_commit import on_commit
from core.db import Database, UTCDateTime, utcnow
from core.errors import DomainError
from core.lifecycle import Lifecycle, Move
from core.settings import Settings

_EXTENSION = "keys_tasks"
_SESSION_KEY = "keys_tasks"
_REASON_LENGTH = 500
_log = logging.getLogger("keys.tasks")


class TaskFailed(Exception):
    """A handler's permanent failure: retrying cannot help (the row it names is gone, the
    address was refused). The message is the reason staff read, so it names no person."""


class TaskNotFound(DomainError):
    status_code = 404
    title = "No such task"


class TaskRefused(DomainError):
    status_code = 409
    title = "That task cannot be retried"


class TaskStatus(enum.StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class TaskAction(enum.StrEnum):
    START = "start"  # a consumer claims it
    TAKE_OVER = "take_over"  # its consumer stopped checking in
    FINISH = "finish"
    POSTPONE = "postpone"  # failed this time; back-off, then again
    FAIL = "fail"
    RETRY = "retry"  # staff ask for another go


TASK_LIFECYCLE: Lifecycle[TaskStatus, TaskAction] = Lifecycle(
    TaskStatus,
    {
        TaskAction.START: Move(
            frozenset({TaskStatus.WAITING}),
            TaskStatus.RUNNING,
            "{subject} is {status}: only a waiting task can start.",
        ),
        TaskAction.TAKE_OVER: Move(
            frozenset({TaskStatus.RUNNING}),
            TaskStatus.RUNNING,
            "{subject} is {status}: only a running task can be taken over.",
        ),
        TaskAction.FINISH: Move(
            frozenset({TaskStatus.RUNNING}),
            TaskStatus.DONE,
            "{subject} is {status}: only a running task can finish.",
        ),
        TaskAction.POSTPONE: Move(
            frozenset({TaskStatus.RUNNING}),
            TaskStatus.WAITING,
            "{subject} is {status}: only a running task can be postponed.",
        ),
        TaskAction.FAIL: Move(
            frozenset({TaskStatus.RUNNING}),
            TaskStatus.FAILED,
            "{subject} is {status}: only a running task can fail.",
        ),
        TaskAction.RETRY: Move(
            frozenset({TaskStatus.FAILED}),
            TaskStatus.WAITING,
            "{subject} is {status}: only a failed task can be retried.",
            "{subject} was retried a moment ago by someone else.",
        ),
    },
    refused=TaskRefused,
)


# A task in one of these may yet run; nothing else needs starting for its subject.
LIVE_STATUSES = (TaskStatus.WAITING.value, TaskStatus.RUNNING.value)


class Task(SQLModel, table=True):
    """One piece of background work and what became of it."""

    __tablename__ = "task"
    __table_args__ = (
        sa.Index("ix_task_status_run_after", "status", "run_after"),
        sa.UniqueConstraint("slot", name="uq_task_slot"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=80)
    subject_id: int | None = None  # the one row it works on; never personal data
    status: str = Field(default=TaskStatus.WAITING.value, max_length=20)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    run_after: datetime = Field(sa_type=UTCDateTime, nullable=False)
    offered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    max_attempts: int = 1
    consumer: str = Field(default="", max_length=80)
    error: str = Field(default="", max_length=_REASON_LENGTH)
    # A periodic job's name and time slot: however many consumers fire it, one row.
    slot: str | None = Field(default=None, max_length=120)


class TaskConsumer(SQLModel, table=True):
    """A consumer process and when it last checked in."""

    __tablename__ = "task_consumer"

    id: str = Field(primary_key=True, max_length=80)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    checked_in_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


@dataclass(frozen=True)
class Handler:
    run: Callable[[int | None], None]
    attempts: int
    # Before staff retry a failed task: let its subject be worked on again.
    on_retry: Callable[[Session, int | None], None] | None = None


@dataclass(frozen=True)
class Periodic:
    name: str  # a registered handler
    schedule: Callable[[datetime], bool]  # a huey.crontab
    every: timedelta  # the slot a firing belongs to


def backoff(attempt: int) -> timedelta:
    """How long a task waits after its ``attempt``-th failure: 30 s, 1, 2, 4 … 60 minutes."""
    return timedelta(seconds=min(30 * 2 ** max(attempt - 1, 0), 3600))


# --- enqueueing (web requests, commands, tasks) ---------------------------------------------


def enqueue(
    *,
    session: Session,
    name: str,
    subject_id: int | None = None,
    slot: str | None = None,
) -> Task:
    """Record ``name`` to run on ``subject_id`` once this transaction commits; a rollback
    forgets it. The caller's request never waits for the work (nor for the carrier)."""
    queue: TaskQueue | None = session.info.get(_SESSION_KEY)
    handler = queue.handlers.get(name) if queue is not None else None
    now = utcnow()
    task = Task(
        name=name,
        subject_id=subject_id,
        created_at=now,
        run_after=now,
        max_attempts=handler.attempts if handler is not None else 5,
        slot=slot,
    )
    session.add(task)
    session.flush()
    if queue is not None:  # otherwise a consumer's check-in offers it
        task_id = task.id or 0
        on_commit(session, lambda: queue.offer(task_id))
    return task


# --- the queue -------------------------------------------------------------------------------


class TaskQueue:
    """Huey, the handlers it may run and the periodic jobs it schedules, for one app."""

    def __init__(self, app: Flask, settings: Settings, database: Database) -> None:
        self.app = app
        self.database = database
        self.settings = settings
        self.handlers: dict[str, Handler] = {}
        self.check_in_every = timedelta(seconds=settings.task_check_in_seconds)
        # A running task whose consumer missed this many check-ins is taken over.
        self.stale_after = 6 * self.check_in_every
        self.huey = _create_huey(settings)
        self.in_process = isinstance(self.huey, huey.MemoryHuey)
        self._silent_until = 0.0

        @self.huey.task(name="run_task")
        def run_task(task_id: int) -> None:
            with self.app.app_context():
                self.run(task_id, consumer=_CONSUMER_ID)

        self._run_task = run_task

    def register(
        self,
        name: str,
        run: Callable[[int | None], None],
        *,
        attempts: int,
        on_retry: Callable[[Session, int | None], None] | None = None,
    ) -> None:
        """Let consumers run ``run(subject_id)`` for tasks called ``name``: in an app context,
        in transactions of its own; raising ``TaskFailed`` ends it, anything else is retried
        until ``attempts`` are spent."""
        self.handlers[name] = Handler(run, attempts, on_retry)

    def schedule(self, name: str, schedule: Any, every: timedelta) -> None:
        """Run the registered ``name`` at the crontab ``schedule`` (UTC); ``every`` is the
        shortest time between two runs, which names the slot."""
        periodic = Periodic(name, schedule, every)

        def fire() -> None:
            with self.app.app_context():
                self.fire(periodic)

        fire.__name__ = f"periodic_{name.replace('.', '_')}"
        self.huey.periodic_task(schedule, name=fire.__name__)(fire)

    def fire(self, periodic: Periodic) -> None:
        """Record one run of a periodic job for the current slot (once, however many
        consumers fire it) and offer it."""
        now = utcnow()
        slot_start = datetime.fromtimestamp(
            now.timestamp() // periodic.every.total_seconds() * periodic.every.total_seconds(),
            tz=now.tzinfo,
        )
        slot = f"{periodic.name}@{slot_start.isoformat(timespec='minutes')}"
        try:
            with self.database.transaction() as session:
                if session.exec(select(Task.id).where(Task.slot == slot)).first() is None:
                    enqueue(session=session, name=periodic.name, slot=slot)
        except sa.exc.IntegrityError:
            pass  # another consumer recorded this slot a moment ago

    # After the carrier failed once, this process leaves tasks to the check-ins for so long,
    # instead of each request waiting for a silent Redis in turn.
    SILENCE = 10.0

    def offer(self, task_id: int) -> None:
        """Hand a committed task to Huey; if that fails the row waits for a check-in."""
        if time.monotonic() < self._silent_until:
            return
        try:
            self.huey.enqueue(self._run_task.s(task_id))
        except Exception:  # Redis or the queue file away: the ledger keeps it
            _log.warning("task %s waits for a check-in: the queue took nothing", task_id)
            self._silent_until = time.monotonic() + self.SILENCE

    # --- in a consumer ---

    def run(self, task_id: int, *, consumer: str) -> None:
        """Claim the task (if nobody else runs it), run its handler, record the outcome."""
        task = self._claim(task_id, consumer)
        if task is None:
            return
        handler = self.handlers.get(task.name)
        try:
            if handler is None:
                raise TaskFailed(f"No handler for {task.name!r} in this version of the app.")
            handler.run(task.subject_id)
        except TaskFailed as failure:
            _log.warning("task %s (%s) failed: %s", task_id, task.name, failure)
            self._end(task_id, TaskAction.FAIL, reason=str(failure))
        except Exception as error:  # anything else may pass: try again later
            _log.exception("task %s (%s) raised", task_id, task.name)
            reason = f"{type(error).__name__} (details in the consumer's log)"
            again = task.attempts < task.max_attempts
            self._end(task_id, TaskAction.POSTPONE if again else TaskAction.FAIL, reason=reason)
        else:
            self._end(task_id, TaskAction.FINISH, reason="")

    def _claim(self, task_id: int, consumer: str) -> Task | None:
        now = utcnow()
        with self.database.transaction() as session:
            claimed = session.execute(
                sa.update(Task)
                .where(
                    col(Task.id) == task_id,
                    sa.or_(
                        sa.and_(
                            col(Task.status).in_(
                                TASK_LIFECYCLE.statuses_allowing(TaskAction.START)
                            ),
                            col(Task.run_after) <= now,
                        ),
                        self._abandoned(now),
                    ),
                )
                .values(
                    status=TaskStatus.RUNNING.value,
                    started_at=now,
                    heartbeat_at=now,
                    attempts=col(Task.attempts) + 1,
                    consumer=consumer,
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            task = session.get(Task, task_id)
            if task is not None:
                session.expunge(task)
            return task

    def _abandoned(self, now: datetime) -> sa.ColumnElement[bool]:
        """Running, but its consumer stopped refreshing the heartbeat: another may take it."""
        return sa.and_(
            col(Task.status).in_(TASK_LIFECYCLE.statuses_allowing(TaskAction.TAKE_OVER)),
            col(Task.heartbeat_at) < now - self.stale_after,
        )

    def _end(self, task_id: int, action: TaskAction, *, reason: str) -> None:
        now = utcnow()
        with self.database.transaction() as session:
            task = session.get(Task, task_id)
            if task is None or not TASK_LIFECYCLE.allows(action, task.status):
                return
            task.status = TASK_LIFECYCLE.goes_to(action, task.status, subject=f"task {task_id}")
            task.error = reason[:_REASON_LENGTH]
            if action is TaskAction.POSTPONE:
                task.run_after = now + backoff(task.attempts)
                task.offered_at = None
            else:
                task.finished_at = now

    def check_in(self, consumer: str, started_at: datetime) -> int:
        """Say this consumer is alive, keep its tasks' heartbeats fresh, and offer Huey again
        what is due and not moving; returns how many tasks were offered."""
        now = utcnow()
        with self.database.transaction() as session:
            row = session.get(TaskConsumer, consumer)
            if row is None:
                row = TaskConsumer(
                    id=consumer,
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                    started_at=started_at,
                    checked_in_at=now,
                )
                session.add(row)
            row.checked_in_at = now
            session.execute(
                sa.update(Task)
                .where(col(Task.consumer) == consumer, col(Task.status) == TaskStatus.RUNNING)
                .values(heartbeat_at=now)
                .execution_options(synchronize_session=False)
            )
            session.execute(
                sa.delete(TaskConsumer).where(
                    col(TaskConsumer.checked_in_at) < now - timedelta(days=1)
                )
            )
            due = session.exec(
                select(Task.id)
                .where(
                    sa.or_(
                        # Not taken for a while after it was due (its first offer is
                        # the enqueuer's, unrecorded) or since a check-in offered it.
                        sa.and_(
                            col(Task.status) == TaskStatus.WAITING,
                            col(Task.run_after) <= now - self.stale_after,
                            sa.or_(
                                col(Task.offered_at).is_(None),
                                col(Task.offered_at) < now - self.stale_after,
                            ),
                        ),
                        self._abandoned(now),
                    )
                )
                .order_by(col(Task.id))
                .limit(200)
            ).all()
            if due:
                session.execute(sa.update(Task).where(col(Task.id).in_(due)).values(offered_at=now))
        for task_id in due:
            self.offer(task_id or 0)
        return len(due)

    def drain(self) -> int:
        """Run what Huey holds in this process until it is empty (``memory://`` queues in
        tests); returns how many messages were taken."""
        taken = 0
        while (message := self.huey.dequeue()) is not None:
            self.huey.execute(message)
            taken += 1
        return taken


_CONSUMER_ID = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _create_huey(settings: Settings) -> huey.Huey:
    url = settings.task_queue_url
    scheme, _, rest = url.partition("://")
    if scheme == "redis":
        # Half-second waits, as for the rate limits: a silent Redis must not hold a request.
        # A consumer's blocking read of an empty queue ends well before that.
        pool = redis.ConnectionPool.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return huey.RedisHuey(
            "keys", connection_pool=pool, read_timeout=0.2, results=False, utc=True
        )
    if scheme == "sqlite":
        path = Path(rest.removeprefix("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return huey.SqliteHuey("keys", filename=str(path), results=False, utc=True)
    # memory:// holds tasks until drain(); immediate:// runs each at its enqueuer's commit.
    return huey.MemoryHuey("keys", results=False, utc=True, immediate=scheme == "immediate")


def init_app(app: Flask, settings: Settings, database: Database) -> TaskQueue:
    """Create the app's queue; sessions made by ``database`` enqueue into it."""
    queue = TaskQueue(app, settings, database)
    database.sessionmaker.configure(info={_SESSION_KEY: queue})
    app.extensions[_EXTENSION] = queue
    return queue


def attach(session: Session, queue: TaskQueue) -> None:
    """Let a session made elsewhere (a test's) offer the tasks it enqueues to ``queue``."""
    session.info[_SESSION_KEY] = queue


def get_queue(app: Flask | None = None) -> TaskQueue:
    queue: TaskQueue = (app or current_app).extensions[_EXTENSION]
    return queue


# --- reading the ledger (health, the staff page) ----------------------------------------------


@dataclass(frozen=True)
class QueueStatus:
    waiting: int  # due now and not started
    oldest_waiting_seconds: int | None
    consumer_checked_in_seconds_ago: int | None  # None: no consumer ever checked in
    in_process: bool  # no consumers: tasks run in the process that enqueued them


def queue_status(*, session: Session, in_process: bool) -> QueueStatus:
    now = utcnow()
    waiting, oldest = session.exec(
        select(sa.func.count(), sa.func.min(Task.run_after)).where(
            col(Task.status) == TaskStatus.WAITING, col(Task.run_after) <= now
        )
    ).one()
    checked_in = session.exec(select(sa.func.max(TaskConsumer.checked_in_at))).one()
    return QueueStatus(
        waiting=int(waiting),
        oldest_waiting_seconds=_seconds(now, oldest),
        consumer_checked_in_seconds_ago=_seconds(now, checked_in),
        in_process=in_process,
    )


def _seconds(now: datetime, then: datetime | None) -> int | None:
    if then is None:
        return None
    if then.tzinfo is None:  # an aggregate SQLite hands back as it stored it
        then = then.replace(tzinfo=UTC)
    return max(0, int((now - then).total_seconds()))


def list_tasks(*, session: Session, limit: int = 100) -> dict[TaskStatus, list[Task]]:
    """Waiting, running and failed tasks, oldest first, for the staff page."""
    shown = (TaskStatus.WAITING, TaskStatus.RUNNING, TaskStatus.FAILED)
    tasks = session.exec(
        select(Task)
        .where(col(Task.status).in_([s.value for s in shown]))
        .order_by(col(Task.id))
        .limit(limit)
    ).all()
    return {status: [t for t in tasks if t.status == status] for status in shown}


def forget_finished(*, session: Session, older_than: timedelta) -> int:
    """Delete the rows of tasks done longer ago than ``older_than``; failed ones stay for
    staff. Returns how many."""
    gone = session.execute(
        sa.delete(Task).where(
            col(Task.status) == TaskStatus.DONE, col(Task.finished_at) < utcnow() - older_than
        )
    )
    return int(gone.rowcount)  # type: ignore[attr-defined]


def retry_task(*, session: Session, task_id: int) -> Task:
    """Staff give a failed task another go: waiting again, with fresh attempts."""
    task = session.get(Task, task_id, with_for_update=True)
    if task is None:
        raise TaskNotFound("There is no such task.")
    task.status = TASK_LIFECYCLE.goes_to(TaskAction.RETRY, task.status, subject=f"Task {task_id}")
    task.run_after = utcnow()
    task.offered_at = task.finished_at = None
    task.max_attempts = task.attempts + max(1, task.max_attempts // 2)
    queue: TaskQueue | None = session.info.get(_SESSION_KEY)
    handler = queue.handlers.get(task.name) if queue is not None else None
    if handler is not None and handler.on_retry is not None:
        handler.on_retry(session, task.subject_id)
    session.flush()
    if queue is not None:
        on_commit(session, lambda: queue.offer(task_id))
    return task


# --- the consumer ------------------------------------------------------------------------------


@contextmanager
def _checking_in(queue: TaskQueue) -> Iterator[None]:
    """Check in at once and then every few seconds, in a thread of the consumer process."""
    stop = threading.Event()
    started_at = utcnow()

    def loop() -> None:
        while not stop.is_set():
            try:
                with queue.app.app_context():
                    queue.check_in(_CONSUMER_ID, started_at)
            except Exception:  # the database away for a moment: try at the next beat
                _log.exception("check-in failed")
            stop.wait(queue.check_in_every.total_seconds())

    thread = threading.Thread(target=loop, name="keys-check-in", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@click.group("tasks")
def tasks_cli() -> None:
    """Background work."""


@tasks_cli.command("worker")
@click.option("--workers", default=4, show_default=True, help="Tasks run at once (threads).")
@with_appcontext
def worker_command(workers: int) -> None:
    """Run a consumer: take tasks from the queue, run periodic jobs, check in. Stop it with
    Ctrl-C or SIGTERM; a task it was running is taken over by another consumer."""
    queue = get_queue()
    if queue.in_process:
        raise click.ClickException(
            "KEYS_TASK_QUEUE_URL runs tasks in the process that enqueues them: no consumer."
        )
    logging.getLogger("huey").setLevel(logging.WARNING)
    consumer = queue.huey.create_consumer(
        workers=workers, worker_type="thread", initial_delay=0.05, backoff=1.2, max_delay=0.5
    )
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context(), _checking_in(queue):
        click.echo(f"Consumer {_CONSUMER_ID} with {workers} workers on {_where(queue)}")
        consumer.run()


def _where(queue: TaskQueue) -> str:
    return queue.settings.task_queue_url.partition("@")[2] or queue.settings.task_queue_url
