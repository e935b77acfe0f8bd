"""Tables of the eligibility package: projects, who maintains them, the versioned critical lists,
appeals, and who has been told they are eligible."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.db import JSONType, UTCDateTime
from core.lifecycle import Lifecycle, Move
from eligibility.errors import AppealClosed


class ProjectRoleKind(enum.StrEnum):
    OWNER = "Owner"
    MAINTAINER = "Maintainer"


class Project(SQLModel, table=True):
    """A PyPI project; ``name`` is PEP 503-normalised and unique."""

    __tablename__ = "project"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    display_name: str = Field(max_length=200)


class ProjectRole(SQLModel, table=True):
    """A maintainer's role on a project, held directly or through an organisation.

    A role that disappears from an import is ended, not deleted, so decisions stay explainable.
    """

    __tablename__ = "project_role"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "maintainer_id", name="uq_project_role_person"),
        sa.CheckConstraint("role IN ('Owner', 'Maintainer')", name="known_role"),
    )

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    maintainer_id: int = Field(foreign_key="maintainer.id", index=True)
    role: str = Field(max_length=20)
    organisation: str | None = Field(default=None, max_length=200)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class CriticalList(SQLModel, table=True):
    """One computation of the critical projects from one statistics file."""

    __tablename__ = "critical_list"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    source_name: str = Field(max_length=255)
    source_sha256: str = Field(max_length=64, index=True)
    source_format: str = Field(max_length=20)
    # The file's hash plus every parameter: the same inputs give the same list.
    fingerprint: str = Field(max_length=64)
    total_projects: int
    ranked_projects: int
    percent: float
    sticky: bool
    cutoff_rank: int
    # Six months of the top projects' downloads run to billions: beyond a 32-bit integer.
    cutoff_downloads: int | None = Field(default=None, sa_type=sa.BigInteger)
    critical_count: int
    added_count: int
    removed_count: int


class CriticalEntry(SQLModel, table=True):
    """A project on a critical list: ranked in the top, or kept because once critical."""

    __tablename__ = "critical_entry"
    __table_args__ = (sa.Index("ix_critical_entry_project", "project_name"),)

    list_id: int = Field(foreign_key="critical_list.id", primary_key=True)
    project_name: str = Field(max_length=200, primary_key=True)
    rank: int | None = None
    downloads: int | None = Field(default=None, sa_type=sa.BigInteger)
    sticky: bool = False


class CriticalChange(SQLModel, table=True):
    """How a list differs from the one before it."""

    __tablename__ = "critical_change"
    __table_args__ = (sa.CheckConstraint("change IN ('added', 'removed')", name="known_change"),)

    list_id: int = Field(foreign_key="critical_list.id", primary_key=True)
    project_name: str = Field(max_length=200, primary_key=True)
    change: str = Field(max_length=10)


class ProjectRanking(SQLModel, table=True):
    """The rank of a known (maintained) project in a list, critical or not."""

    __tablename__ = "project_ranking"

    list_id: int = Field(foreign_key="critical_list.id", primary_key=True)
    project_name: str = Field(max_length=200, primary_key=True)
    rank: int
    downloads: int | None = Field(default=None, sa_type=sa.BigInteger)


class AppealStatus(enum.StrEnum):
    OPEN = "open"
    GRANTED = "granted"
    DENIED = "denied"


class AppealAction(enum.StrEnum):
    GRANT = "grant"
    DENY = "deny"


_DECIDED = "This appeal was already {status}."
APPEAL_LIFECYCLE: Lifecycle[AppealStatus, AppealAction] = Lifecycle(
    AppealStatus,
    {
        AppealAction.GRANT: Move(
            frozenset({AppealStatus.OPEN}),
            AppealStatus.GRANTED,
            "This appeal was already {status}.",
        ),
        AppealAction.DENY: Move(frozenset({AppealStatus.OPEN}), AppealStatus.DENIED, _DECIDED),
    },
    refused=AppealClosed,
)


class Appeal(SQLModel, table=True):
    """A maintainer's request to be counted eligible; a granted appeal is an override."""

    __tablename__ = "appeal"
    __table_args__ = (
        sa.CheckConstraint("status IN ('open', 'granted', 'denied')", name="known_status"),
        # One open appeal per maintainer at a time.
        sa.Index(
            "uq_appeal_open_per_maintainer",
            "maintainer_id",
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    maintainer_id: int = Field(foreign_key="maintainer.id", index=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    text: str = Field(sa_type=sa.Text)
    projects: list[str] = Field(default_factory=list, sa_type=JSONType, nullable=False)
    status: str = Field(default=AppealStatus.OPEN.value, max_length=10)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_by: int | None = Field(default=None, foreign_key="staff.id")
    decision_reason: str = Field(default="", max_length=2000)


class EligibilityNotice(SQLModel, table=True):
    """A maintainer was told by mail that they are eligible (once, ever)."""

    __tablename__ = "eligibility_notice"

    maintainer_id: int = Field(foreign_key="maintainer.id", primary_key=True)
    sent_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    projects: list[Any] = Field(default_factory=list, sa_type=JSONType, nullable=False)
