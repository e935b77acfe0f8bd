"""Mail goes through a real SMTP server on loopback, from a task; failures wait for a retry."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
from sqlmodel import select

from core import tasks
from core.db import utcnow
from core.mail import (
    DELIVER_TASK,
    UNCERTAIN,
    Mail,
    OutboxMailer,
    OutboxMessage,
    SMTPMailer,
    deliver,
    failed_messages,
    pending_messages,
)
from tests.conftest import free_port
from tests.factories import database_on

WELCOME = Mail(
    recipient="someone@example.org",
    subject="Hello",
    body="Your link: http://localhost/sign-in/link/abc",
    purpose="test",
)


def sent_through(session, app):
    """An SMTP mailer whose mail tasks run in ``app`` (its relay settings) once
    ``session`` commits."""
    tasks.attach(session, tasks.get_queue(app))
    return SMTPMailer()


def task_of(session, message):
    return session.exec(
        select(tasks.Task).where(
            tasks.Task.name == DELIVER_TASK, tasks.Task.subject_id == message.id
        )
    ).one()


def test_smtp_delivers_once_committed_and_keeps_only_the_envelope(
    session, mailer, settings, mailbox
):
    message = mailer.send(session=session, mail=WELCOME)
    assert mailbox.messages == []  # nothing leaves before the sender's transaction commits
    assert task_of(session, message).status == "waiting"
    session.commit()

    received = mailbox.to("someone@example.org")
    assert len(received) == 1
    assert received[0]["Subject"] == "Hello"
    assert received[0]["From"] == settings.mail_from
    # The message's own key: the same message always carries the same Message-ID.
    assert received[0]["Message-ID"].startswith(f"<outbox-{message.id}-")
    assert "sign-in/link/abc" in received[0].get_content()
    stored = session.get(OutboxMessage, message.id)
    session.refresh(stored)
    assert stored.sent_at is not None and stored.handed_over_at is not None
    assert stored.body == ""  # the link must not outlive its delivery in the database
    assert stored.recipient == "someone@example.org"
    assert task_of(session, message).status == "done"


def test_an_smtp_outage_leaves_the_task_waiting_for_its_back_off(session, app_factory, mailbox):
    down = app_factory(smtp_port=free_port())  # nothing listens there
    message = sent_through(session, down).send(session=session, mail=WELCOME)
    session.commit()
    session.refresh(message)
    assert message.sent_at is None and message.handed_over_at is None
    assert "ConnectionRefusedError" in message.last_error
    task = task_of(session, message)
    session.refresh(task)
    assert (task.status, task.attempts) == ("waiting", 1)
    assert task.run_after > utcnow()  # tried again after the back-off, by a consumer
    assert mailbox.messages == []


def test_a_savepoint_released_is_not_the_transaction_committing(session, mailer, mailbox):
    mailer.send(session=session, mail=WELCOME)
    with session.begin_nested():  # as services do around a write that may be refused
        pass
    assert mailbox.messages == []
    session.commit()
    assert len(mailbox.to("someone@example.org")) == 1


def test_nothing_is_sent_for_a_transaction_that_rolls_back(session, mailer, mailbox):
    mailer.send(session=session, mail=WELCOME)
    session.rollback()
    session.commit()
    assert mailbox.messages == []
    assert session.exec(select(OutboxMessage)).all() == []
    assert session.exec(select(tasks.Task)).all() == []


def test_a_refused_address_is_marked_and_not_tried_again(session, mailer, mailbox):
    refused = Mail(recipient="gone@refused.example.org", subject="Hi", body="Hello", purpose="test")
    message = mailer.send(session=session, mail=refused)
    session.commit()

    session.refresh(message)
    assert message.sent_at is None and message.failed_at is not None
    assert "550" in message.last_error
    task = task_of(session, message)
    session.refresh(task)
    assert task.status == "failed" and "refused it for good" in task.error
    assert "gone@" not in task.error  # the task's reason names no person
    assert failed_messages(session=session) == [message]
    assert pending_messages(session=session) == []  # the retry job leaves it alone
    assert mailbox.messages == []


def test_a_delivery_that_died_after_the_hand_over_is_not_sent_again(session, mailer, app, mailbox):
    """The consumer died between giving the relay the message and hearing back: the mark it
    committed first says so, and nobody is mailed twice; staff see it and decide."""
    message = OutboxMailer().send(session=session, mail=WELCOME)  # no task yet
    message.handed_over_at = utcnow()
    session.commit()

    with pytest.raises(tasks.TaskFailed, match="may have arrived"), app.app_context():
        deliver(
            database=database_on(session),
            settings=app.extensions["keys_settings"],
            message_id=message.id,
        )

    session.refresh(message)
    assert message.failed_at is not None and message.last_error == UNCERTAIN
    assert mailbox.messages == []
    assert failed_messages(session=session) == [message]


def test_the_outbox_backend_keeps_mail_readable(session, mailbox):
    message = OutboxMailer().send(session=session, mail=WELCOME)
    assert mailbox.messages == []
    stored = session.exec(select(OutboxMessage).where(OutboxMessage.id == message.id)).one()
    assert stored.body == WELCOME.body
    assert stored.sent_at is None


def test_the_send_pending_command_delivers_what_waits_and_reports_json(
    app, app_factory, session, mailbox
):
    down = app_factory(smtp_port=free_port())
    message = sent_through(session, down).send(session=session, mail=WELCOME)
    session.commit()
    task = task_of(session, message)
    task.status, task.error = "failed", "out of attempts"  # as after a long outage
    session.commit()
    assert pending_messages(session=session) == [message.id]

    result = app.test_cli_runner().invoke(args=["mail", "send-pending", "--json"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == '{"sent": 1, "still_failing": 0}'
    assert len(mailbox.messages) == 1
    assert pending_messages(session=session) == []


def test_send_pending_refuses_with_the_outbox_backend(app_factory):
    demo = app_factory(environment="development", mail_backend="outbox", demo_mode=True)
    result = demo.test_cli_runner().invoke(args=["mail", "send-pending"])
    assert result.exit_code == 1
    assert "nothing to send" in result.output


@contextmanager
def silent_relay() -> Iterator[int]:
    """A relay that accepts connections and never says a word (not even its greeting)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def test_a_silent_relay_holds_a_consumer_not_a_request(session, app_factory, mailbox):
    """The relay says nothing: the mail task waits out the SMTP timeout and is postponed; the
    request that sent the mail only wrote two rows."""
    with silent_relay() as port:
        quiet = app_factory(smtp_port=port, smtp_timeout_seconds=0.5)
        message = sent_through(session, quiet).send(session=session, mail=WELCOME)
        session.commit()
    session.refresh(message)
    assert message.sent_at is None and "timed out" in message.last_error
    task = task_of(session, message)
    session.refresh(task)
    assert task.status == "waiting" and task.run_after > utcnow()
    assert mailbox.messages == []
