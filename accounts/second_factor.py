"""Staff's second factor: after the password, a security key — or one of eight single-use
recovery codes, issued when the first key is registered and kept only as HMACs keyed with the
app's secret key (a leaked table alone cannot be tried offline against the small code space).
A staff member cannot remove their last key. The sign-in is recorded when the second factor
completes, with how (``sign_in.staff``); the password step has its own event.

The first key needs an enrolment link an admin issued (``accounts.enrolment``), as well as the
password. An admin can reset a staff member's keys (a lost keyring, a key registered by someone
else): their keys and recovery codes stop working, their sessions end, and a new link is issued.

Rotating the secret key voids every recovery code: staff then sign in with their key and issue
new codes on "My keys".
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from accounts import enrolment, security_keys
from accounts.errors import InvalidCredentials
from accounts.models import RecoveryCode, SecurityKey, Staff
from accounts.security_keys import KeyProblem
from accounts.services import actor_for
from accounts.sessions import end_sessions
from adapters import webauthn
from core.actors import Actor, ActorKind
from core.audit import record_event
from core.db import utcnow
from core.mail import Mailer
from core.settings import Settings

REGISTER = "staff.register"
SIGN_IN = "staff.sign_in"
RECOVERY_CODES = 8
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud, typed back


def has_keys(*, session: Session, staff: Staff) -> bool:
    return bool(security_keys.keys_of(session=session, owner=staff))


def registration_options(
    *, session: Session, settings: Settings, staff: Staff
) -> tuple[dict[str, Any], str]:
    return security_keys.begin_registration(
        session=session, settings=settings, owner=staff, ceremony=REGISTER
    )


def register(
    *,
    session: Session,
    settings: Settings,
    metadata: webauthn.Metadata,
    staff: Staff,
    token: str,
    response: Mapping[str, Any] | str,
    name: str,
    enrolment_token: str | None = None,
) -> tuple[SecurityKey, list[str]]:
    """Store a staff member's key; with their first key, their recovery codes (shown once).
    With an ``enrolment_token``, the key is registered right after the password, spends the
    link and completes the sign-in; without one, the staff member is signed in already."""
    if enrolment_token is not None:
        # Their row, locked: registrations racing with one link take turns, and the second
        # finds it spent before storing its key.
        _lock(session, staff)
        enrolment.check_link(session=session, token=enrolment_token)
    first = not has_keys(session=session, staff=staff)
    key, _registration = security_keys.register_key(
        session=session,
        settings=settings,
        metadata=metadata,
        actor=actor_for(staff),
        owner=staff,
        ceremony=REGISTER,
        token=token,
        response=response,
        name=name,
    )
    if enrolment_token is not None:
        enrolment.spend_link(session=session, token=enrolment_token, staff=staff)
        _signed_in(session, staff, "security_key", key_id=key.id, enrolled=True)
    codes = issue_recovery_codes(session=session, settings=settings, staff=staff) if first else []
    return key, codes


def sign_in_options(
    *, session: Session, settings: Settings, staff: Staff
) -> tuple[dict[str, Any], str]:
    return security_keys.begin_authentication(
        session=session, settings=settings, owner=staff, ceremony=SIGN_IN
    )


def verify_key(
    *,
    session: Session,
    settings: Settings,
    staff: Staff,
    token: str,
    response: Mapping[str, Any] | str,
) -> SecurityKey:
    """The key that completes a staff member's sign-in (recorded)."""
    key = security_keys.authenticate(
        session=session,
        settings=settings,
        owner=staff,
        ceremony=SIGN_IN,
        token=token,
        response=response,
    )
    _signed_in(session, staff, "security_key", key_id=key.id)
    return key


def signed_in_without_key(*, session: Session, settings: Settings, staff: Staff) -> bool:
    """Demo mode lets demo staff without a key sign in on their password alone (recorded)."""
    if not settings.demo_mode or has_keys(session=session, staff=staff):
        return False
    _signed_in(session, staff, "password", demo=True)
    return True


def _signed_in(session: Session, staff: Staff, method: str, **details: Any) -> None:
    record_event(
        session=session,
        actor=actor_for(staff),
        action="sign_in.staff",
        subject_kind="staff",
        subject_id=staff.id,
        details={"method": method, **details},
    )


