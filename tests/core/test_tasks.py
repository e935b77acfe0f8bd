"""The task ledger: what a task becomes when it works, fails, names a row that is gone or loses
its consumer, and what the queue's health says. Tasks run in the test's process here (the
memory:// queue, drained by hand); tests/test_task_faults.py runs real consumers."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

from core import tasks
from core.db import utcnow
from core.tasks import Task, TaskConsumer
from distribution.shipping.label_runs import RENDER_TASK
from tests.conftest import free_port
from tests.factories import csrf_token, make_maintainer


@pytest.fixture
def queue(app_factory, session):
    """A queue whose carrier holds tasks until drained, with handlers of the test's own."""
    app = app_factory(task_queue_url="memory://")
    queue = tasks.get_queue(app)
    tasks.attach(session, queue)
    return queue


def rows(session, name):
    session.expire_all()
    return session.exec(select(Task).where(Task.name == name)).all()


def test_a_task_runs_once_its_transaction_commits_and_never_after_a_rollback(queue, session):
    ran: list[int | None] = []
    queue.register("test.record", ran.append, attempts=1)

    tasks.enqueue(session=session, name="test.record", subject_id=7)
    session.rollback()
    assert queue.drain() == 0 and rows(session, "test.record") == []

    tasks.enqueue(session=session, name="test.record", subject_id=8)
    assert queue.drain() == 0  # not before the commit
    session.commit()
    queue.drain()
    assert ran == [8]
    (task,) = rows(session, "test.record")
    assert (task.status, task.attempts, task.error) == ("done", 1, "")


def test_a_failing_task_backs_off_then_fails_with_a_reason_that_names_nobody(queue, session):
    def fail(_subject: int | None) -> None:
        raise ValueError("ada@example.org is unhappy")

    queue.register("test.fail", fail, attempts=2)
    tasks.enqueue(session=session, name="test.fail", subject_id=1)
    session.commit()
    queue.drain()

    (task,) = rows(session, "test.fail")
    assert (task.status, task.attempts) == ("waiting", 1)
    assert task.run_after - utcnow() > timedelta(seconds=20)  # 30 s back-off
    assert task.error == "ValueError (details in the consumer's log)"

    task.run_after = utcnow() - timedelta(seconds=1)  # the back-off passed
    session.commit()
    queue.run(task.id, consumer="test")
    (task,) = rows(session, "test.fail")
    assert (task.status, task.attempts) == ("failed", 2)
    assert "ada@" not in task.error


def test_a_task_naming_a_row_that_is_gone_ends_with_its_reason(queue, session):
    tasks.enqueue(session=session, name=RENDER_TASK, subject_id=999_999)
    session.commit()
    queue.drain()
    (task,) = rows(session, RENDER_TASK)
    assert (task.status, task.attempts) == ("failed", 1)  # not retried
    assert task.error == "Label run 999999 no longer exists."


def test_a_check_in_offers_what_the_carrier_lost_and_takes_over_a_dead_consumers_task(
    queue, session
):
    ran: list[int | None] = []
    queue.register("test.record", ran.append, attempts=3)
    now = utcnow()
    due = now - queue.stale_after - timedelta(seconds=1)  # and nobody took it since
    lost = Task(name="test.record", subject_id=1, created_at=due, run_after=due, max_attempts=3)
    fresh = Task(name="test.record", subject_id=4, created_at=now, run_after=now, max_attempts=3)
    orphan = Task(
        name="test.record",
        subject_id=2,
        created_at=now,
        run_after=now,
        status="running",
        attempts=1,
        max_attempts=3,
        consumer="dead",
        heartbeat_at=now - queue.stale_after - timedelta(seconds=1),
    )
    busy = Task(
        name="test.record",
        subject_id=3,
        created_at=now,
        run_after=now,
        status="running",
        attempts=1,
        max_attempts=3,
        consumer="alive",
        heartbeat_at=now,
    )
    session.add_all([lost, orphan, busy, fresh])
    session.commit()

    assert queue.check_in("this", now) == 2
    queue.drain()

    # The live consumer's task is left to it, and the one just enqueued to its first offer.
    assert sorted(ran) == [1, 2]
    assert {t.subject_id: t.status for t in rows(session, "test.record")} == {
        1: "done",
        2: "done",
        3: "running",
        4: "waiting",
    }
    assert session.get(TaskConsumer, "this") is not None


def test_a_periodic_job_fired_by_two_consumers_in_one_slot_runs_once(queue, session):
    ran: list[int | None] = []
    queue.register("test.hourly", ran.append, attempts=1)
    hourly = tasks.Periodic("test.hourly", lambda _now: True, timedelta(hours=1))

    queue.fire(hourly)
    queue.fire(hourly)  # another consumer, the same hour
    queue.drain()

    assert ran == [None]
    (task,) = rows(session, "test.hourly")
    assert task.slot is not None and task.slot.startswith("test.hourly@")


def test_the_health_check_reports_the_queue_and_a_silent_consumer(app_factory, session):
    app = app_factory(task_queue_url="memory://", task_consumer_silence_seconds=60)
    queue = tasks.get_queue(app)
    queue.in_process = False  # as with a real carrier: consumers must check in
    tasks.attach(session, queue)
    old = utcnow() - timedelta(minutes=3)
    session.add(Task(name="test.none", created_at=old, run_after=old))
    session.commit()
    client = app.test_client()

    silent = client.get("/healthz")
    assert silent.status_code == 503
    assert silent.get_json()["tasks"]["consumers"] == "silent"
    assert silent.get_json()["tasks"]["waiting"] == 1
    assert silent.get_json()["tasks"]["oldest_waiting_seconds"] >= 180

    session.add(TaskConsumer(id="c", host="h", pid=1, started_at=old, checked_in_at=utcnow()))
    session.commit()
    alive = client.get("/healthz")
    assert alive.status_code == 200 and alive.get_json()["tasks"]["consumers"] == "ok"


def test_with_the_carrier_away_a_request_still_commits_and_its_task_waits(
    app_factory, session, mailbox
):
    """Redis is not listening: the sign-in request answers as usual, its task is in the
    ledger, unoffered, for a consumer's check-in; nothing was mailed or lost."""
    app = app_factory(task_queue_url=f"redis://127.0.0.1:{free_port()}/0")
    make_maintainer(session, email="known@example.org")
    session.commit()
    client = app.test_client()
    token = csrf_token(client, "/sign-in")
    answer = client.post("/sign-in", data={"email": "known@example.org", "csrf_token": token})

    assert answer.status_code == 302
    (task,) = rows(session, "accounts.sign_in_link")
    assert (task.status, task.offered_at) == ("waiting", None)
    assert mailbox.messages == []
    assert session.exec(select(sa.func.count()).select_from(Task)).one() == 1


def test_finished_tasks_are_forgotten_after_a_week_and_failed_ones_kept(session):
    long_ago = utcnow() - timedelta(days=8)
    for status in ("done", "failed"):
        session.add(
            Task(
                name="test.old",
                status=status,
                created_at=long_ago,
                run_after=long_ago,
                finished_at=long_ago,
            )
        )
    session.commit()
    assert tasks.forget_finished(session=session, older_than=timedelta(days=7)) == 1
    assert [t.status for t in rows(session, "test.old")] == ["failed"]
