"""`flask --app app staff …`: create staff, reset passwords and keys, list who has which role.

Enrolment links (a staff member's first key needs one) are shown once here, not emailed: the
operator at the server's terminal hands them over, as they do the first admin's password."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import click
from flask.cli import with_appcontext

from accounts import enrolment, second_factor, services
from accounts.models import StaffRole
from core.actors import Actor
from core.db import get_database
from core.errors import reported_as_cli_error
from core.settings import get_settings

_ROLE = click.Choice([role.value for role in StaffRole])


@click.group("staff")
def staff_cli() -> None:
    """Programme staff accounts."""


@staff_cli.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", "roles", multiple=True, type=_ROLE, required=True, help="Repeatable.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@with_appcontext
def create_command(
    email: str, name: str, roles: tuple[str, ...], password_stdin: bool, as_json: bool
) -> None:
    """Create a staff member; prints a generated password unless one comes on stdin, and the
    enrolment link for their first security key."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else ""
    generated = not password
    password = password or services.generate_password()
    with reported_as_cli_error(), get_database().transaction() as session:
        staff = services.create_staff(
            session=session,
            actor=Actor.system("cli"),
            email=email,
            name=name,
            roles=[StaffRole(role) for role in roles],
            password=password,
        )
        token = enrolment.issue_link(
            session=session, actor=Actor.system("cli"), staff=staff, valid_for=_enrolment_time()
        )
    report: dict[str, Any] = {"id": staff.id, "email": staff.email, "roles": sorted(roles)}
    if generated:
        report["password"] = password
    report |= _enrolment_report(token)
    _print(report, as_json, f"Created staff member {staff.email} (id {staff.id}).")


@staff_cli.command("reset-password")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@with_appcontext
def reset_password_command(email: str, as_json: bool) -> None:
    """Give a staff member a new generated password and sign them out everywhere."""
    password = services.generate_password()
    with reported_as_cli_error(), get_database().transaction() as session:
        staff = services.find_staff_by_email(session=session, email=email)
        if staff is None:
            raise click.ClickException(f"No staff member has the address {email}.")
        services.reset_staff_password(
            session=session, actor=Actor.system("cli"), staff_id=staff.id or 0, password=password
        )
    _print({"email": staff.email, "password": password}, as_json, f"Reset {staff.email}.")


@staff_cli.command("reset-keys")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@with_appcontext
def reset_keys_command(email: str, as_json: bool) -> None:
    """Stop a staff member's keys and recovery codes, sign them out everywhere, and print a
    new enrolment link for their next first key (a lost keyring, a key they did not add)."""
    with reported_as_cli_error(), get_database().transaction() as session:
        staff = services.find_staff_by_email(session=session, email=email)
        if staff is None:
            raise click.ClickException(f"No staff member has the address {email}.")
        token = second_factor.reset_keys(
            session=session, actor=Actor.system("cli"), staff=staff, valid_for=_enrolment_time()
        )
    report = {"email": staff.email} | _enrolment_report(token)
    _print(report, as_json, f"Reset the keys of {staff.email}; they are signed out everywhere.")


@staff_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@with_appcontext
def list_command(as_json: bool) -> None:
    """Every staff member with their roles."""
    with get_database().transaction() as session:
        people = services.list_staff(session=session)
    rows: list[dict[str, Any]] = [
        {"id": s.id, "email": s.email, "name": s.name, "active": s.active, "roles": sorted(roles)}
        for s, roles in people
    ]
    if as_json:
        click.echo(json.dumps({"staff": rows}))
        return
    for row in rows:
        state = "" if row["active"] else " (cannot sign in)"
        click.echo(f"{row['email']:40} {','.join(row['roles']):30} {row['name']}{state}")


def _enrolment_time() -> timedelta:
    return timedelta(hours=get_settings().staff_enrolment_hours)


def _enrolment_report(token: str) -> dict[str, Any]:
    settings = get_settings()
    return {
        "enrolment_link": enrolment.link(settings.base_url, token),
        "enrolment_hours": settings.staff_enrolment_hours,
    }


def _print(report: dict[str, Any], as_json: bool, summary: str) -> None:
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(summary)
    if "password" in report:
        click.echo(f"Password (shown once): {report['password']}")
    if "enrolment_link" in report:
        click.echo(
            f"Enrolment link for their first security key (shown once, works once, for "
            f"{report['enrolment_hours']} hours): {report['enrolment_link']}"
        )
