"""Sign-in and account management: typed functions over an explicit session that never commit."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select
from werkzeug.security import check_password_hash, generate_password_hash

from accounts.errors import (
    InvalidCredentials,
    LastAdmin,
    MaintainerExists,
    SignInLinkExpired,
    SignInLinkInvalid,
    SignInLinkUsed,
    StaffEmailTaken,
    StaffNotFound,
    WeakPassword,
)
from accounts.models import (
    Maintainer,
    SignInLink,
    SignInRequest,
    Staff,
    StaffRole,
    StaffRoleGrant,
)
from accounts.sessions import end_sessions
from core import tasks
from core.actors import Actor, ActorKind
from core.audit import record_event
from core.db import utcnow
from core.mail import Mail, Mailer, render

# werkzeug's scrypt (n=2^15, r=8, p=1): memory-hard and needs no extra dependency.
PASSWORD_METHOD = "scrypt"  # noqa: S105 - a hash method, not a password
MIN_PASSWORD_LENGTH = 12
# Hashed once at import so that an unknown address costs as much time as a wrong password.
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16), method=PASSWORD_METHOD)
_TOKEN_BYTES = 32
# Readable passwords for staff: no 0/O or 1/l/I to misread when handed over.
_PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # noqa: S105


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_password(length: int = 20) -> str:
    """A random password of ``length`` readable characters (about 115 bits at 20)."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))


def actor_for(user: Maintainer | Staff | None) -> Actor:
    """The audit actor for a signed-in person (or an anonymous visitor)."""
    if isinstance(user, Maintainer):
        return Actor(ActorKind.MAINTAINER, user.id, user.username)
    if isinstance(user, Staff):
        return Actor(ActorKind.STAFF, user.id, user.email)
    return Actor.anonymous()


# --- maintainers ------------------------------------------------------------------------------


def find_maintainer_by_email(*, session: Session, email: str) -> Maintainer | None:
    return session.exec(
        select(Maintainer).where(sa.func.lower(Maintainer.email) == normalize_email(email))
    ).first()


def find_maintainer_by_username(*, session: Session, username: str) -> Maintainer | None:
    return session.exec(
        select(Maintainer).where(sa.func.lower(Maintainer.username) == username.strip().lower())
    ).first()


def create_maintainer(
    *,
    session: Session,
    actor: Actor,
    username: str,
    email: str,
    display_name: str = "",
    country: str | None = None,
) -> Maintainer:
    """Add a maintainer; the username and the email must be new, whatever their case."""
    if find_maintainer_by_username(session=session, username=username):
        raise MaintainerExists(f"A maintainer named {username!r} exists already.")
    if find_maintainer_by_email(session=session, email=email):
        raise MaintainerExists("Another maintainer uses that email address.")
    maintainer = Maintainer(
        username=username.strip(),
        email=normalize_email(email),
        display_name=display_name.strip(),
        country=country,
        created_at=utcnow(),
    )
    session.add(maintainer)
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="maintainer.created",
        subject_kind="maintainer",
        subject_id=maintainer.id,
        details={"after": {"username": maintainer.username, "country": country}},
    )
    return maintainer


def change_maintainer_email(
    *, session: Session, actor: Actor, maintainer: Maintainer, email: str
) -> Maintainer:
    """Record a maintainer's new address (from PyPI); it must be verified again."""
    if find_maintainer_by_email(session=session, email=email) not in (None, maintainer):
        raise MaintainerExists("Another maintainer uses that email address.")
    maintainer.email = normalize_email(email)
    maintainer.email_verified_at = None
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="maintainer.email_changed",
        subject_kind="maintainer",
        subject_id=maintainer.id,
    )
    return maintainer


def set_maintainer_country(
    *, session: Session, actor: Actor, maintainer: Maintainer, country: str
) -> Maintainer:
    """Record where the maintainer's keys would be shipped (an ISO code, already checked)."""
    before = maintainer.country
    maintainer.country = country
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="maintainer.country_set",
        subject_kind="maintainer",
        subject_id=maintainer.id,
        details={"before": before, "after": country},
    )
    return maintainer


