"""Security keys of maintainers and staff: challenges kept in the database, registering a key,
and signing in with one. ``distribution.webauthn`` does the cryptography; this module keeps the
records.

A challenge is bound to one person (or, for a maintainer's sign-in by address, to nobody) and
one ceremony, used once (a conditional UPDATE), and expires in minutes, so any server can
complete it and none can replay it. A sign counter that goes backwards is refused and audited.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Collection, Mapping
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from accounts.errors import AccountsError
from accounts.models import KeyOutcome, Maintainer, SecurityKey, Staff, WebAuthnChallenge
from accounts.services import actor_for
from db import Actor, record_event, utcnow
from distribution import webauthn
from settings import Settings

RP_NAME = "Security Key Giveaway"
Owner = Maintainer | Staff


class KeyProblem(AccountsError):
    """A key cannot be registered, accepted or removed (already registered, a bad name, …)."""

    title = "That did not work"


class KeyNotFound(KeyProblem):
    """No such key among the person's own: another person's key is not found either."""

    status_code = 404
    title = "No such key"


def relying_party(settings: Settings) -> webauthn.RelyingParty:
    return webauthn.RelyingParty.from_base_url(settings.base_url, name=RP_NAME)


def keys_of(*, session: Session, owner: Owner) -> list[SecurityKey]:
    column = SecurityKey.maintainer_id if isinstance(owner, Maintainer) else SecurityKey.staff_id
    return list(
        session.exec(
            select(SecurityKey).where(column == owner.id).order_by(col(SecurityKey.id))
        ).all()
    )


def begin_registration(
    *, session: Session, settings: Settings, owner: Owner, ceremony: str
) -> tuple[dict[str, Any], str]:
    """Options for ``navigator.credentials.create`` and the token of the challenge kept."""
    exclude = [
        decode(key.credential_id)
        for key in keys_of(session=session, owner=owner)
        # A key registered without make and model may be registered again, to show it.
        if key.outcome != KeyOutcome.WITHHELD
    ]
    kind = "maintainer" if isinstance(owner, Maintainer) else "staff"
    options, challenge = webauthn.registration_options(
        rp=relying_party(settings),
        user_id=f"{kind}:{owner.id}".encode(),
        user_name=owner.email,
        display_name=(
            owner.display_name or owner.username if isinstance(owner, Maintainer) else owner.name
        ),
        exclude=exclude,
    )
    return options, keep_challenge(session, challenge, ceremony, owner)


def register_key(
    *,
    session: Session,
    settings: Settings,
    metadata: webauthn.Metadata,
    actor: Actor,
    owner: Owner,
    ceremony: str,
    token: str,
    response: Mapping[str, Any] | str,
    name: str,
    titan_aaguids: Collection[UUID | str] = webauthn.TITAN_AAGUIDS,
) -> tuple[SecurityKey, webauthn.Registration]:
    """Check the browser's answer and store the key (audited)."""
    name = " ".join(str(name).split())
    if not 1 <= len(name) <= 60:
        raise KeyProblem("Give the key a name of 1 to 60 characters, such as “Titan on my keys”.")
    registration = webauthn.verify_registration(
        rp=relying_party(settings),
        challenge=take_challenge(session, token, ceremony, owner),
        response=response,
        metadata=metadata,
        titan_aaguids=titan_aaguids,
    )
    credential_id = encode(registration.credential_id)
    key = session.exec(
        select(SecurityKey).where(SecurityKey.credential_id == credential_id)
    ).first()
    if key is not None and (
        _owner_of(key) != _owner_ids(owner) or key.outcome != KeyOutcome.WITHHELD
    ):
        raise KeyProblem("This key is registered already. Use your other key.")
    fields: dict[str, Any] = {
        "name": name,
        "public_key": registration.public_key,
        "sign_count": registration.sign_count,
        "aaguid": str(registration.aaguid),
        "attestation_format": registration.attestation_format,
        "attestation_object": registration.attestation_object,
        "client_data": registration.client_data,
        "model": registration.model or "",
        "trusted": registration.trusted,
        "outcome": KeyOutcome(registration.outcome.value).value,
        "created_at": utcnow(),
    }
    maintainer_id, staff_id = _owner_ids(owner)
    if key is None:
        key = SecurityKey(
            maintainer_id=maintainer_id, staff_id=staff_id, credential_id=credential_id, **fields
        )
    else:  # the same key again, now showing its make and model
        for field, value in fields.items():
            setattr(key, field, value)
    session.add(key)
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="security_key.registered",
        subject_kind="security_key",
        subject_id=key.id,
        details={
            "maintainer_id": maintainer_id,
            "staff_id": staff_id,
            "outcome": key.outcome,
            "aaguid": key.aaguid,
            "model": key.model,
            "format": key.attestation_format,
            "trusted": key.trusted,
        },
    )
    return key, registration


