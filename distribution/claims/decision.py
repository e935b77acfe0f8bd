"""Who may claim keys, and why: one decision, explained, reproducible from its inputs.

Reasons are checked and reported in the programme's fixed order — programme window, stock,
critical maintainer, country, already claimed — and every failing check is reported, each with a
stable code and a message that says what the person can do instead.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from accounts.models import Maintainer
from core import formats
from core.countries import country_name, display_code, served_names
from core.db import utcnow
from core.settings import Settings
from distribution.models import CLOSED_STATUSES, Claim
from distribution.stock.services import available_keys
from eligibility import appeals
from eligibility.critical import current_list, standings
from eligibility.models import Appeal, CriticalList, Project, ProjectRole

TWO_FACTOR_HELP = "https://pypi.org/help/#twofa"
_ALTERNATIVES = (
    "You can still protect your PyPI account today with an authenticator app (TOTP) or with "
    f"any FIDO2 security key from another maker: see {TWO_FACTOR_HELP}."
)


class ReasonCode(enum.StrEnum):
    PROGRAMME_NOT_OPEN = "programme_not_open"
    PROGRAMME_ENDED = "programme_ended"
    NO_KEYS_LEFT = "no_keys_left"
    NOT_CRITICAL_MAINTAINER = "not_critical_maintainer"
    COUNTRY_MISSING = "country_missing"
    COUNTRY_NOT_SERVED = "country_not_served"
    ALREADY_CLAIMED = "already_claimed"


@dataclass(frozen=True)
class Reason:
    code: ReasonCode
    message: str


@dataclass(frozen=True)
class ProjectBasis:
    """One of the maintainer's projects and where it stands."""

    name: str
    display_name: str
    role: str
    organisation: str | None
    critical: bool
    rank: int | None


@dataclass(frozen=True)
class Decision:
    eligible: bool
    reasons: list[Reason]
    projects: list[ProjectBasis]
    cutoff_rank: int | None
    ranked_projects: int | None
    override: Appeal | None = None
    country: str | None = None
    checked_at: datetime = field(default_factory=utcnow)

    @property
    def critical_projects(self) -> list[ProjectBasis]:
        return [project for project in self.projects if project.critical]

    def as_dict(self) -> dict[str, Any]:
        return {
            "eligible": self.eligible,
            "reasons": [{"code": r.code.value, "message": r.message} for r in self.reasons],
            "country": display_code(self.country) if self.country else None,
            "projects": [
                {
                    "project": p.display_name,
                    "role": p.role,
                    "organisation": p.organisation,
                    "critical": p.critical,
                    "rank": p.rank,
                }
                for p in self.projects
            ],
            "cutoff_rank": self.cutoff_rank,
            "override": self.override is not None,
        }


def maintainer_projects(*, session: Session, maintainer: Maintainer) -> list[ProjectBasis]:
    """The maintainer's current roles with each project's standing on the current list."""
    rows = session.exec(
        select(ProjectRole, Project)
        .join(Project, col(Project.id) == ProjectRole.project_id)
        .where(ProjectRole.maintainer_id == maintainer.id, col(ProjectRole.ended_at).is_(None))
        .order_by(col(Project.name))
    ).all()
    found = standings(session=session, names=[project.name for _role, project in rows])
    projects = []
    for role, project in rows:
        standing = found.get(project.name)
        projects.append(
            ProjectBasis(
                name=project.name,
                display_name=project.display_name,
                role=role.role,
                organisation=role.organisation,
                critical=bool(standing and standing.critical),
                rank=standing.rank if standing else None,
            )
        )
    projects.sort(key=lambda p: (not p.critical, p.rank or 10**12, p.name))
    return projects