SIGN_IN_LINK_TASK = "accounts.sign_in_link"


def request_sign_in_link(*, session: Session, email: str) -> None:
    """Record that a link was asked for ``email``; a consumer answers (``send_sign_in_link``).

    The request writes the same two rows for any address and opens no SMTP connection, so
    neither its answer nor its timing tells a known address from an unknown one."""
    request = SignInRequest(email=normalize_email(email)[:320], created_at=utcnow())
    session.add(request)
    session.flush()
    tasks.enqueue(session=session, name=SIGN_IN_LINK_TASK, subject_id=request.id)


def forget_sign_in_requests(*, session: Session, older_than: timedelta) -> int:
    """Drop requests no consumer answered (its task failed): an address is not kept for
    longer than a link would have lasted. Returns how many."""
    gone = session.execute(
        sa.delete(SignInRequest).where(col(SignInRequest.created_at) < utcnow() - older_than)
    )
    return int(gone.rowcount)  # type: ignore[attr-defined]


def send_sign_in_link(
    *,
    session: Session,
    mailer: Mailer,
    request_id: int,
    base_url: str,
    valid_for: timedelta,
) -> None:
    """Answer a sign-in request: email a single-use link if the address belongs to a
    maintainer, record the attempt either way, and forget the address asked for."""
    request = session.get(SignInRequest, request_id)
    if request is None:
        raise tasks.TaskFailed(f"Sign-in request {request_id} no longer exists.")
    email = request.email
    session.delete(request)
    maintainer = find_maintainer_by_email(session=session, email=email)
    if maintainer is None:
        record_event(
            session=session,
            actor=Actor.anonymous(),
            action="sign_in.link_requested_unknown",
            details={"email_domain": normalize_email(email).rpartition("@")[2][:100]},
        )
        return
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    now = utcnow()
    link = SignInLink(
        maintainer_id=maintainer.id,  # type: ignore[arg-type]
        token_hash=hash_token(token),
        created_at=now,
        expires_at=now + valid_for,
    )
    session.add(link)
    session.flush()
    minutes = int(valid_for.total_seconds() // 60)
    mailer.send(
        session=session,
        mail=Mail(
            recipient=maintainer.email,
            subject="Your sign-in link for the Security Key Giveaway",
            body=render(
                "sign_in_link.txt",
                greeting_name=maintainer.greeting_name,
                base_url=base_url,
                token=token,
                minutes=minutes,
            ),
            purpose="sign_in_link",
        ),
    )
    record_event(
        session=session,
        actor=Actor.anonymous(),
        action="sign_in.link_sent",
        subject_kind="maintainer",
        subject_id=maintainer.id,
        details={"link_id": link.id, "expires_at": link.expires_at.isoformat()},
    )


def check_sign_in_link(*, session: Session, token: str) -> Maintainer:
    """The maintainer a link signs in, or the reason it cannot (it is not used up here)."""
    link = _find_link(session, token)
    _refuse_unusable(link, utcnow())
    maintainer = session.get(Maintainer, link.maintainer_id)
    assert maintainer is not None  # a foreign key guarantees it
    return maintainer


def use_sign_in_link(*, session: Session, token: str) -> Maintainer:
    """Spend a sign-in link and return its maintainer; a link works once, even under a race."""
    link = _find_link(session, token)
    now = utcnow()
    _refuse_unusable(link, now)
    # The conditional update is the guarantee: of two simultaneous uses, one changes a row.
    spent = session.execute(
        sa.update(SignInLink)
        .where(col(SignInLink.id) == link.id, col(SignInLink.used_at).is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise SignInLinkUsed("This link was already used. Ask for a new one below.")
    session.refresh(link)
    maintainer = session.get(Maintainer, link.maintainer_id)
    assert maintainer is not None
    if maintainer.email_verified_at is None:
        # Opening a link sent to the address proves the maintainer reads it.
        maintainer.email_verified_at = now
    record_sign_in(session=session, maintainer=maintainer, method="email_link", link_id=link.id)
    return maintainer


def record_sign_in(
    *, session: Session, maintainer: Maintainer, method: str, **details: object
) -> None:
    """Audit a maintainer's sign-in, with how they proved who they are."""
    record_event(
        session=session,
        actor=actor_for(maintainer),
        action="sign_in.maintainer",
        subject_kind="maintainer",
        subject_id=maintainer.id,
        details={"method": method, **details},
    )


def _find_link(session: Session, token: str) -> SignInLink:
    link = None
    if 20 <= len(token) <= 100:
        link = session.exec(
            select(SignInLink).where(SignInLink.token_hash == hash_token(token))
        ).first()
    if link is None:
        raise SignInLinkInvalid(
            "This link is not one we sent, or it was copied incompletely. Ask for a new one below."
        )
    return link


def _refuse_unusable(link: SignInLink, now: datetime) -> None:
    if link.used_at is not None:
        raise SignInLinkUsed("This link was already used. Ask for a new one below.")
    if link.expires_at <= now:
        raise SignInLinkExpired(
            "Sign-in links work for a few minutes only, and this one has expired. "
            "Ask for a new one below."
        )


# --- staff ------------------------------------------------------------------------------------


def find_staff_by_email(*, session: Session, email: str) -> Staff | None:
    return session.exec(
        select(Staff).where(sa.func.lower(Staff.email) == normalize_email(email))
    ).first()


def get_staff(*, session: Session, staff_id: int) -> Staff:
    staff = session.get(Staff, staff_id)
    if staff is None:
        raise StaffNotFound(f"There is no staff member with id {staff_id}.")
    return staff


def roles_of(*, session: Session, staff: Staff) -> frozenset[StaffRole]:
    rows = session.exec(
        select(StaffRoleGrant.role).where(StaffRoleGrant.staff_id == staff.id)
    ).all()
    return frozenset(StaffRole(role) for role in rows)


def list_staff(*, session: Session) -> list[tuple[Staff, frozenset[StaffRole]]]:
    """Every staff member with their roles, by name."""
    people = session.exec(select(Staff).order_by(sa.func.lower(Staff.name))).all()
    grants = session.exec(select(StaffRoleGrant)).all()
    roles: dict[int, set[StaffRole]] = {}
    for grant in grants:
        roles.setdefault(grant.staff_id, set()).add(StaffRole(grant.role))
    return [(person, frozenset(roles.get(person.id or 0, ()))) for person in people]


def authenticate_staff(*, session: Session, email: str, password: str) -> Staff:
    """The active staff member with this email and password; the same error for any mismatch."""
    staff = find_staff_by_email(session=session, email=email)
    password_hash = staff.password_hash if staff else _DUMMY_HASH
    matches = check_password_hash(password_hash, password)
    if staff is None or not matches or not staff.active:
        record_event(
            session=session,
            actor=Actor.anonymous(),
            action="sign_in.staff_failed",
            subject_kind="staff" if staff else "",
            subject_id=staff.id if staff else "",
            details={"reason": "inactive" if staff and matches else "bad_credentials"},
        )
        raise InvalidCredentials("That email and password do not match an active staff account.")
    # Only the first step: the sign-in itself (``sign_in.staff``) is recorded when the second
    # factor completes it (accounts.second_factor).
    record_event(
        session=session,
        actor=actor_for(staff),
        action="sign_in.staff_password",
        subject_kind="staff",
        subject_id=staff.id,
    )
    return staff


def create_staff(
    *,
    session: Session,
    actor: Actor,
    email: str,
    name: str,
    roles: Iterable[StaffRole],
    password: str,
) -> Staff:
    """Add a staff member with a password (at least MIN_PASSWORD_LENGTH characters)."""
    _require_strong(password)
    if find_staff_by_email(session=session, email=email):
        raise StaffEmailTaken("A staff member with that email address exists already.")
    now = utcnow()
    staff = Staff(
        email=normalize_email(email),
        name=name.strip(),
        password_hash=generate_password_hash(password, method=PASSWORD_METHOD),
        session_nonce=secrets.token_hex(8),
        created_at=now,
        password_changed_at=now,
    )
    session.add(staff)
    session.flush()
    granted = sorted(set(roles))
    for role in granted:
        session.add(StaffRoleGrant(staff_id=staff.id, role=role.value))  # type: ignore[arg-type]
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="staff.created",
        subject_kind="staff",
        subject_id=staff.id,
        details={"after": {"email": staff.email, "name": staff.name, "roles": granted}},
    )
    return staff


def update_staff(
    *,
    session: Session,
    actor: Actor,
    staff_id: int,
    name: str,
    roles: Iterable[StaffRole],
    active: bool,
) -> Staff:
    """Change a staff member's name, roles or whether they may sign in."""
    staff = get_staff(session=session, staff_id=staff_id)
    before_roles = sorted(roles_of(session=session, staff=staff))
    after_roles = sorted(set(roles))
    losing_admin = StaffRole.ADMIN in before_roles and (
        StaffRole.ADMIN not in after_roles or not active
    )
    if losing_admin and _active_admin_count(session) <= 1:
        raise LastAdmin("This is the last active administrator; make someone else admin first.")
    before = {"name": staff.name, "roles": before_roles, "active": staff.active}
    staff.name = name.strip()
    if staff.active and not active:
        staff.session_nonce = secrets.token_hex(8)  # signs them out everywhere
        end_sessions(session=session, actor=actor, owner_kind=ActorKind.STAFF, owner_id=staff_id)
    staff.active = active
    session.execute(sa.delete(StaffRoleGrant).where(col(StaffRoleGrant.staff_id) == staff.id))
    for role in after_roles:
        session.add(StaffRoleGrant(staff_id=staff.id, role=role.value))  # type: ignore[arg-type]
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="staff.updated",
        subject_kind="staff",
        subject_id=staff.id,
        details={
            "before": before,
            "after": {"name": staff.name, "roles": after_roles, "active": active},
        },
    )
    return staff


def reset_staff_password(*, session: Session, actor: Actor, staff_id: int, password: str) -> Staff:
    """Set a new password and sign the staff member out of every other session."""
    _require_strong(password)
    staff = get_staff(session=session, staff_id=staff_id)
    staff.password_hash = generate_password_hash(password, method=PASSWORD_METHOD)
    staff.session_nonce = secrets.token_hex(8)
    staff.password_changed_at = utcnow()
    end_sessions(session=session, actor=actor, owner_kind=ActorKind.STAFF, owner_id=staff_id)
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="staff.password_reset",
        subject_kind="staff",
        subject_id=staff.id,
    )
    return staff


def _active_admin_count(session: Session) -> int:
    return session.exec(
        select(sa.func.count())
        .select_from(StaffRoleGrant)
        .join(Staff, col(Staff.id) == StaffRoleGrant.staff_id)
        .where(StaffRoleGrant.role == StaffRole.ADMIN.value, col(Staff.active).is_(True))
    ).one()


def _require_strong(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")


# --- flask-login ------------------------------------------------------------------------------


def load_user(*, session: Session, user_id: str) -> Maintainer | Staff | None:
    """Resolve a flask-login id (``maintainer:7`` or ``staff:3:nonce``) to an account."""
    kind, _, rest = user_id.partition(":")
    if kind == "maintainer" and rest.isdigit():
        return session.get(Maintainer, int(rest))
    if kind == "staff":
        staff_id, _, nonce = rest.partition(":")
        if staff_id.isdigit():
            staff = session.get(Staff, int(staff_id))
            if staff is not None and secrets.compare_digest(staff.session_nonce, nonce):
                return staff
    return None
