"""Tables of the accounts package: maintainers, their sign-in links, staff and staff roles.

Both kinds of person can be the signed-in user of flask-login; their ids are prefixed
(``maintainer:7``, ``staff:3:<nonce>``) so one can never be loaded as the other, and a staff
member's nonce changes with their password, which signs out every other session.
"""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from db import UTCDateTime


class StaffRole(enum.StrEnum):
    ADMIN = "admin"
    SHIPPING = "shipping"
    PROGRAMME = "programme"
    VIEWER = "viewer"

    @property
    def description(self) -> str:
        return _ROLE_DESCRIPTIONS[self]


_ROLE_DESCRIPTIONS = {
    StaffRole.ADMIN: "manages staff accounts; may do everything",
    StaffRole.SHIPPING: "works the fulfilment queue, labels, tracking and returns",
    StaffRole.PROGRAMME: "imports statistics, reviews appeals, receives stock, reads reports",
    StaffRole.VIEWER: "reads reports and the audit log",
}


class Maintainer(SQLModel, table=True):
    """A PyPI user who may be eligible for keys; the username is unique whatever its case."""

    __tablename__ = "maintainer"
    __table_args__ = (
        sa.Index("uq_maintainer_username_lower", sa.func.lower(sa.text("username")), unique=True),
        sa.Index("uq_maintainer_email_lower", sa.func.lower(sa.text("email")), unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=100)
    email: str = Field(max_length=320)
    email_verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    display_name: str = Field(default="", max_length=200)
    country: str | None = Field(default=None, max_length=2)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)

    # flask-login's user protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    @property
    def is_staff(self) -> bool:
        return False

    def get_id(self) -> str:
        return f"maintainer:{self.id}"

    @property
    def greeting_name(self) -> str:
        return self.display_name or self.username


class SignInLink(SQLModel, table=True):
    """A single-use emailed sign-in link; only the SHA-256 of its token is stored."""

    __tablename__ = "sign_in_link"

    id: int | None = Field(default=None, primary_key=True)
    maintainer_id: int = Field(foreign_key="maintainer.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Staff(SQLModel, table=True):
    """A member of the programme's staff, signing in with email and password."""

    __tablename__ = "staff"
    __table_args__ = (
        sa.Index("uq_staff_email_lower", sa.func.lower(sa.text("email")), unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320)
    name: str = Field(max_length=200)
    password_hash: str = Field(max_length=400)
    session_nonce: str = Field(max_length=64)
    active: bool = True
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    password_changed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    @property
    def is_staff(self) -> bool:
        return True

    @property
    def greeting_name(self) -> str:
        return self.name

    def get_id(self) -> str:
        return f"staff:{self.id}:{self.session_nonce}"


class StaffRoleGrant(SQLModel, table=True):
    """One role held by one staff member."""

    __tablename__ = "staff_role_grant"
    __table_args__ = (
        sa.CheckConstraint(
            "role IN ('admin', 'shipping', 'programme', 'viewer')", name="known_role"
        ),
    )

    staff_id: int = Field(foreign_key="staff.id", primary_key=True)
    role: str = Field(max_length=20, primary_key=True)
