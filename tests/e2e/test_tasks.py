"""An admin on a phone finds a failed background task, reads why, and retries it with the
keyboard; the consumer beside the server takes it again."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import select

from accounts.models import StaffRole
from core.audit import AuditEvent
from core.db import get_database, utcnow
from core.tasks import Task
from distribution.shipping.label_runs import RENDER_TASK
from tests.e2e.conftest import LiveServer
from tests.e2e.journeys import sign_in_as_staff
from tests.factories import make_staff

pytestmark = pytest.mark.e2e


def test_an_admin_on_a_phone_retries_a_failed_task(live_server: LiveServer, page: Page):
    with get_database(live_server.app).transaction() as session:
        make_staff(session, roles=[StaffRole.ADMIN], email="tasks-ida@example.org")
        failed = Task(
            name=RENDER_TASK,
            subject_id=999_999,
            status="failed",
            created_at=utcnow(),
            run_after=utcnow(),
            attempts=3,
            max_attempts=3,
            error="Label run 999999 no longer exists.",
        )
        session.add(failed)
        session.flush()
        task_id = failed.id
    sign_in_as_staff(live_server, page, "tasks-ida@example.org")
    page.set_viewport_size({"width": 390, "height": 844})

    page.goto(f"{live_server.url}/staff/tasks")
    expect(page.get_by_role("heading", name="Background tasks")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Label run 999999 no longer exists.")
    # The page itself fits the phone; wide tables scroll inside their own box.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    retry = page.get_by_role("button", name=f"Retry task {task_id}")
    retry.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_text(f"Task {task_id} (render a label run) will run again")).to_be_visible()

    with get_database(live_server.app).transaction() as session:
        retried = session.exec(
            select(AuditEvent).where(
                AuditEvent.action == "task.retried", AuditEvent.subject_id == str(task_id)
            )
        ).all()
        assert len(retried) == 1
        task = session.get(Task, task_id)
        assert task is not None and task.max_attempts == 4  # one more go than it had
