"""What the task queue runs, and when: each task calls the same function as its command.

``register`` gives the app's queue (core.tasks) its handlers and periodic jobs. A handler runs
in a consumer, inside an app context, in transactions of its own, like a CLI command; the
commands stay as the manual way to run the same work.
"""

from __future__ import annotations

from datetime import timedelta

from huey import crontab

from accounts import services as accounts
from accounts import sessions
from core import mail, tasks
from core.actors import Actor
from core.db import backup_sqlite, get_database, utcnow
from core.mail import get_mailer
from core.settings import get_settings
from core.tasks import TaskFailed, TaskQueue
from distribution.claims import services as claims
from distribution.privacy import services as personal_data
from distribution.shipping import label_runs
from eligibility import critical, notify

CLAIMS_EXPIRE = "claims.expire"
PERSONAL_DATA_PURGE = "privacy.purge"
DATABASE_BACKUP = "db.backup"


def register(queue: TaskQueue) -> None:
    queue.register(mail.DELIVER_TASK, mail.deliver_task, attempts=8, on_retry=mail.forget_failure)
    queue.register(mail.RETRY_TASK, mail.retry_task, attempts=1)
    queue.register(accounts.SIGN_IN_LINK_TASK, sign_in_link, attempts=5)
    queue.register(label_runs.RENDER_TASK, label_runs.render_task, attempts=3)
    queue.register(CLAIMS_EXPIRE, expire_claims, attempts=3)
    queue.register(PERSONAL_DATA_PURGE, purge_personal_data, attempts=3)
    queue.register(critical.NOTICES_TASK, send_eligibility_notices, attempts=5)

    queue.schedule(CLAIMS_EXPIRE, crontab(minute="5"), timedelta(hours=1))
    queue.schedule(mail.RETRY_TASK, crontab(minute="*/15"), timedelta(minutes=15))
    queue.schedule(PERSONAL_DATA_PURGE, crontab(minute="30", hour="4"), timedelta(days=1))
    if queue.settings.backup_directory is not None:
        queue.register(DATABASE_BACKUP, back_up_database, attempts=3)
        queue.schedule(DATABASE_BACKUP, crontab(minute="0", hour="3"), timedelta(days=1))


def sign_in_link(request_id: int | None) -> None:
    settings = get_settings()
    with get_database().transaction() as session:
        accounts.send_sign_in_link(
            session=session,
            mailer=get_mailer(),
            request_id=request_id or 0,
            base_url=settings.base_url,
            valid_for=timedelta(minutes=settings.sign_in_link_minutes),
        )


def expire_claims(_subject: int | None) -> None:
    """``flask --app app claims expire``, hourly."""
    with get_database().transaction() as session:
        claims.expire_claims(session=session, mailer=get_mailer(), settings=get_settings())


def purge_personal_data(_subject: int | None) -> None:
    """``flask --app app claims purge-personal-data``, daily; and the rows of tasks done a
    week ago, and sign-in requests nobody answered."""
    with get_database().transaction() as session:
        personal_data.purge_personal_data(
            session=session, settings=get_settings(), actor=Actor.system("retention")
        )
        sessions.purge_expired(session=session)
        tasks.forget_finished(session=session, older_than=timedelta(days=7))
        accounts.forget_sign_in_requests(session=session, older_than=timedelta(days=1))


def send_eligibility_notices(_subject: int | None) -> None:
    """``flask --app app eligibility notify``, after each import that changed something."""
    settings = get_settings()
    with get_database().transaction() as session:
        notices = notify.newly_eligible(session=session, settings=settings)
        notify.send_notices(
            session=session, mailer=get_mailer(), settings=settings, notices=notices
        )


def back_up_database(_subject: int | None) -> None:
    """``flask --app app db backup FILE``, nightly, to KEYS_BACKUP_DIRECTORY: one file a day;
    a day's file that exists already is kept as it is."""
    directory = get_settings().backup_directory
    if directory is None:
        raise TaskFailed("KEYS_BACKUP_DIRECTORY is not set any more: no backup was made.")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"keys-{utcnow():%Y-%m-%d}.sqlite3"
    if not target.exists():
        backup_sqlite(engine=get_database().engine, target=target)
