"""Importing who maintains what: rows of project, username, email, role, organisation.

A file is the current truth for the projects it names: roles it lists are added or updated,
and roles on those projects that it no longer lists are ended (kept, with the time they
ended, so that old decisions stay explainable). A row with an organisation means the person
holds the role through that organisation; they count as a maintainer all the same. The file
is validated whole before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import IO, Any

from sqlmodel import Session, col, select

from accounts import services as accounts
from accounts.models import Maintainer
from core.actors import Actor
from core.audit import record_event
from core.db import utcnow
from eligibility.errors import ImportRejected
from eligibility.models import Project, ProjectRole, ProjectRoleKind
from eligibility.names import is_valid_project_name
from eligibility.services import ensure_project, find_project_role, grant_project_role

_USERNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,48}[A-Za-z0-9])?")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}")
_HEADER = ("project", "username", "email", "role")
_ROLES = {kind.value.lower(): kind for kind in ProjectRoleKind}


@dataclass(frozen=True)
class RoleRow:
    where: str  # "line 4" in a CSV file, "row 3" in a JSON one
    project: str
    username: str
    email: str
    role: ProjectRoleKind
    organisation: str | None


@dataclass
class RolesSummary:
    rows: int = 0
    maintainers_added: int = 0
    emails_changed: int = 0
    roles_added: int = 0
    roles_changed: int = 0
    roles_ended: int = 0
    changes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "maintainers_added": self.maintainers_added,
            "emails_changed": self.emails_changed,
            "roles_added": self.roles_added,
            "roles_changed": self.roles_changed,
            "roles_ended": self.roles_ended,
        }


def read_roles_file(stream: IO[bytes]) -> list[RoleRow]:
    """Parse and validate every row; ImportRejected names the first bad line."""
    raw = stream.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ImportRejected("the file is not UTF-8 text", line=line) from None
    if not text.strip():
        raise ImportRejected("the file is empty")
    items = _json_items(text) if text.lstrip().startswith(("{", "[")) else _csv_items(text)
    rows = [_validate(where, item) for where, item in items]
    if not rows:
        raise ImportRejected("the file holds no roles")
    _refuse_shared_emails(rows)
    return rows


def import_roles(*, session: Session, actor: Actor, rows: list[RoleRow]) -> RolesSummary:
    """Apply validated rows: add maintainers and projects, add/update roles, end missing ones."""
    summary = RolesSummary(rows=len(rows))
    maintainers = {
        row.username.lower(): _maintainer_for(session, actor, row, summary)
        for row in _first_per_username(rows)
    }
    wanted: dict[tuple[int, int], RoleRow] = {}
    projects: dict[str, Project] = {}
    for row in rows:
        project = projects.get(row.project) or ensure_project(session=session, name=row.project)
        projects[row.project] = project
        key = (project.id or 0, maintainers[row.username.lower()].id or 0)
        if key not in wanted or _stronger(row, wanted[key]):
            wanted[key] = row

    for (_project_id, _maintainer_id), row in wanted.items():
        project, maintainer = projects[row.project], maintainers[row.username.lower()]
        existing = find_project_role(session=session, project=project, maintainer=maintainer)
        if (
            existing is not None
            and existing.ended_at is None
            and (existing.role, existing.organisation) == (row.role.value, row.organisation)
        ):
            continue
        grant_project_role(
            session=session,
            actor=actor,
            project=project,
            maintainer=maintainer,
            role=row.role,
            organisation=row.organisation,
        )
        if existing is None:
            summary.roles_added += 1
        else:
            summary.roles_changed += 1

    project_ids = [project.id for project in projects.values()]
    active = session.exec(
        select(ProjectRole).where(
            col(ProjectRole.project_id).in_(project_ids), col(ProjectRole.ended_at).is_(None)
        )
    ).all()
    now = utcnow()
    for role in active:
        if (role.project_id, role.maintainer_id) in wanted:
            continue
        role.ended_at = now
        summary.roles_ended += 1
        record_event(
            session=session,
            actor=actor,
            action="project_role.ended",
            subject_kind="project_role",
            subject_id=role.id,
            details={
                "project_id": role.project_id,
                "maintainer_id": role.maintainer_id,
                "before": {"role": role.role, "organisation": role.organisation},
            },
        )
    session.flush()
    record_event(
        session=session, actor=actor, action="project_roles.imported", details=summary.as_dict()
    )
    return summary


def _maintainer_for(
    session: Session, actor: Actor, row: RoleRow, summary: RolesSummary
) -> Maintainer:
    maintainer = accounts.find_maintainer_by_username(session=session, username=row.username)
    if maintainer is None:
        holder = accounts.find_maintainer_by_email(session=session, email=row.email)
        if holder is not None:
            raise ImportRejected(
                f"{row.email} belongs to the maintainer {holder.username!r}, not {row.username!r}",
                where=row.where,
            )
        summary.maintainers_added += 1
        return accounts.create_maintainer(
            session=session, actor=actor, username=row.username, email=row.email
        )
    if maintainer.email != accounts.normalize_email(row.email):
        holder = accounts.find_maintainer_by_email(session=session, email=row.email)
        if holder is not None and holder.id != maintainer.id:
            raise ImportRejected(
                f"{row.email} belongs to the maintainer {holder.username!r}, not {row.username!r}",
                where=row.where,
            )
        accounts.change_maintainer_email(
            session=session, actor=actor, maintainer=maintainer, email=row.email
        )
        summary.emails_changed += 1
    return maintainer


def _first_per_username(rows: list[RoleRow]) -> list[RoleRow]:
    seen: dict[str, RoleRow] = {}
    for row in rows:
        seen.setdefault(row.username.lower(), row)
    return list(seen.values())


def _stronger(row: RoleRow, other: RoleRow) -> bool:
    """Owner beats Maintainer; a direct role beats one through an organisation."""

    def strength(r: RoleRow) -> tuple[bool, bool]:
        return (r.role is ProjectRoleKind.OWNER, r.organisation is None)

    return strength(row) > strength(other)


def _refuse_shared_emails(rows: list[RoleRow]) -> None:
    owners: dict[str, str] = {}
    for row in rows:
        email = accounts.normalize_email(row.email)
        owner = owners.setdefault(email, row.username.lower())
        if owner != row.username.lower():
            raise ImportRejected(f"{row.email} is given for two usernames", where=row.where)


def _csv_items(text: str) -> list[tuple[str, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = tuple(cell.strip().lower() for cell in next(reader))
    if header[:4] != _HEADER or header[4:] not in ((), ("organisation",), ("organization",)):
        raise ImportRejected(
            "the header must be 'project,username,email,role' with an optional "
            "'organisation' column",
            line=1,
        )
    items = []
    for row in reader:
        if len(row) != len(header):
            raise ImportRejected(
                f"expected {len(header)} columns, found {len(row)}", line=reader.line_num
            )
        values = dict(
            zip(("project", "username", "email", "role", "organisation"), row, strict=False)
        )
        items.append((f"line {reader.line_num}", values))
    return items


def _json_items(text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ImportRejected(
            f"the file is not valid JSON ({error.msg})", line=error.lineno
        ) from None
    rows = document.get("rows") if isinstance(document, dict) else document
    if not isinstance(rows, list):
        raise ImportRejected('the JSON must be a list of rows or {"rows": [...]}')
    items = []
    for number, item in enumerate(rows, start=1):
        if not isinstance(item, dict):
            raise ImportRejected("each row must be an object", where=f"row {number}")
        items.append((f"row {number}", item))
    return items


def _validate(where: str, item: dict[str, Any]) -> RoleRow:
    def text(key: str) -> str:
        value = item.get(key) or ""
        if not isinstance(value, str):
            raise ImportRejected(f"{key} must be text", where=where)
        return value.strip()

    project, username, email, role = (text(k) for k in ("project", "username", "email", "role"))
    organisation = text("organisation") or text("organization") or None
    if not project or not is_valid_project_name(project):
        raise ImportRejected(f"{project[:80]!r} is not a valid project name", where=where)
    if not _USERNAME.fullmatch(username):
        raise ImportRejected(f"{username[:80]!r} is not a valid PyPI username", where=where)
    if not _EMAIL.fullmatch(email):
        raise ImportRejected(f"{email[:80]!r} is not an email address", where=where)
    if role.lower() not in _ROLES:
        raise ImportRejected(
            f"the role must be Owner or Maintainer, not {role[:40]!r}", where=where
        )
    if organisation is not None and len(organisation) > 200:
        raise ImportRejected("the organisation name is longer than 200 characters", where=where)
    return RoleRow(where, project, username, email, _ROLES[role.lower()], organisation)
