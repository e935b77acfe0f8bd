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

from core.db import UTCDateTime


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


class SignInRequest(SQLModel, table=True):
    """An address someone asked a sign-in link for, until a consumer answers it (and deletes
    the row): the request itself does the same work whether the address is known or not."""

    __tablename__ = "sign_in_request"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


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


class KeyOutcome(enum.StrEnum):
    """What a registration proved (see distribution.webauthn.Outcome)."""

    TITAN = "titan"  # attestation chains to the metadata's roots for a Titan
    OTHER = "other"  # another make, or one the metadata does not know: for staff to review
    WITHHELD = "withheld"  # the browser withheld make and model ("none" attestation)


class SecurityKey(SQLModel, table=True):
    """A WebAuthn credential of a maintainer (activation, sign-in) or a staff member (second
    factor), with the attestation it was registered with, kept for support and review."""

    __tablename__ = "security_key"
    __table_args__ = (
        sa.CheckConstraint("(maintainer_id IS NULL) <> (staff_id IS NULL)", name="one_owner"),
        sa.CheckConstraint("outcome IN ('titan', 'other', 'withheld')", name="known_outcome"),
        sa.CheckConstraint("sign_count >= 0", name="sign_count_not_negative"),
    )

    id: int | None = Field(default=None, primary_key=True)
    maintainer_id: int | None = Field(default=None, foreign_key="maintainer.id", index=True)
    staff_id: int | None = Field(default=None, foreign_key="staff.id", index=True)
    credential_id: str = Field(max_length=1400, unique=True)  # base64url, as browsers send it
    public_key: bytes = Field(sa_type=sa.LargeBinary, nullable=False)  # COSE
    sign_count: int = 0
    name: str = Field(max_length=60)
    aaguid: str = Field(max_length=36)
    attestation_format: str = Field(max_length=20)
    attestation_object: bytes = Field(sa_type=sa.LargeBinary, nullable=False)
    client_data: bytes = Field(sa_type=sa.LargeBinary, nullable=False)
    model: str = Field(default="", max_length=200)
    trusted: bool = False
    outcome: str = Field(max_length=10)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A programme decision that a flagged key counts as a Titan activation after all.
    accepted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    accepted_by: str = Field(default="", max_length=200)
    accepted_reason: str = Field(default="", max_length=1000)
    # Removed by its owner (or, for staff, by themselves): no longer listed or usable, but kept
    # with its attestation, like everything else here ("nothing is deleted").
    removed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def counts_as_titan(self) -> bool:
        return self.outcome == KeyOutcome.TITAN or self.accepted_at is not None


class WebAuthnChallenge(SQLModel, table=True):
    """A challenge handed to a browser: bound to one person and one ceremony, used once,
    expiring in minutes. Kept in the database, so any server can complete it."""

    __tablename__ = "webauthn_challenge"

    id: str = Field(primary_key=True, max_length=64)  # a random token the page sends back
    ceremony: str = Field(max_length=40)
    maintainer_id: int | None = Field(default=None, foreign_key="maintainer.id")
    staff_id: int | None = Field(default=None, foreign_key="staff.id")
    state: str = Field(max_length=4000)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RecoveryCode(SQLModel, table=True):
    """A single-use code that stands in for a staff member's security key; only its hash is
    kept."""

    __tablename__ = "staff_recovery_code"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff.id", index=True)
    code_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class StaffEnrolment(SQLModel, table=True):
    """A single-use, expiring link an admin issues so a staff member can register their first
    security key (``accounts.enrolment``): the password alone is not enough. Only the SHA-256
    of its token is kept; a newer link replaces the ones before it."""

    __tablename__ = "staff_enrolment"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    replaced_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ErasureRequest(SQLModel, table=True):
    """A maintainer asked for their personal data to be erased. What can go at once goes at
    once; while a parcel is in flight the request stays open (programme staff see it) and the
    purge completes it when the claim ends."""

    __tablename__ = "erasure_request"
    __table_args__ = (
        sa.Index(
            "uq_erasure_request_open_per_maintainer",
            "maintainer_id",
            unique=True,
            sqlite_where=sa.text("completed_at IS NULL"),
            postgresql_where=sa.text("completed_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    maintainer_id: int = Field(foreign_key="maintainer.id", index=True)
    requested_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebSession(SQLModel, table=True):
    """A browser's session, kept on the server (``accounts.sessions``): its cookie holds only
    a random id, of which this keeps the hash. Signing out deletes the row, so a copied cookie
    opens nothing after; the owner (none, a maintainer or a staff member) can list and end
    their sessions."""

    __tablename__ = "web_session"
    __table_args__ = (sa.Index("ix_web_session_owner", "owner_kind", "owner_id"),)

    id: str = Field(primary_key=True, max_length=64)  # SHA-256 of the cookie's id, in hex
    owner_kind: str = Field(default="", max_length=20)  # "", "maintainer" or "staff"
    owner_id: int | None = None
    data: str = Field(default="", sa_type=sa.Text)  # Flask's tagged JSON
    user_agent: str = Field(default="", max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    last_seen_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    # Ends when unused for the idle time or at the absolute limit, whichever comes first.
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    ends_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