def issue_recovery_codes(*, session: Session, settings: Settings, staff: Staff) -> list[str]:
    """Eight new single-use codes; those issued before stop working. Only hashes are kept."""
    now = _void_recovery_codes(session, staff)
    codes = [_new_code() for _ in range(RECOVERY_CODES)]
    for code in codes:
        session.add(
            RecoveryCode(staff_id=staff.id, code_hash=_hash(settings, code), created_at=now)  # type: ignore[arg-type]
        )
    session.flush()
    record_event(
        session=session,
        actor=actor_for(staff),
        action="staff.recovery_codes_issued",
        subject_kind="staff",
        subject_id=staff.id,
        details={"codes": RECOVERY_CODES},
    )
    return codes


def use_recovery_code(*, session: Session, settings: Settings, staff: Staff, code: str) -> int:
    """Spend one recovery code instead of the key, completing the sign-in; how many are left."""
    spent = session.execute(
        sa.update(RecoveryCode)
        .where(
            col(RecoveryCode.staff_id) == staff.id,
            col(RecoveryCode.code_hash) == _hash(settings, code),
            col(RecoveryCode.used_at).is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        record_event(
            session=session,
            actor=Actor.anonymous(),
            action="staff.recovery_code_refused",
            subject_kind="staff",
            subject_id=staff.id,
        )
        raise InvalidCredentials("That recovery code is not valid, or it was used already.")
    left = recovery_codes_left(session=session, staff=staff)
    record_event(
        session=session,
        actor=actor_for(staff),
        action="staff.recovery_code_used",
        subject_kind="staff",
        subject_id=staff.id,
        details={"left": left},
    )
    _signed_in(session, staff, "recovery_code", codes_left=left)
    return left


def recovery_codes_left(*, session: Session, staff: Staff) -> int:
    return int(
        session.exec(
            select(sa.func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.staff_id == staff.id, col(RecoveryCode.used_at).is_(None))
        ).one()
    )


def remove_key(*, session: Session, actor: Actor, staff: Staff, key_id: int) -> None:
    """Remove one of the staff member's keys, never the last (the record is kept, audited)."""
    # Two removals of their last two keys, at once from two tabs, take turns, and the second
    # counts one key left.
    _lock(session, staff)
    key = security_keys.own_key(session=session, owner=staff, key_id=key_id)
    if len(security_keys.keys_of(session=session, owner=staff)) == 1:
        raise KeyProblem("This is your last key: register another one before removing it.")
    security_keys.mark_removed(session=session, actor=actor, key=key)


def reset_keys(
    *,
    session: Session,
    actor: Actor,
    staff: Staff,
    valid_for: timedelta,
    mailer: Mailer | None = None,
    base_url: str = "",
) -> str:
    """An admin resets ``staff``'s keys: each is removed (its record kept), the recovery codes
    stop working, every session ends, and a new enrolment link is issued (emailed with a
    ``mailer``); its token. Audited as ``staff.keys_reset``."""
    _lock(session, staff)
    keys = security_keys.keys_of(session=session, owner=staff)
    for key in keys:
        security_keys.mark_removed(session=session, actor=actor, key=key)
    _void_recovery_codes(session, staff)
    ended = end_sessions(
        session=session, actor=actor, owner_kind=ActorKind.STAFF, owner_id=staff.id or 0
    )
    record_event(
        session=session,
        actor=actor,
        action="staff.keys_reset",
        subject_kind="staff",
        subject_id=staff.id,
        details={"keys_removed": len(keys), "sessions_ended": ended},
    )
    return enrolment.issue_link(
        session=session,
        actor=actor,
        staff=staff,
        valid_for=valid_for,
        mailer=mailer,
        base_url=base_url,
    )


def _lock(session: Session, staff: Staff) -> None:
    """Lock the staff member's row until the commit. (SQLite's writers take turns anyway.)"""
    session.exec(select(Staff).where(col(Staff.id) == staff.id).with_for_update()).one()


def _void_recovery_codes(session: Session, staff: Staff) -> datetime:
    now = utcnow()
    session.execute(
        sa.update(RecoveryCode)
        .where(col(RecoveryCode.staff_id) == staff.id, col(RecoveryCode.used_at).is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return now


def _new_code() -> str:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def _hash(settings: Settings, code: str) -> str:
    """HMAC-SHA256 keyed with the secret key. Codes are typed back loosely: case, blanks and
    dashes do not matter."""
    cleaned = "".join(ch for ch in code.upper() if ch.isalnum())
    return hmac.new(settings.secret_key.encode(), cleaned.encode(), hashlib.sha256).hexdigest()
