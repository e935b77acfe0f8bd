"""Mail goes through a real SMTP server on loopback; failures wait in the outbox for a retry."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlmodel import select

from core.mail import Mail, OutboxMailer, OutboxMessage, SMTPMailer, send_pending
from tests.conftest import free_port

WELCOME = Mail(
    recipient="someone@example.org",
    subject="Hello",
    body="Your link: http://localhost/sign-in/link/abc",
    purpose="test",
)


def test_smtp_delivers_once_committed_and_keeps_only_the_envelope(session, settings, mailbox):
    message = SMTPMailer(settings).send(session=session, mail=WELCOME)
    assert mailbox.messages == []  # nothing leaves before the sender's transaction commits
    session.commit()

    received = mailbox.to("someone@example.org")
    assert len(received) == 1
    assert received[0]["Subject"] == "Hello"
    assert received[0]["From"] == settings.mail_from
    assert "sign-in/link/abc" in received[0].get_content()
    stored = session.get(OutboxMessage, message.id)
    assert stored.sent_at is not None
    assert stored.body == ""  # the link must not outlive its delivery in the database
    assert stored.recipient == "someone@example.org"


def test_an_smtp_outage_leaves_the_message_pending_until_a_retry(session, settings, mailbox):
    down = settings.replace(smtp_port=free_port())  # nothing listens there
    message = SMTPMailer(down).send(session=session, mail=WELCOME)
    session.commit()
    session.refresh(message)
    assert message.sent_at is None
    assert "ConnectionRefusedError" in message.last_error
    assert mailbox.messages == []

    sent, failing = send_pending(session=session, mailer=SMTPMailer(settings))

    assert (sent, failing) == (1, 0)
    assert len(mailbox.to("someone@example.org")) == 1
    assert session.get(OutboxMessage, message.id).attempts == 2


def test_a_savepoint_released_is_not_the_transaction_committing(session, settings, mailbox):
    SMTPMailer(settings).send(session=session, mail=WELCOME)
    with session.begin_nested():  # as services do around a write that may be refused
        pass
    assert mailbox.messages == []
    session.commit()
    assert len(mailbox.to("someone@example.org")) == 1


def test_nothing_is_sent_for_a_transaction_that_rolls_back(session, settings, mailbox):
    SMTPMailer(settings).send(session=session, mail=WELCOME)
    session.rollback()
    session.commit()
    assert mailbox.messages == []
    assert session.exec(select(OutboxMessage)).all() == []


def test_the_outbox_backend_keeps_mail_readable(session, mailbox):
    message = OutboxMailer().send(session=session, mail=WELCOME)
    assert mailbox.messages == []
    stored = session.exec(select(OutboxMessage).where(OutboxMessage.id == message.id)).one()
    assert stored.body == WELCOME.body
    assert stored.sent_at is None


def test_the_send_pending_command_reports_json(app, session, settings, mailbox):
    SMTPMailer(settings.replace(smtp_port=free_port())).send(session=session, mail=WELCOME)
    session.commit()

    result = app.test_cli_runner().invoke(args=["mail", "send-pending", "--json"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == '{"sent": 1, "still_failing": 0}'
    assert len(mailbox.messages) == 1


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


def test_a_silent_relay_costs_one_timeout_then_mail_waits_for_the_retry(session, settings, mailbox):
    """Four parcels' mails after one commit: the first waits out the SMTP timeout, the others
    are left pending at once instead of waiting in turn; `mail send-pending` delivers all four
    once the relay answers."""
    with silent_relay() as port:
        mailer = SMTPMailer(settings.replace(smtp_port=port, smtp_timeout_seconds=0.5))
        messages = [mailer.send(session=session, mail=WELCOME) for _ in range(4)]
        session.commit()
    for message in messages:
        session.refresh(message)
    assert [m.sent_at for m in messages] == [None] * 4
    assert [m.attempts for m in messages] == [1, 0, 0, 0]
    assert "timed out" in messages[0].last_error

    sent, failing = send_pending(session=session, mailer=SMTPMailer(settings))

    assert (sent, failing) == (4, 0)
    assert len(mailbox.to("someone@example.org")) == 4
