"""Staff's second factor: after the password, a security key — or one of eight single-use
recovery codes, issued when the first key is registered and kept only as hashes. A staff member
cannot remove their last key."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from accounts import security_keys
from accounts.errors import InvalidCredentials
from accounts.models import RecoveryCode, SecurityKey, Staff
from accounts.security_keys import KeyNotFound, KeyProblem
from accounts.services import actor_for
from db import Actor, record_event, utcnow
from distribution import webauthn
from settings import Settings

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
) -> tuple[SecurityKey, list[str]]:
    """Store a staff member's key; with their first key, their recovery codes (shown once)."""
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
    return key, issue_recovery_codes(session=session, staff=staff) if first else []


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
    return security_keys.authenticate(
        session=session,
        settings=settings,
        owner=staff,
        ceremony=SIGN_IN,
        token=token,
        response=response,
    )


def issue_recovery_codes(*, session: Session, staff: Staff) -> list[str]:
    """Eight new single-use codes; those issued before stop working. Only hashes are kept."""
    now = utcnow()
    session.execute(
        sa.update(RecoveryCode)
        .where(col(RecoveryCode.staff_id) == staff.id, col(RecoveryCode.used_at).is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    codes = [_new_code() for _ in range(RECOVERY_CODES)]
    for code in codes:
        session.add(RecoveryCode(staff_id=staff.id, code_hash=_hash(code), created_at=now))  # type: ignore[arg-type]
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


def use_recovery_code(*, session: Session, staff: Staff, code: str) -> int:
    """Spend one recovery code instead of the key; how many are left."""
    spent = session.execute(
        sa.update(RecoveryCode)
        .where(
            col(RecoveryCode.staff_id) == staff.id,
            col(RecoveryCode.code_hash) == _hash(code),
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
    """Remove one of the staff member's keys, never the last."""
    keys = security_keys.keys_of(session=session, owner=staff)
    key = next((k for k in keys if k.id == key_id), None)
    if key is None:
        raise KeyNotFound("You have no such key.")
    if len(keys) == 1:
        raise KeyProblem("This is your last key: register another one before removing it.")
    record_event(
        session=session,
        actor=actor,
        action="security_key.removed",
        subject_kind="security_key",
        subject_id=key.id,
        details={"staff_id": staff.id, "name": key.name, "aaguid": key.aaguid},
    )
    session.delete(key)
    session.flush()


def _new_code() -> str:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def _hash(code: str) -> str:
    """Codes are typed back loosely: case, blanks and dashes do not matter."""
    cleaned = "".join(ch for ch in code.upper() if ch.isalnum())
    return hashlib.sha256(cleaned.encode()).hexdigest()
