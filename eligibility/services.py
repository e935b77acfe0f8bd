"""Eligibility services: projects and maintainers' roles on them."""

from __future__ import annotations

from sqlmodel import Session, select

from accounts.models import Maintainer
from core.actors import Actor
from core.audit import record_event
from eligibility.models import Project, ProjectRole, ProjectRoleKind
from eligibility.names import normalize_project_name


def ensure_project(*, session: Session, name: str) -> Project:
    """The project called ``name`` (compared after PEP 503 normalisation), added if new."""
    normalized = normalize_project_name(name)
    project = session.exec(select(Project).where(Project.name == normalized)).first()
    if project is None:
        project = Project(name=normalized, display_name=name.strip())
        session.add(project)
        session.flush()
    return project


def find_project_role(
    *, session: Session, project: Project, maintainer: Maintainer
) -> ProjectRole | None:
    return session.exec(
        select(ProjectRole).where(
            ProjectRole.project_id == project.id, ProjectRole.maintainer_id == maintainer.id
        )
    ).first()


def grant_project_role(
    *,
    session: Session,
    actor: Actor,
    project: Project,
    maintainer: Maintainer,
    role: ProjectRoleKind,
    organisation: str | None = None,
) -> ProjectRole:
    """Record that ``maintainer`` holds ``role`` on ``project``; unchanged if already so."""
    grant = find_project_role(session=session, project=project, maintainer=maintainer)
    unchanged = (role.value, organisation, None)
    if grant is not None and (grant.role, grant.organisation, grant.ended_at) == unchanged:
        return grant
    before = None
    if grant is not None:
        before = {
            "role": grant.role,
            "organisation": grant.organisation,
            "ended": grant.ended_at is not None,
        }
    if grant is None:
        grant = ProjectRole(
            project_id=project.id,  # type: ignore[arg-type]
            maintainer_id=maintainer.id,  # type: ignore[arg-type]
            role=role.value,
            organisation=organisation,
        )
        session.add(grant)
    else:
        grant.role, grant.organisation, grant.ended_at = role.value, organisation, None
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="project_role.granted" if before is None else "project_role.changed",
        subject_kind="project_role",
        subject_id=grant.id,
        details={
            "project": project.name,
            "maintainer": maintainer.username,
            "before": before,
            "after": {"role": role.value, "organisation": organisation},
        },
    )
    return grant
