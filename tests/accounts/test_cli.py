"""`flask --app app staff …`, `seed` and `db upgrade` from the command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from sqlmodel import func, select

from accounts import services
from accounts.models import Maintainer, SecurityKey, Staff, StaffRole
from distribution.shipping import fulfilment
from distribution.stock import services as stock
from eligibility.critical import look_up_project
from eligibility.models import ProjectRole
from tests.accounts.test_second_factor import add_key


def invoke(app, *args, input=None):
    result = app.test_cli_runner().invoke(args=list(args), input=input)
    return result


def test_staff_create_prints_a_generated_password_once(app, session):
    result = invoke(
        app,
        "staff",
        "create",
        "--email",
        "Ops@Example.org",
        "--name",
        "Ops",
        "--role",
        "shipping",
        "--role",
        "viewer",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["email"] == "ops@example.org"
    assert report["roles"] == ["shipping", "viewer"]
    staff = session.get(Staff, report["id"])
    assert services.roles_of(session=session, staff=staff) == {StaffRole.SHIPPING, StaffRole.VIEWER}
    assert services.authenticate_staff(
        session=session, email="ops@example.org", password=report["password"]
    )


def test_staff_create_reads_a_password_from_stdin(app, session):
    result = invoke(
        app,
        "staff",
        "create",
        "--email",
        "a@example.org",
        "--name",
        "A",
        "--role",
        "admin",
        "--password-stdin",
        input="a long enough secret\n",
    )
    assert result.exit_code == 0, result.output
    assert "Password (shown once)" not in result.output
    assert services.authenticate_staff(
        session=session, email="a@example.org", password="a long enough secret"
    )


def test_staff_create_explains_refusals(app):
    invoke(app, "staff", "create", "--email", "a@example.org", "--name", "A", "--role", "admin")
    again = invoke(
        app, "staff", "create", "--email", "A@example.org", "--name", "B", "--role", "viewer"
    )
    assert again.exit_code == 1
    assert "exists already" in again.output
    bad_role = invoke(
        app, "staff", "create", "--email", "c@example.org", "--name", "C", "--role", "owner"
    )
    assert bad_role.exit_code == 2 and "'owner' is not one of" in bad_role.output


def test_staff_reset_password_and_list(app, session):
    invoke(app, "staff", "create", "--email", "a@example.org", "--name", "Ann", "--role", "admin")
    reset = invoke(app, "staff", "reset-password", "a@example.org", "--json")
    assert reset.exit_code == 0, reset.output
    new_password = json.loads(reset.output)["password"]
    assert services.authenticate_staff(
        session=session, email="a@example.org", password=new_password
    )
    listing = json.loads(invoke(app, "staff", "list", "--json").output)
    assert [(s["email"], s["roles"]) for s in listing["staff"]] == [("a@example.org", ["admin"])]
    missing = invoke(app, "staff", "reset-password", "nobody@example.org")
    assert missing.exit_code == 1 and "No staff member" in missing.output


def test_staff_create_and_reset_keys_show_an_enrolment_link_once(app, client, session, settings):
    """The operator at the terminal hands over the first admin's password and enrolment link;
    `reset-keys` stops the keys, ends the sessions and prints a new link."""
    created = invoke(
        app, "staff", "create", "--email", "a@example.org", "--name", "Ann", "--role", "admin"
    )
    assert created.exit_code == 0, created.output
    first = re.search(r"shown once, works once, for 72 hours\): (\S+)", created.output)
    assert first and first.group(1).startswith("http://localhost/staff/enrol/")
    first_link = first.group(1).removeprefix("http://localhost")
    assert "Welcome, Ann" in client.get(first_link).get_data(as_text=True)
    staff = services.find_staff_by_email(session=session, email="a@example.org")
    assert staff is not None
    add_key(session, settings, staff, "Desk key")
    session.flush()

    reset = invoke(app, "staff", "reset-keys", "A@example.org", "--json")
    assert reset.exit_code == 0, reset.output
    report = json.loads(reset.output)
    assert report["email"] == "a@example.org" and report["enrolment_hours"] == 72
    assert session.exec(select(SecurityKey)).one().removed_at is not None
    assert client.get(first_link).status_code == 410  # replaced by the new link
    new_link = report["enrolment_link"].removeprefix("http://localhost")
    assert "Welcome, Ann" in client.get(new_link).get_data(as_text=True)
    missing = invoke(app, "staff", "reset-keys", "nobody@example.org")
    assert missing.exit_code == 1 and "No staff member" in missing.output


def test_seed_loads_the_demo_once(app_factory, session):
    demo = app_factory(environment="development", demo_mode=True, mail_backend="outbox")

    first = invoke(demo, "seed", "--json")
    second = invoke(demo, "seed", "--json")

    assert first.exit_code == 0, first.output
    added = json.loads(first.output)
    counts = (
        added["maintainers_added"],
        added["staff_added"],
        added["batches_received"],
        added["parcels_added"],
    )
    assert counts == (6, 4, 2, 4)
    again = json.loads(second.output)
    assert (
        again["maintainers_added"],
        again["roles_added"],
        again["staff_added"],
        again["batches_received"],
        again["parcels_added"],
    ) == (0, 0, 0, 0, 0)
    # 6 people to sign in as, and 4 whose parcels wait on the shipping desk
    assert session.exec(select(func.count()).select_from(Maintainer)).one() == 10
    assert session.exec(select(func.count()).select_from(ProjectRole)).one() == 11
    assert stock.on_hand(session=session) == {"TITAN-USB-A-NFC": 2000, "TITAN-USB-C-NFC": 2000}
    queue = fulfilment.label_queue(session=session, base_url="http://localhost").parcels
    assert sorted(q.label.country for q in queue) == ["CA", "DE", "GB", "JP"]
    assert stock.stock_figures(session=session).allocated == 8
    assert added["critical_list_recorded"] and not again["critical_list_recorded"]
    requests = look_up_project(session=session, name="requests")
    assert (requests.critical, requests.rank, requests.critical_list.cutoff_rank) == (True, 6, 7000)
    for role in StaffRole:
        staff = services.authenticate_staff(
            session=session, email=f"{role.value}@example.org", password="demo-password-only"
        )
        assert services.roles_of(session=session, staff=staff) == {role}
    emails = session.exec(select(Maintainer.email)).all()
    assert all(email.endswith("@example.org") for email in emails)


def test_seed_refuses_outside_development_and_demo_mode(app):
    result = invoke(app, "seed")
    assert result.exit_code == 1
    assert "runs only with KEYS_ENV=development or KEYS_DEMO_MODE=1" in result.output


def test_db_upgrade_migrates_a_new_database(databases, tmp_path):
    url = databases.create("cli_upgrade")  # already at head: upgrading again is a no-op
    env = {
        **os.environ,
        "KEYS_ENV": "development",
        "KEYS_DATABASE_URL": url,
        "KEYS_INSTANCE_PATH": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Database is at migration head" in result.stdout
