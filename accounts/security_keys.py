"""Security keys of maintainers and staff: challenges kept in the database, registering a key,
and signing in with one. ``distribution.webauthn`` does the cryptography; this module keeps the
records.

A challenge is bound to one person (or, for a maintainer's sign-in by address, to nobody) and
one ceremony, used once (a conditional UPDATE), and expires in minutes, so any server can
complete it and none can replay it; an hour after it expired, the next challenge kept sweeps it
away. A sign counter that goes backwards is refused and audited, and so is a key refused for a
forged or untrusted attestation. A removed key keeps its row (with a ``removed_at``) but is
neither listed nor usable.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from accounts.errors import AccountsError
from accounts.models import KeyOutcome, Maintainer, SecurityKey, Staff, WebAuthnChallenge
from accounts.services import actor_for
from adapters import webauthn
from core.actors import Actor
from core.audit import record_event
from core.db import utcnow
from core.settings import Settings

RP_NAME = "Security Key Giveaway"
Owner = Maintainer | Staff
# How long an expired challenge is kept: an answer this late still hears that it timed out
# rather than that we never asked. Older ones are swept away as new ones are kept.
EXPIRED_CHALLENGES_KEPT_FOR = timedelta(hours=1)


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
    """The owner's keys, oldest first; removed keys are not among them."""
    column = SecurityKey.maintainer_id if isinstance(owner, Maintainer) else SecurityKey.staff_id
    return list(
        session.exec(
            select(SecurityKey)
            .where(column == owner.id, col(SecurityKey.removed_at).is_(None))
            .order_by(col(SecurityKey.id))
        ).all()
    )


def own_key(*, session: Session, owner: Owner, key_id: int) -> SecurityKey:
    """One of the owner's keys (not removed); another person's key is not found either."""
    key = next((k for k in keys_of(session=session, owner=owner) if k.id == key_id), None)
    if key is None:
        raise KeyNotFound("You have no such key.")
    return key


def mark_removed(
    *, session: Session, actor: Actor, key: SecurityKey, unless_accepted: bool = False
) -> None:
    """Remove a key, keeping its record (audited). The callers decide whether it may go; this
    refuses only a key removed meanwhile (or, with ``unless_accepted``, counted as a Titan by
    programme staff meanwhile): the conditional UPDATE lets one of two racing requests win."""
    conditions = [col(SecurityKey.id) == key.id, col(SecurityKey.removed_at).is_(None)]
    if unless_accepted:
        conditions.append(col(SecurityKey.accepted_at).is_(None))
    now = utcnow()
    removed = session.execute(
        sa.update(SecurityKey)
        .where(*conditions)
        .values(removed_at=now)
        .execution_options(synchronize_session=False)
    )
    if removed.rowcount != 1:  # type: ignore[attr-defined]
        raise KeyProblem("This key changed a moment ago. Reload the page and look again.")
    set_committed_value(key, "removed_at", now)
    record_event(
        session=session,
        actor=actor,
        action="security_key.removed",
        subject_kind="security_key",
        subject_id=key.id,
        details={
            "maintainer_id": key.maintainer_id,
            "staff_id": key.staff_id,
            "name": key.name,
            "outcome": key.outcome,
            "aaguid": key.aaguid,
        },
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
    challenge = take_challenge(session, token, ceremony, owner)
    try:
        registration = webauthn.verify_registration(
            rp=relying_party(settings),
            challenge=challenge,
            response=response,
            metadata=metadata,
            titan_aaguids=titan_aaguids,
        )
    except webauthn.AttestationRefused as refused:
        # Someone presented a forged or untrusted key: worth a record, though not the key.
        record_event(
            session=session,
            actor=actor,
            action="security_key.refused",
            subject_kind="maintainer" if isinstance(owner, Maintainer) else "staff",
            subject_id=owner.id,
            details={
                "refusal": type(refused).__name__,
                "aaguid": None if refused.aaguid is None else str(refused.aaguid),
                "format": refused.attestation_format,
                "model": refused.model,
            },
        )
        raise
    credential_id = encode(registration.credential_id)
    key = session.exec(
        select(SecurityKey).where(SecurityKey.credential_id == credential_id)
    ).first()
    # The same key again: to show its make and model after withholding it, or after its owner
    # removed it (its row comes back, updated).
    again = key is not None and (key.outcome == KeyOutcome.WITHHELD or key.removed_at is not None)
    if key is not None and (_owner_of(key) != _owner_ids(owner) or not again):
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
        "removed_at": None,
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
    keys, over the made-up ``stand_in`` credential: no refusal that tells a known address."""
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
    """Keep a challenge for the owner; its token. Sweeps away challenges long expired (every
    options request keeps one, the public sign-in's too): the index on ``expires_at`` finds
    the few that expired since the last sweep."""
    session.execute(
        sa.delete(WebAuthnChallenge)
        .where(col(WebAuthnChallenge.expires_at) < utcnow() - EXPIRED_CHALLENGES_KEPT_FOR)
        .execution_options(synchronize_session=False)
    )
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
