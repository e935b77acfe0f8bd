"""Mail goes through a real SMTP server on loopback; failures wait in the outbox for a retry."""

from __future__ import annotations

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
