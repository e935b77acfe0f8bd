"""Activation: a maintainer registers each key they received over WebAuthn; a genuine Titan
(attestation chained to the FIDO metadata's roots) counts, and the claim is ``activated`` once
as many Titans are registered as the claim holds. Other makes are kept, usable and flagged for
``programme`` staff, who may accept one as an activation with a reason.

Challenges live in the database: bound to one person and one ceremony, used once (a conditional
UPDATE), expiring in minutes. ``distribution.webauthn`` does the cryptography.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from accounts import security_keys
from accounts.models import KeyOutcome, Maintainer, SecurityKey
from accounts.security_keys import KeyProblem
from accounts.services import find_maintainer_by_email
from db import Actor, record_event, utcnow
from distribution import webauthn
from distribution.claims import active_claim, items_of, shipment_of, transition_claim
from distribution.errors import DistributionError
from distribution.fulfilment import record_delivery
from distribution.models import ClaimStatus, KeyModel
from settings import Settings

__all__ = ["KeyProblem"]  # raised here too; callers catch it from this module

REGISTER = "maintainer.register"
SIGN_IN = "maintainer.sign_in"


class KeyNotFound(DistributionError):
    status_code = 404
    title = "No such key"


@dataclass(frozen=True)
class KeyRegistered:
    key: SecurityKey
    message: str
    activated: bool


def titan_aaguids(*, session: Session) -> set[str]:
    """The AAGUIDs some stock model counts as its own."""
    return {aaguid for model in session.exec(select(KeyModel)).all() for aaguid in model.aaguids}


def keys_of(*, session: Session, maintainer: Maintainer) -> list[SecurityKey]:
    return security_keys.keys_of(session=session, owner=maintainer)


def begin_registration(
    *, session: Session, settings: Settings, maintainer: Maintainer
) -> tuple[dict[str, Any], str]:
    """Options for the browser and the token of the challenge kept for them."""
    return security_keys.begin_registration(
        session=session, settings=settings, owner=maintainer, ceremony=REGISTER
    )


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
    key, registration = security_keys.register_key(
        session=session,
        settings=settings,
        metadata=metadata,
        actor=actor,
        owner=maintainer,
        ceremony=REGISTER,
        token=token,
        response=response,
        name=name,
        titan_aaguids=titan_aaguids(session=session),
    )
    activated = _activate_if_complete(session, actor, maintainer)
    return KeyRegistered(key, registration.message, activated)


def begin_sign_in(
    *, session: Session, settings: Settings, email: str
) -> tuple[dict[str, Any], str]:
    """Options to sign in with a key of the maintainer behind ``email``. An address without keys
    gets options for a made-up key, the same each time, so the answer reveals nothing."""
    return security_keys.begin_authentication(
        session=session,
        settings=settings,
        owner=find_maintainer_by_email(session=session, email=email.strip()[:320]),
        ceremony=SIGN_IN,
        stand_in=hmac.digest(
            settings.secret_key.encode(), email.strip().lower().encode(), "sha256"
        ),
    )


def finish_sign_in(
    *, session: Session, settings: Settings, token: str, response: Mapping[str, Any] | str
) -> Maintainer:
    """The maintainer whose key signed the challenge."""
    owner = security_keys.challenge_owner(session=session, token=token)
    maintainer = owner if isinstance(owner, Maintainer) else None
    security_keys.authenticate(
        session=session,
        settings=settings,
        owner=maintainer,
        ceremony=SIGN_IN,
        token=token,
        response=response,
    )
    assert maintainer is not None  # only an owner's key can sign
    return maintainer


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
        attestation_object=security_keys.encode(key.attestation_object),
        client_data=security_keys.encode(key.client_data),
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
