"""Outgoing mail: one interface, two back-ends, every message recorded in the outbox table.

Services call ``mailer.send(session=…, mail=…)``. The SMTP back-end records the message and a
``mail.deliver`` task (core.tasks) that a consumer runs once the transaction commits; it keeps
only the envelope once delivered (bodies hold single-use links, which must not outlive their
use). Temporary failures are retried with back-off; a refusal is shown to staff. The outbox
back-end, for development and demo mode only, keeps every message in the database so a
newcomer can read it at ``/dev/outbox`` and click the link.

Bodies are plain-text Jinja templates, one a message, in ``templates/mail``: a service writes
``body=render("claim_code.txt", code=code, …)``. ``render`` needs no Flask app or request
(mail also leaves from the CLI and background jobs), refuses a variable it was not given, and
knows the ``core.formats`` filters (``{{ expires_at|day }}``) that pages use too.
"""

from __future__ import annotations

import email.utils
import functools
import json
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import click
import jinja2
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlmodel import Field, Session, SQLModel, col, select

from core import formats, tasks
from core.db import Database, UTCDateTime, get_database, utcnow
from core.settings import Settings, get_settings

_EXTENSION = "keys_mailer"
_ERROR_LENGTH = 500
TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "mail"


class OutboxMessage(SQLModel, table=True):
    """One message the app sent or tried to send."""

    __tablename__ = "outbox_message"
    __table_args__ = (sa.Index("ix_outbox_message_pending", "sent_at", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    purpose: str = Field(max_length=50)
    recipient: str = Field(max_length=320)
    subject: str = Field(max_length=200)
    body: str = Field(sa_type=sa.Text)
    attempts: int = 0
    last_error: str = Field(default="", max_length=_ERROR_LENGTH)
    # Set, committed, just before the relay gets the body; a consumer finding it set on an
    # unsent message knows a delivery died midway (core.mail.deliver).
    handed_over_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    failed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # for good


@dataclass(frozen=True)
class Mail:
    """A plain-text message to one recipient; ``purpose`` names it in the outbox."""

    recipient: str
    subject: str
    body: str
    purpose: str


@functools.cache
def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=False,  # noqa: S701 - plain-text mail, never HTML
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        # A line holding only a tag or comment leaves nothing behind in the message.
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(formats.FILTERS)
    return environment


def render(template: str, /, **context: object) -> str:
    """The body ``templates/mail/<template>`` writes with ``context``; a variable the
    template uses and ``context`` lacks is an error, not an empty string."""
    return _templates().get_template(template).render(context)


class Mailer(Protocol):
    def send(self, *, session: Session, mail: Mail) -> OutboxMessage: ...


def _record(session: Session, mail: Mail) -> OutboxMessage:
    message = OutboxMessage(
        created_at=utcnow(),
        purpose=mail.purpose,
        recipient=mail.recipient,
        subject=mail.subject,
        body=mail.body,
    )
    session.add(message)
    return message


class OutboxMailer:
    """Keeps messages in the database for reading in the browser (development and demo)."""

    def send(self, *, session: Session, mail: Mail) -> OutboxMessage:
        message = _record(session, mail)
        session.flush()
        return message


class SMTPMailer:
    """Records the message and a task that delivers it once the sender's transaction commits.

    Never in the request: a request that fails after ``send`` must not have told anyone what
    the database never recorded, a slow relay must not slow the page, and a sign-in form must
    not take longer for a registered address (which gets mail) than for a stranger's."""

    def send(self, *, session: Session, mail: Mail) -> OutboxMessage:
        message = _record(session, mail)
        session.flush()
        tasks.enqueue(session=session, name=DELIVER_TASK, subject_id=message.id)
        return message


DELIVER_TASK = "mail.deliver"
RETRY_TASK = "mail.retry"
# The one moment a delivery cannot be judged: the relay had the whole message and the consumer
# died before hearing back. Sending again could mail the person twice, so a person decides.
UNCERTAIN = (
    "The consumer stopped while the mail server was taking this message, so it may have "
    "arrived. It is not sent again by itself: retry it if the person did not get it."
)


class _Refused(Exception):
    """The relay answered with a permanent refusal (5xx): retrying cannot help."""


def deliver(*, database: Database, settings: Settings, message_id: int) -> None:
    """Deliver one outbox message, at most once.

    The message is marked handed over, in a committed transaction, just before the relay gets
    its body; it is marked sent (and its body dropped) once the relay says so. A temporary
    failure clears the mark and raises, so the task is retried; a permanent refusal marks the
    message failed (staff see it); finding the mark left by a consumer that died in between
    marks it uncertain instead of sending it twice."""
    with database.transaction() as session:
        message = session.get(OutboxMessage, message_id, with_for_update=True)
        if message is None:
            raise tasks.TaskFailed(f"Message {message_id} no longer exists.")
        if message.sent_at is not None or message.failed_at is not None:
            return
        uncertain = message.handed_over_at is not None
        if uncertain:
            message.failed_at, message.last_error = utcnow(), UNCERTAIN
        else:
            message.attempts += 1
    if uncertain:
        raise tasks.TaskFailed(UNCERTAIN)

    def mark(**values: object) -> None:
        with database.transaction() as session:
            session.execute(
                sa.update(OutboxMessage).where(col(OutboxMessage.id) == message_id).values(values)
            )

    try:
        _transmit(settings, message, handing_over=lambda: mark(handed_over_at=utcnow()))
    except _Refused as refusal:
        reason = f"The mail server refused it for good: {refusal}"[:_ERROR_LENGTH]
        mark(failed_at=utcnow(), handed_over_at=None, last_error=reason)
        raise tasks.TaskFailed(reason) from refusal
    except (OSError, smtplib.SMTPException) as error:
        mark(handed_over_at=None, last_error=f"{type(error).__name__}: {error}"[:_ERROR_LENGTH])
        raise
    mark(sent_at=utcnow(), body="", last_error="")


def _transmit(
    settings: Settings, message: OutboxMessage, *, handing_over: Callable[[], None]
) -> None:
    email = EmailMessage()
    email["From"] = settings.mail_from
    email["To"] = message.recipient
    email["Subject"] = message.subject
    # The message's own key: a relay or mailbox that drops duplicates by Message-ID drops a
    # second copy of this one.
    created = int(message.created_at.timestamp())
    email["Message-ID"] = f"<outbox-{message.id}-{created}@{settings.rp_id}>"
    email.set_content(message.body)
    with smtplib.SMTP(
        settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
    ) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password)
        smtp.ehlo_or_helo_if_needed()
        _expect(smtp.mail(smtp_address(settings.mail_from)), 250)
        _expect(smtp.rcpt(message.recipient), 250, 251)
        handing_over()
        _expect(smtp.data(email.as_bytes()), 250)


def smtp_address(header: str) -> str:
    return email.utils.parseaddr(header)[1]


def _expect(reply: tuple[int, bytes], *accepted: int) -> None:
    code, text = reply
    if code in accepted:
        return
    words = text.decode("utf-8", "replace")[:200]
    if 500 <= code < 600:
        raise _Refused(f"{code} {words}")
    raise smtplib.SMTPResponseException(code, words)


def pending_messages(*, session: Session, limit: int = 500) -> list[int]:
    """Messages neither sent nor failed nor being delivered by a task: what the relay never
    took (a task that ran out of attempts, mail recorded while no consumer ran)."""
    live = select(tasks.Task.id).where(
        tasks.Task.name == DELIVER_TASK,
        col(tasks.Task.subject_id) == OutboxMessage.id,
        col(tasks.Task.status).in_(tasks.LIVE_STATUSES),
    )
    return [
        message_id or 0
        for message_id in session.exec(
            select(OutboxMessage.id)
            .where(
                col(OutboxMessage.sent_at).is_(None),
                col(OutboxMessage.failed_at).is_(None),
                col(OutboxMessage.handed_over_at).is_(None),
                col(OutboxMessage.body) != "",
                ~sa.exists(live),
            )
            .order_by(col(OutboxMessage.id))
            .limit(limit)
        ).all()
    ]


def retry_pending(*, session: Session) -> int:
    """Give every pending message a delivery task again; returns how many."""
    pending = pending_messages(session=session)
    for message_id in pending:
        tasks.enqueue(session=session, name=DELIVER_TASK, subject_id=message_id)
    return len(pending)


def forget_failure(session: Session, message_id: int | None) -> None:
    """Staff retry a failed delivery: the message may be tried once more."""
    message = session.get(OutboxMessage, message_id)
    if message is not None and message.sent_at is None:
        message.failed_at = message.handed_over_at = None


def failed_messages(*, session: Session, limit: int = 50) -> list[OutboxMessage]:
    """Mail the relay refused for good, or may not have taken: staff decide what to do."""
    return list(
        session.exec(
            select(OutboxMessage)
            .where(col(OutboxMessage.failed_at).is_not(None), col(OutboxMessage.sent_at).is_(None))
            .order_by(col(OutboxMessage.failed_at).desc())
            .limit(limit)
        ).all()
    )


def deliver_task(message_id: int | None) -> None:
    deliver(database=get_database(), settings=get_settings(), message_id=message_id or 0)


def retry_task(_subject: int | None) -> None:
    with get_database().transaction() as session:
        retry_pending(session=session)


def recent_outbox(*, session: Session, limit: int = 50) -> list[OutboxMessage]:
    """The newest messages first, for the development outbox page."""
    return list(
        session.exec(
            select(OutboxMessage)
            .order_by(OutboxMessage.id.desc())  # type: ignore[union-attr]
            .limit(limit)
        ).all()
    )


def create_mailer(settings: Settings) -> Mailer:
    return OutboxMailer() if settings.mail_backend == "outbox" else SMTPMailer()


def init_app(app: Flask, mailer: Mailer) -> None:
    app.extensions[_EXTENSION] = mailer


def get_mailer() -> Mailer:
    mailer: Mailer = current_app.extensions[_EXTENSION]
    return mailer


@click.group("mail")
def mail_cli() -> None:
    """Outgoing mail."""


@mail_cli.command("send-pending")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@with_appcontext
def send_pending_command(as_json: bool) -> None:
    """Deliver now, in this process, every message the relay has not taken (the periodic
    mail.retry task does the same through the queue)."""
    if not isinstance(get_mailer(), SMTPMailer):
        raise click.ClickException(
            "The outbox back-end keeps mail in the database; nothing to send."
        )
    database, settings = get_database(), get_settings()
    with database.transaction() as session:
        pending = pending_messages(session=session)
    sent = failing = 0
    for message_id in pending:
        try:
            deliver(database=database, settings=settings, message_id=message_id)
            sent += 1
        except (OSError, smtplib.SMTPException, tasks.TaskFailed):
            failing += 1
    report = {"sent": sent, "still_failing": failing}
    click.echo(json.dumps(report) if as_json else f"Sent {sent}; {failing} still failing.")
