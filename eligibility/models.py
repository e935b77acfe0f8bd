"""Tables of the eligibility package: projects and who maintains them."""

from __future__ import annotations

import enum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


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
    """A maintainer's role on a project, held directly or through an organisation."""

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