def begin_authentication(
    *,
    session: Session,
    settings: Settings,
    owner: Owner | None,
    ceremony: str,
    stand_in: bytes = b"",
) -> tuple[dict[str, Any], str]:
    """Options for ``navigator.credentials.get`` over the owner's keys. Without an owner or
    keys, over the made-up ``stand_in`` credential, so the answer reveals nothing."""
    keys = keys_of(session=session, owner=owner) if owner else []
    credentials = [decode(key.credential_id) for key in keys] or [
        stand_in or secrets.token_bytes(32)
    ]
    options, challenge = webauthn.authentication_options(
        rp=relying_party(settings), credentials=credentials
    )
    return options, keep_challenge(session, challenge, ceremony, owner if keys else None)


def challenge_owner(*, session: Session, token: str) -> Owner | None:
    """Whom a sign-in challenge was made for (nobody, when the address had no keys)."""
    row = session.get(WebAuthnChallenge, str(token)[:64])
    if row is None:
        return None
    if row.maintainer_id is not None:
        return session.get(Maintainer, row.maintainer_id)
    return session.get(Staff, row.staff_id) if row.staff_id is not None else None


def authenticate(
    *,
    session: Session,
    settings: Settings,
    owner: Owner | None,
    ceremony: str,
    token: str,
    response: Mapping[str, Any] | str,
) -> SecurityKey:
    """The owner's key that signed the challenge, its counter moved on. A counter that went
    backwards (a cloned key, say) is refused and audited."""
    challenge = take_challenge(session, token, ceremony, owner)
    keys = (
        {decode(key.credential_id): key for key in keys_of(session=session, owner=owner)}
        if owner
        else {}
    )
    try:
        assertion = webauthn.verify_authentication(
            rp=relying_party(settings),
            challenge=challenge,
            response=response,
            credentials={
                credential: webauthn.StoredKey(key.public_key, key.sign_count)
                for credential, key in keys.items()
            },
        )
    except webauthn.CounterRegression as regression:
        record_event(
            session=session,
            actor=Actor.anonymous(),
            action="security_key.counter_regression",
            subject_kind="security_key",
            subject_id=keys[regression.credential_id].id,
            details={"stored": regression.stored, "received": regression.received},
        )
        raise
    key = keys[assertion.credential_id]
    key.sign_count, key.last_used_at = assertion.sign_count, utcnow()
    session.flush()
    record_event(
        session=session,
        actor=actor_for(owner),
        action="security_key.used",
        subject_kind="security_key",
        subject_id=key.id,
        details={"ceremony": ceremony},
    )
    return key


def keep_challenge(
    session: Session, challenge: webauthn.Challenge, ceremony: str, owner: Owner | None
) -> str:
    token = secrets.token_urlsafe(32)
    maintainer_id, staff_id = _owner_ids(owner)
    session.add(
        WebAuthnChallenge(
            id=token,
            ceremony=ceremony,
            maintainer_id=maintainer_id,
            staff_id=staff_id,
            state=challenge.to_json(),
            created_at=challenge.created_at,
            expires_at=challenge.expires_at,
        )
    )
    session.flush()
    return token


def take_challenge(
    session: Session, token: str, ceremony: str, owner: Owner | None
) -> webauthn.Challenge:
    """The challenge behind ``token``, used up now: only for the person it was made for, only
    once, only before it expires."""
    row = session.get(WebAuthnChallenge, str(token)[:64])
    if (
        row is None
        or row.ceremony != ceremony
        or (row.maintainer_id, row.staff_id) != _owner_ids(owner)
    ):
        raise webauthn.ChallengeMismatch(
            "This request is not one we made for you. Reload the page and try again."
        )
    used = session.execute(
        sa.update(WebAuthnChallenge)
        .where(col(WebAuthnChallenge.id) == row.id, col(WebAuthnChallenge.used_at).is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise webauthn.ChallengeMismatch(
            "This request was used already. Reload the page and try again."
        )
    if row.expires_at <= utcnow():
        raise webauthn.ChallengeExpired(
            "The request timed out. Reload the page and touch your key within a few minutes."
        )
    return webauthn.Challenge.from_json(row.state)


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _owner_ids(owner: Owner | None) -> tuple[int | None, int | None]:
    if isinstance(owner, Maintainer):
        return owner.id, None
    return None, None if owner is None else owner.id


def _owner_of(key: SecurityKey) -> tuple[int | None, int | None]:
    return key.maintainer_id, key.staff_id
