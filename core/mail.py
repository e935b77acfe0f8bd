"""Outgoing mail: one interface, two back-ends, every message recorded in the outbox table.

Services call ``mailer.send(session=…, mail=…)``. The SMTP back-end delivers at once and keeps
only the envelope once delivered (bodies hold single-use links, which must not outlive their
use); a failed delivery stays pending for ``flask --app app mail send-pending``. The outbox
back-end, for development and demo mode only, keeps every message in the database so a
newcomer can read it at ``/dev/outbox`` and click the link.

Bodies are plain-text Jinja templates, one a message, in ``templates/mail``: a service writes
``body=render("claim_code.txt", code=code, …)``. ``render`` needs no Flask app or request
(mail also leaves from the CLI and background jobs), refuses a variable it was not given, and
knows the ``core.formats`` filters (``{{ expires_at|day }}``) that pages use too.
"""

from __future__ import annotations

import functools
import json
import smtplib
import time
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol

import click
import jinja2
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlmodel import Field, Session, SQLModel, select

from core import formats
from core.after_commit import on_commit
from core.db import UTCDateTime, get_database, utcnow
from core.settings import Settings

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
    """Delivers through an SMTP server once the sender's transaction commits; failures stay
    pending for a retry.

    Not before the commit: a request that fails, or a process killed, after ``send`` must not
    have told anyone something the database never recorded (and a retry would tell them
    twice); nor should a transaction hold its locks while an SMTP server answers."""

    # A relay that accepts and then says nothing costs each request that mails the whole SMTP
    # timeout. After one such silence, requests leave their mail pending (``mail
    # send-pending`` delivers it) for this long, instead of each waiting in turn.
    SILENCE_SECONDS = 60.0

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._silent_until = 0.0

    def send(self, *, session: Session, mail: Mail) -> OutboxMessage:
        message = _record(session, mail)
        session.flush()
        message_id = message.id
        on_commit(session, lambda: self._deliver_committed(session, message_id))
        return message

    def _deliver_committed(self, session: Session, message_id: int | None) -> None:
        """Deliver a message the committed transaction sent, in a transaction of its own (the
        committed one can run no more SQL)."""
        if time.monotonic() < self._silent_until:
            return  # pending: the relay was silent a moment ago
        with Session(bind=session.get_bind(), join_transaction_mode="create_savepoint") as own:
            message = own.get(OutboxMessage, message_id)
            if message is not None and message.sent_at is None:
                self.deliver(message)
            own.commit()

    def deliver(self, message: OutboxMessage) -> bool:
        """Try one delivery; on success mark it sent and drop the body."""
        message.attempts += 1
        try:
            self._transmit(message)
        except (OSError, smtplib.SMTPException) as error:
            message.last_error = f"{type(error).__name__}: {error}"[:_ERROR_LENGTH]
            # smtplib reports a silent relay as "Connection unexpectedly closed: timed out".
            if isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
                self._silent_until = time.monotonic() + self.SILENCE_SECONDS
            return False
        message.sent_at = utcnow()
        message.body = ""
        message.last_error = ""
        return True

    def _transmit(self, message: OutboxMessage) -> None:
        settings = self._settings
        email = EmailMessage()
        email["From"] = settings.mail_from
        email["To"] = message.recipient
        email["Subject"] = message.subject
        email["Message-ID"] = make_msgid(domain=settings.rp_id)
        email.set_content(message.body)
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password)
            smtp.send_message(email)


def send_pending(*, session: Session, mailer: SMTPMailer, limit: int = 500) -> tuple[int, int]:
    """Retry undelivered messages, oldest first; returns (sent, still failing)."""
    pending = session.exec(
        select(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None))  # type: ignore[union-attr]
        .order_by(OutboxMessage.created_at)  # type: ignore[arg-type]
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    sent = sum(mailer.deliver(message) for message in pending)
    session.flush()
    return sent, len(pending) - sent


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
    return OutboxMailer() if settings.mail_backend == "outbox" else SMTPMailer(settings)


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
    """Retry messages the SMTP server did not take (safe from cron)."""
    mailer = get_mailer()
    if not isinstance(mailer, SMTPMailer):
        raise click.ClickException(
            "The outbox back-end keeps mail in the database; nothing to send."
        )
    with get_database().transaction() as session:
        sent, failing = send_pending(session=session, mailer=mailer)
    report = {"sent": sent, "still_failing": failing}
    click.echo(json.dumps(report) if as_json else f"Sent {sent}; {failing} still failing.")
