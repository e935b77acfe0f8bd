"""Telling maintainers they became eligible: once each, naming the projects that qualify them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlmodel import Session, col, select

from accounts.models import Maintainer
from core.actors import Actor
from core.audit import record_event
from core.countries import served_names
from core.db import utcnow
from core.mail import Mail, Mailer, render
from core.settings import Settings
from eligibility.critical import current_list
from eligibility.models import (
    Appeal,
    AppealStatus,
    CriticalEntry,
    EligibilityNotice,
    Project,
    ProjectRole,
)


@dataclass(frozen=True)
class Notice:
    maintainer: Maintainer
    projects: list[str]  # empty when an appeal, not a project, made them eligible


def newly_eligible(*, session: Session, settings: Settings) -> list[Notice]:
    """Maintainers of a critical project (or with a granted appeal) not yet told, served or
    not yet located; in username order."""
    critical = current_list(session=session)
    projects: dict[int, list[str]] = defaultdict(list)
    if critical is not None:
        rows = session.exec(
            select(ProjectRole.maintainer_id, Project.display_name)
            .join(Project, col(Project.id) == ProjectRole.project_id)
            .join(CriticalEntry, col(CriticalEntry.project_name) == Project.name)
            .where(CriticalEntry.list_id == critical.id, col(ProjectRole.ended_at).is_(None))
        ).all()
        for maintainer_id, name in rows:
            projects[maintainer_id].append(name)
    granted = session.exec(
        select(Appeal.maintainer_id).where(Appeal.status == AppealStatus.GRANTED.value)
    ).all()
    candidates = set(projects) | set(granted)
    told = set(session.exec(select(EligibilityNotice.maintainer_id)).all())
    ids = sorted(candidates - told)
    if not ids:
        return []
    people = session.exec(
        select(Maintainer).where(col(Maintainer.id).in_(ids)).order_by(col(Maintainer.username))
    ).all()
    return [
        Notice(person, sorted(projects.get(person.id or 0, [])))
        for person in people
        if person.country is None or person.country in settings.countries
    ]


def send_notices(
    *, session: Session, mailer: Mailer, settings: Settings, notices: list[Notice]
) -> None:
    """Mail each notice and remember it, so nobody is mailed twice."""
    for notice in notices:
        person = notice.maintainer
        mailer.send(
            session=session,
            mail=Mail(
                recipient=person.email,
                subject="You can claim free security keys for your PyPI account",
                body=render(
                    "eligibility_notice.txt",
                    greeting_name=person.greeting_name,
                    keys=settings.keys_per_maintainer,
                    projects=notice.projects,
                    countries=served_names(settings.countries),
                    base_url=settings.base_url,
                ),
                purpose="eligibility_notice",
            ),
        )
        session.add(
            EligibilityNotice(maintainer_id=person.id, sent_at=utcnow(), projects=notice.projects)  # type: ignore[arg-type]
        )
        record_event(
            session=session,
            actor=Actor.system("notify"),
            action="eligibility.notified",
            subject_kind="maintainer",
            subject_id=person.id,
            details={"projects": notice.projects},
        )
    session.flush()