def decide(
    *,
    session: Session,
    settings: Settings,
    maintainer: Maintainer,
    country: str | None,
    now: datetime | None = None,
) -> Decision:
    """Whether ``maintainer`` may claim keys shipped to ``country`` (ISO code), and why not."""
    now = now or utcnow()
    reasons: list[Reason] = []

    if now < settings.programme_opens_at:
        reasons.append(
            Reason(
                ReasonCode.PROGRAMME_NOT_OPEN,
                f"The programme opens on {formats.day(settings.programme_opens_at)}. "
                f"{_ALTERNATIVES}",
            )
        )
    elif now >= settings.programme_closes_at:
        reasons.append(
            Reason(
                ReasonCode.PROGRAMME_ENDED,
                f"The programme closed on {formats.day(settings.programme_closes_at)}. "
                f"{_ALTERNATIVES}",
            )
        )

    if available_keys(session=session) < settings.keys_per_maintainer:
        reasons.append(
            Reason(
                ReasonCode.NO_KEYS_LEFT,
                (
                    "Every key is given out or promised right now. Ask for a code anyway to "
                    "join the waiting list: keys from expired or cancelled claims are offered "
                    f"in turn. {_ALTERNATIVES}"
                ),
            )
        )

    projects = maintainer_projects(session=session, maintainer=maintainer)
    critical_list = current_list(session=session)
    override = appeals.granted_override(session=session, maintainer=maintainer)
    if override is None and not any(p.critical for p in projects):
        reasons.append(
            Reason(
                ReasonCode.NOT_CRITICAL_MAINTAINER, _not_critical_message(projects, critical_list)
            )
        )

    if country is None:
        reasons.append(
            Reason(
                ReasonCode.COUNTRY_MISSING,
                (
                    "Tell us which country the keys would be shipped to: we ship to "
                    f"{served_names(settings.countries)}."
                ),
            )
        )
    elif country not in settings.countries:
        reasons.append(
            Reason(
                ReasonCode.COUNTRY_NOT_SERVED,
                (
                    f"We cannot ship to {country_name(country)}: keys go only to "
                    f"{served_names(settings.countries)}, the countries where the keys are sold. "
                    f"{_ALTERNATIVES}"
                ),
            )
        )

    if _has_active_claim(session, maintainer):
        reasons.append(
            Reason(
                ReasonCode.ALREADY_CLAIMED,
                (
                    "You have claimed your keys already: follow them on My claim. If a key "
                    "is lost, tell us there and we will help."
                ),
            )
        )

    return Decision(
        eligible=not reasons,
        reasons=reasons,
        projects=projects,
        cutoff_rank=critical_list.cutoff_rank if critical_list else None,
        ranked_projects=critical_list.total_projects if critical_list else None,
        override=override,
        country=country,
        checked_at=now,
    )


def _has_active_claim(session: Session, maintainer: Maintainer) -> bool:
    # Queried here rather than through distribution.claims, which depends on this module.
    return (
        session.exec(
            select(Claim.id).where(
                Claim.maintainer_id == maintainer.id, col(Claim.status).not_in(CLOSED_STATUSES)
            )
        ).first()
        is not None
    )


def _not_critical_message(projects: list[ProjectBasis], critical_list: CriticalList | None) -> str:
    appeal = "If you think this is wrong, file an appeal and programme staff will review it."
    if critical_list is None:
        return (
            "Download statistics have not been imported yet, so no project counts as "
            f"critical. Please check again later. {appeal}"
        )
    top = (
        f"the top {critical_list.percent:g}% of {critical_list.total_projects:,} projects "
        f"by downloads (ranks 1 to {critical_list.cutoff_rank:,})"
    )
    if not projects:
        return (
            f"We found no project on which you hold the Owner or Maintainer role. Keys are "
            f"for maintainers of {top}. {appeal} {_ALTERNATIVES}"
        )
    listed = "; ".join(f"{p.display_name} ({_rank_text(p.rank)})" for p in projects)
    return (
        f"None of your projects is among {top}. Your projects: {listed}. {appeal} {_ALTERNATIVES}"
    )


def _rank_text(rank: int | None) -> str:
    return f"rank {rank:,}" if rank else "below the cutoff"
