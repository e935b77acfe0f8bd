"""The staff page of background tasks, through the test client, as an admin uses it."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from accounts.models import StaffRole
from core.audit import AuditEvent
from core.db import utcnow
from core.mail import DELIVER_TASK, OutboxMessage
from core.tasks import Task, TaskConsumer, TaskStatus
from jobs.views import DESCRIPTIONS, duration
from tests.factories import csrf_token, make_maintainer, make_staff, sign_in_as

PAGE = "/staff/tasks"


def text(response) -> str:
    return str(response.get_data(as_text=True))


def add_task(
    session: Session,
    *,
    name: str = "labels.render",
    status: TaskStatus = TaskStatus.FAILED,
    subject_id: int | None = 12,
    attempts: int = 3,
    max_attempts: int = 3,
    error: str = "",
) -> Task:
    now = utcnow()
    task = Task(
        name=name,
        subject_id=subject_id,
        created_at=now - timedelta(minutes=5),
        run_after=now - timedelta(minutes=5),
        status=status.value,
        attempts=attempts,
        max_attempts=max_attempts,
        error=error,
    )
    session.add(task)
    session.flush()
    return task


def as_admin(client, session):
    admin = make_staff(session, roles=[StaffRole.ADMIN])
    sign_in_as(client, admin)
    return admin


def retry(client, task_id: int):
    return client.post(
        f"/staff/tasks/{task_id}/retry", data={"csrf_token": csrf_token(client, PAGE)}
    )


def test_an_admin_sees_a_failed_task_its_reason_and_a_retry_button(client, session):
    task = add_task(session, error="The label printer template is missing.")
    add_task(session, name="claims.expire", status=TaskStatus.WAITING, subject_id=None)
    as_admin(client, session)

    response = client.get(PAGE)

    assert response.status_code == 200
    page = text(response)
    failed = re.search(r'data-testid="failed-tasks".*?</table>', page, re.DOTALL)
    assert failed, "no table of failed tasks"
    assert "Render a label run" in failed.group(0)
    assert "label run 12" in failed.group(0)
    assert "3 of 3" in failed.group(0)
    assert "The label printer template is missing." in failed.group(0)
    assert f'action="/staff/tasks/{task.id}/retry"' in failed.group(0)
    assert f"Retry task {task.id}" in failed.group(0)
    assert 'name="csrf_token"' in failed.group(0)
    waiting = re.search(r'data-testid="waiting-tasks".*?</table>', page, re.DOTALL)
    assert waiting and "Expire unredeemed codes" in waiting.group(0)
    assert "Nothing is running." in page
    # Tests run tasks as they are enqueued, in the process: no consumer is needed.
    assert "Tasks run in the web process" in page


def test_an_empty_queue_says_so(client, session):
    as_admin(client, session)
    page = text(client.get(PAGE))
    for sentence in ("Nothing is waiting.", "Nothing is running.", "No task has failed."):
        assert sentence in page


def test_unknown_task_names_are_shown_as_they_are(client, session):
    add_task(session, name="reports.rebuild", subject_id=4)
    as_admin(client, session)
    page = text(client.get(PAGE))
    assert "reports.rebuild" in page and "row 4" in page


def test_every_registered_task_has_a_description(app):
    from core.tasks import get_queue

    assert set(get_queue(app).handlers) <= DESCRIPTIONS.keys()


def test_mail_that_was_not_delivered_is_listed_with_its_recipient(client, session):
    session.add(
        OutboxMessage(
            created_at=utcnow(),
            purpose="claim_code",
            recipient="ada@example.org",
            subject="Your claim code",
            body="…",
            attempts=1,
            failed_at=utcnow(),
            last_error="The mail server refused it for good: 550 no such mailbox",
        )
    )
    session.flush()
    as_admin(client, session)

    page = text(client.get(PAGE))

    mail = re.search(r'data-testid="undelivered-mail".*?</table>', page, re.DOTALL)
    assert mail, "no table of undelivered mail"
    for shown in ("claim_code", "ada@example.org", "Your claim code", "550 no such mailbox"):
        assert shown in mail.group(0)


def test_retrying_a_failed_task_gives_it_another_go_and_is_audited(app_factory, session):
    # memory:// holds tasks until drained, so the retried task is seen waiting.
    app = app_factory(task_queue_url="memory://")
    client = app.test_client()
    task = add_task(session, attempts=3, max_attempts=3, error="Boom")
    admin = as_admin(client, session)

    response = retry(client, task.id or 0)

    assert response.status_code == 302
    assert response.headers["Location"] == PAGE
    page = text(client.get(PAGE))
    assert f"Task {task.id} (render a label run) will run again shortly." in page
    session.expire_all()
    again = session.get(Task, task.id)
    assert again is not None
    assert again.status == TaskStatus.WAITING
    assert (again.attempts, again.max_attempts) == (3, 4)
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "task.retried")).one()
    assert (event.subject_kind, event.subject_id) == ("task", str(task.id))
    assert event.details == {"name": "labels.render"}
    assert event.actor_id == admin.id


def test_a_retried_delivery_is_sent(client, session, mailbox):
    message = OutboxMessage(
        created_at=utcnow(),
        purpose="claim_code",
        recipient="ada@example.org",
        subject="Your claim code",
        body="Your code is ABC.\n",
        attempts=8,
        failed_at=utcnow(),
        last_error="The mail server refused it for good: 550 mailbox full",
    )
    session.add(message)
    session.flush()
    task = add_task(session, name=DELIVER_TASK, subject_id=message.id, attempts=8, max_attempts=8)
    as_admin(client, session)

    assert retry(client, task.id or 0).status_code == 302

    # immediate:// runs the task as the request commits.
    assert [m["To"] for m in mailbox.messages] == ["ada@example.org"]
    session.expire_all()
    assert session.get(Task, task.id).status == TaskStatus.DONE
    sent = session.get(OutboxMessage, message.id)
    assert sent is not None and sent.sent_at is not None and sent.failed_at is None


@pytest.mark.parametrize("status", [TaskStatus.WAITING, TaskStatus.RUNNING, TaskStatus.DONE])
def test_only_a_failed_task_can_be_retried(client, session, status):
    task = add_task(session, status=status, attempts=1)
    as_admin(client, session)

    response = retry(client, task.id or 0)

    assert response.status_code == 409
    assert "That task cannot be retried" in text(response)
    assert f"Task {task.id} is {status.value}: only a failed task can be retried." in text(response)
    session.expire_all()
    assert session.get(Task, task.id).status == status
    assert not session.exec(select(AuditEvent).where(AuditEvent.action == "task.retried")).all()


def test_an_unknown_task_is_not_found(client, session):
    as_admin(client, session)
    response = retry(client, 987_654)
    assert response.status_code == 404
    assert "There is no such task." in text(response)


def test_a_retry_without_its_csrf_token_is_refused(client, session):
    task = add_task(session)
    as_admin(client, session)
    response = client.post(f"/staff/tasks/{task.id}/retry")
    assert response.status_code == 400
    session.expire_all()
    assert session.get(Task, task.id).status == TaskStatus.FAILED


def test_other_staff_and_maintainers_are_refused(client, session):
    task = add_task(session)
    for person in (make_staff(session, roles=[StaffRole.PROGRAMME]), make_maintainer(session)):
        sign_in_as(client, person)
        assert client.get(PAGE).status_code == 403
        assert client.post(f"/staff/tasks/{task.id}/retry").status_code in (400, 403)


def test_the_staff_home_links_admins_to_the_page(client, session):
    as_admin(client, session)
    assert f'href="{PAGE}"' in text(client.get("/staff/"))
    sign_in_as(client, make_staff(session, roles=[StaffRole.SHIPPING]))
    assert f'href="{PAGE}"' not in text(client.get("/staff/"))


@pytest.mark.parametrize(
    ("checked_in", "says"),
    [
        (None, "No consumer has checked in."),
        (timedelta(seconds=10), "A consumer checked in under a minute ago."),
        (timedelta(minutes=10), "No consumer has checked in for 10 minutes."),
    ],
)
def test_the_page_says_when_a_consumer_last_checked_in(
    app_factory, session, tmp_path, checked_in, says
):
    app = app_factory(task_queue_url=f"sqlite:///{tmp_path / 'tasks.sqlite3'}")
    client = app.test_client()
    if checked_in is not None:
        session.add(
            TaskConsumer(
                id="host:1:abc",
                host="host",
                pid=1,
                started_at=utcnow() - timedelta(hours=1),
                checked_in_at=utcnow() - checked_in,
            )
        )
    add_task(session, status=TaskStatus.WAITING, subject_id=None, name="claims.expire")
    as_admin(client, session)

    page = text(client.get(PAGE))

    assert says in page
    assert "1 task; the oldest has waited 5 minutes" in page


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "under a minute"), (59, "under a minute"), (60, "1 minute"), (7_200, "2 hours")],
)
def test_durations_read_as_words(seconds, words):
    assert duration(seconds) == words
