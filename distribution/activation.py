"""Activation: a maintainer registers each key they received over WebAuthn; a genuine Titan
(attestation chained to the FIDO metadata's roots) counts, and the claim is ``activated`` once
as many Titans are registered as the claim holds. Other makes are kept, usable and flagged for
``programme`` staff, who may accept one as an activation with a reason.

Challenges live in the database: bound to one person and one ceremony, used once (a conditional
UPDATE), expiring in minutes. ``distribution.webauthn`` does the cryptography.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from accounts.models import KeyOutcome, Maintainer, SecurityKey, WebAuthnChallenge
from accounts.services import find_maintainer_by_email
from db import Actor, ActorKind, record_event, utcnow
from distribution import webauthn
from distribution.claims import active_claim, items_of, shipment_of, transition_claim
from distribution.errors import DistributionError
from distribution.fulfilment import record_delivery
from distribution.models import ClaimStatus, KeyModel
from settings import Settings

RP_NAME = "Security Key Giveaway"
REGISTER = "maintainer.register"
SIGN_IN = "maintainer.sign_in"


class KeyProblem(DistributionError):
    """A key cannot be registered or accepted (already registered, a bad name, …)."""

    title = "That key could not be registered"


class KeyNotFound(DistributionError):
    status_code = 404
    title = "No such key"


@dataclass(frozen=True)
class KeyRegistered:
    key: SecurityKey
    message: str
    activated: bool


def relying_party(settings: Settings) -> webauthn.RelyingParty:
    return webauthn.RelyingParty.from_base_url(settings.base_url, name=RP_NAME)


def titan_aaguids(*, session: Session) -> set[str]:
    """The AAGUIDs some stock model counts as its own."""
    return {aaguid for model in session.exec(select(KeyModel)).all() for aaguid in model.aaguids}


def keys_of(*, session: Session, maintainer: Maintainer) -> list[SecurityKey]:
    return list(
        session.exec(
            select(SecurityKey)
            .where(SecurityKey.maintainer_id == maintainer.id)
            .order_by(col(SecurityKey.id))
        ).all()
    )


def begin_registration(
    *, session: Session, settings: Settings, maintainer: Maintainer
) -> tuple[dict[str, Any], str]:
    """Options for the browser and the token of the challenge kept for them."""
    exclude = [
        _decode(key.credential_id)
        for key in keys_of(session=session, maintainer=maintainer)
        # A key registered without make and model may be registered again, to show it.
        if key.outcome != KeyOutcome.WITHHELD
    ]
    options, challenge = webauthn.registration_options(
        rp=relying_party(settings),
        user_id=f"maintainer:{maintainer.id}".encode(),
        user_name=maintainer.email,
        display_name=maintainer.display_name or maintainer.username,
        exclude=exclude,
    )
    return options, _keep(session, challenge, REGISTER, maintainer)


def finish_registration(
    *,
    session: Session,
    settings: Settings,
    metadata: webauthn.Metadata,
    actor: Actor,
    maintainer: Maintainer,
    token: str,
    response: Mapping[str, Any] | str,
    name: str,
) -> KeyRegistered:
    """Check the browser's answer, store the key, and activate the claim when it is complete."""
    name = " ".join(str(name).split())
    if not 1 <= len(name) <= 60:
        raise KeyProblem("Give the key a name of 1 to 60 characters, such as “Titan on my keys”.")
    challenge = _take(session, token, REGISTER, maintainer)
    registration = webauthn.verify_registration(
        rp=relying_party(settings),
        challenge=challenge,
        response=response,
        metadata=metadata,
        titan_aaguids=titan_aaguids(session=session),
    )
    credential_id = _encode(registration.credential_id)
    key = session.exec(
        select(SecurityKey).where(SecurityKey.credential_id == credential_id)
    ).first()
    if key is not None and (
        key.maintainer_id != maintainer.id or key.outcome != KeyOutcome.WITHHELD
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
    if key is None:
        key = SecurityKey(maintainer_id=maintainer.id, credential_id=credential_id, **fields)
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
            "maintainer_id": maintainer.id,
            "outcome": key.outcome,
            "aaguid": key.aaguid,
            "model": key.model,
            "format": key.attestation_format,
            "trusted": key.trusted,
        },
    )
    activated = _activate_if_complete(session, actor, maintainer)
    return KeyRegistered(key, registration.message, activated)


def begin_sign_in(
    *, session: Session, settings: Settings, email: str
) -> tuple[dict[str, Any], str]:
    """Options to sign in with a key of the maintainer behind ``email``. An address without keys
    gets options for a made-up key, the same each time, so the answer reveals nothing."""
    maintainer = find_maintainer_by_email(session=session, email=email.strip()[:320])
    keys = keys_of(session=session, maintainer=maintainer) if maintainer else []
    credentials = [_decode(key.credential_id) for key in keys] or [
        hmac.digest(settings.secret_key.encode(), email.strip().lower().encode(), "sha256")
    ]
    options, challenge = webauthn.authentication_options(
        rp=relying_party(settings), credentials=credentials
    )
    return options, _keep(session, challenge, SIGN_IN, maintainer if keys else None)


