"""The staff page of background work: what waits, what runs, what failed, and mail that was not
delivered; an admin gives a failed task another go from here."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from accounts.access import staff_required
from accounts.forms import ConfirmForm
from accounts.models import StaffRole
from accounts.services import SIGN_IN_LINK_TASK, actor_for
from core import mail, tasks
from core.audit import record_event
from core.db import get_session
from core.settings import get_settings
from distribution.shipping.label_runs import RENDER_TASK
from eligibility.critical import NOTICES_TASK
from jobs import CLAIMS_EXPIRE, PERSONAL_DATA_PURGE

bp = Blueprint("jobs", __name__)

# What each task does, in the words staff use; a name missing here is shown as it is.
DESCRIPTIONS: dict[str, str] = {
    mail.DELIVER_TASK: "Deliver an email",
    mail.RETRY_TASK: "Offer undelivered mail again",
    SIGN_IN_LINK_TASK: "Answer a sign-in request",
    RENDER_TASK: "Render a label run",
    CLAIMS_EXPIRE: "Expire unredeemed codes",
    PERSONAL_DATA_PURGE: "Erase personal data past retention",
    NOTICES_TASK: "Tell newly eligible maintainers",
}
# The kind of row a task's subject_id names (tasks carry ids only, never personal data).
SUBJECTS: dict[str, str] = {
    mail.DELIVER_TASK: "message",
    SIGN_IN_LINK_TASK: "sign-in request",
    RENDER_TASK: "label run",
}


def describe(task: tasks.Task) -> str:
    return DESCRIPTIONS.get(task.name, task.name)


def subject_of(task: tasks.Task) -> str:
    """``label run 12``; empty for a task that works on no row in particular."""
    if task.subject_id is None:
        return ""
    return f"{SUBJECTS.get(task.name, 'row')} {task.subject_id}"


def duration(seconds: int) -> str:
    """A rough length of time for people: ``under a minute``, ``3 minutes``, ``2 days``."""
    if seconds < 60:
        return "under a minute"
    for unit, length in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "under a minute"  # pragma: no cover - every length of a minute or more is above


@bp.get("/staff/tasks")
@staff_required(StaffRole.ADMIN)
def staff_tasks() -> ResponseReturnValue:
    session = get_session()
    return render_template(
        "jobs/tasks.html",
        status=tasks.queue_status(session=session, in_process=tasks.get_queue().in_process),
        silence=get_settings().task_consumer_silence_seconds,
        listed=tasks.list_tasks(session=session),
        undelivered=mail.failed_messages(session=session),
        retry_form=ConfirmForm(),
        Status=tasks.TaskStatus,
        describe=describe,
        subject_of=subject_of,
        duration=duration,
    )


@bp.post("/staff/tasks/<int:task_id>/retry")
@staff_required(StaffRole.ADMIN)
def retry_task(task_id: int) -> ResponseReturnValue:
    if not ConfirmForm().validate_on_submit():
        abort(400, "The form expired. Go back, reload the page and try again.")
    session = get_session()
    task = tasks.retry_task(session=session, task_id=task_id)
    record_event(
        session=session,
        actor=actor_for(current_user),
        action="task.retried",
        subject_kind="task",
        subject_id=task_id,
        details={"name": task.name},
    )
    flash(f"Task {task_id} ({describe(task).lower()}) will run again shortly.", "success")
    return redirect(url_for("jobs.staff_tasks"))