def finish_sign_in(
    *, session: Session, settings: Settings, token: str, response: Mapping[str, Any] | str
) -> Maintainer:
    """The maintainer whose key signed the challenge. A sign counter that went backwards (a
    cloned key, say) is refused and audited."""
    row = session.get(WebAuthnChallenge, str(token)[:64])
    owner = session.get(Maintainer, row.maintainer_id) if row and row.maintainer_id else None
    challenge = _take(session, token, SIGN_IN, owner)
    keys = (
        {_decode(key.credential_id): key for key in keys_of(session=session, maintainer=owner)}
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
        key = keys[regression.credential_id]
        record_event(
            session=session,
            actor=Actor.anonymous(),
            action="security_key.counter_regression",
            subject_kind="security_key",
            subject_id=key.id,
            details={"stored": regression.stored, "received": regression.received},
        )
        raise
    key = keys[assertion.credential_id]
    key.sign_count, key.last_used_at = assertion.sign_count, utcnow()
    session.flush()
    assert owner is not None  # only an owner's keys can verify
    record_event(
        session=session,
        actor=Actor(ActorKind.MAINTAINER, owner.id, owner.username),
        action="maintainer.signed_in_with_key",
        subject_kind="security_key",
        subject_id=key.id,
    )
    return owner


def accept_key(*, session: Session, actor: Actor, key_id: int, reason: str) -> SecurityKey:
    """Programme staff count a flagged key as a Titan activation after all, saying why."""
    key = get_key(session=session, key_id=key_id)
    if key.maintainer_id is None:
        raise KeyNotFound("There is no such maintainer key.")
    if key.counts_as_titan:
        raise KeyProblem("This key counts as a Titan already.")
    if len(reason.strip()) < 5:
        raise KeyProblem("Say why this key counts as a Titan (at least 5 characters).")
    key.accepted_at, key.accepted_by = utcnow(), actor.label
    key.accepted_reason = reason.strip()[:1000]
    session.flush()
    record_event(
        session=session,
        actor=actor,
        action="security_key.accepted",
        subject_kind="security_key",
        subject_id=key.id,
        details={"reason": key.accepted_reason, "outcome": key.outcome, "aaguid": key.aaguid},
    )
    maintainer = session.get(Maintainer, key.maintainer_id)
    assert maintainer is not None  # a foreign key guarantees it
    _activate_if_complete(session, actor, maintainer)
    return key


def get_key(*, session: Session, key_id: int) -> SecurityKey:
    key = session.get(SecurityKey, key_id)
    if key is None:
        raise KeyNotFound("There is no such key.")
    return key


def flagged_keys(*, session: Session) -> list[SecurityKey]:
    """Maintainers' keys that are not (yet) counted as Titans, oldest first: for review."""
    return list(
        session.exec(
            select(SecurityKey)
            .where(
                col(SecurityKey.maintainer_id).is_not(None),
                SecurityKey.outcome != KeyOutcome.TITAN.value,
                col(SecurityKey.accepted_at).is_(None),
            )
            .order_by(col(SecurityKey.id))
        ).all()
    )


def inspect(*, key: SecurityKey, metadata: webauthn.Metadata, session: Session) -> Any:
    """What support sees about a key's attestation, as ``keys inspect-attestation`` prints."""
    return webauthn.inspect_attestation(
        attestation_object=_encode(key.attestation_object),
        client_data=_encode(key.client_data),
        metadata=metadata,
        titan_aaguids=titan_aaguids(session=session),
    )


def titans_needed(*, session: Session, maintainer: Maintainer) -> tuple[int, int]:
    """Titans registered, and how many the maintainer's claim holds (0 without a claim)."""
    claim = active_claim(session=session, maintainer=maintainer)
    needed = sum(items_of(session=session, claim=claim).values()) if claim else 0
    have = sum(key.counts_as_titan for key in keys_of(session=session, maintainer=maintainer))
    return have, needed


def _activate_if_complete(session: Session, actor: Actor, maintainer: Maintainer) -> bool:
    claim = active_claim(session=session, maintainer=maintainer)
    if claim is None or claim.status not in (ClaimStatus.SHIPPED, ClaimStatus.DELIVERED):
        return False
    have, needed = titans_needed(session=session, maintainer=maintainer)
    if have < needed:
        return False
    if claim.status == ClaimStatus.SHIPPED:  # registering the keys proves they arrived
        parcel = shipment_of(session=session, claim=claim)
        assert parcel is not None  # a shipped claim has a parcel
        record_delivery(session=session, actor=actor, reference=parcel.reference)
    transition_claim(session, claim, ClaimStatus.ACTIVATED, actor=actor)
    return True


def _keep(
    session: Session, challenge: webauthn.Challenge, ceremony: str, maintainer: Maintainer | None
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        WebAuthnChallenge(
            id=token,
            ceremony=ceremony,
            maintainer_id=None if maintainer is None else maintainer.id,
            state=challenge.to_json(),
            created_at=challenge.created_at,
            expires_at=challenge.expires_at,
        )
    )
    session.flush()
    return token


def _take(
    session: Session, token: str, ceremony: str, maintainer: Maintainer | None
) -> webauthn.Challenge:
    """The challenge behind ``token``, used up now: only for the person it was made for (for a
    sign-in, whoever the address named, even nobody), only once, only before it expires."""
    row = session.get(WebAuthnChallenge, str(token)[:64])
    owner = None if maintainer is None else maintainer.id
    if row is None or row.ceremony != ceremony or row.maintainer_id != owner:
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


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
