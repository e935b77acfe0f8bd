"""Activation: a maintainer registers each key they received over WebAuthn; a genuine Titan
(attestation chained to the FIDO metadata's roots) counts, and the claim is ``activated`` once
as many Titans are registered as the claim holds. Other makes are kept, usable and flagged for
``programme`` staff, who may accept one as an activation with a reason.

Only a key registered once the claim's first parcel had left can be one of the keys in it: a
Titan registered earlier (bought elsewhere, say) stays usable for signing in but does not count.
So counting at registration (and at a staff acceptance) is enough: the claim is activated by the
registration that completes it, once the parcel is on its way or delivered, and nothing needs
rechecking when a parcel ships or arrives, since no key registered before could count.

A maintainer may remove a key that does not count (a make withheld, another make not
accepted, one registered before the parcel left): such a key proves nothing, and a retried
registration leaves one behind. A key that counts stays: the claim's activation rests on it.

Challenges live in the database: bound to one person and one ceremony, used once (a conditional
UPDATE), expiring in minutes. ``distribution.webauthn`` does the cryptography.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from accounts import security_keys
from accounts.models import KeyOutcome, Maintainer, SecurityKey
from accounts.security_keys import KeyNotFound, KeyProblem
from accounts.services import find_maintainer_by_email, record_sign_in
from adapters import webauthn
from core.actors import Actor
from core.audit import record_event
from core.db import utcnow
from core.settings import Settings
from distribution.claims.services import active_claim, items_of, shipment_of, transition_claim
from distribution.models import (
    CLAIM_LIFECYCLE,
    CLOSED_STATUSES,
    Claim,
    ClaimAction,
    KeyModel,
    Shipment,
)
from distribution.shipping.fulfilment import first_shipped_at, record_delivery

__all__ = ["KeyProblem"]  # raised here too; callers catch it from this module

REGISTER = "maintainer.register"
SIGN_IN = "maintainer.sign_in"


@dataclass(frozen=True)
class KeyRegistered:
    key: SecurityKey
    message: str
    activated: bool


@dataclass(frozen=True)
class KeyStanding:
    """A maintainer's key and what it means for their claim."""

    key: SecurityKey
    counts: bool  # towards activating the claim
    early: bool  # registered before the claim's first parcel left (or before any left)

    @property
    def removable(self) -> bool:
        """Its owner may remove it: it proves nothing for the claim."""
        return not self.counts


@dataclass(frozen=True)
class Progress:
    """The maintainer's keys and how far they go towards activating the claim."""

    keys: list[KeyStanding]
    have: int  # keys that count
    needed: int  # keys the claim holds (0 without a claim)
    shipped_at: datetime | None  # when the claim's first parcel left


@dataclass(frozen=True)
class FlaggedKey:
    """A key for programme staff to review, with whose it is and their claim's parcel."""

    key: SecurityKey
    maintainer: Maintainer
    claim_id: int
    parcel_reference: str | None


def titan_aaguids(*, session: Session) -> set[str]:
    """The AAGUIDs some stock model counts as its own."""
    return {aaguid for model in session.exec(select(KeyModel)).all() for aaguid in model.aaguids}


def keys_of(*, session: Session, maintainer: Maintainer) -> list[SecurityKey]:
    return security_keys.keys_of(session=session, owner=maintainer)


def progress(*, session: Session, maintainer: Maintainer) -> Progress:
    """The maintainer's keys, which count towards their claim, and how many it needs."""
    claim = active_claim(session=session, maintainer=maintainer)
    needed = sum(items_of(session=session, claim=claim).values()) if claim else 0
    since = first_shipped_at(session=session, claim=claim) if claim else None
    standings = []
    for key in keys_of(session=session, maintainer=maintainer):
        early = since is None or key.created_at < since
        standings.append(KeyStanding(key, counts=key.counts_as_titan and not early, early=early))
    have = sum(standing.counts for standing in standings)
    return Progress(keys=standings, have=have, needed=needed, shipped_at=since)


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
    gets options for a made-up key, the same each time, so asking does not plainly reveal who
    has keys (how many credentials come back can still hint at it)."""
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
    key = security_keys.authenticate(
        session=session,
        settings=settings,
        owner=maintainer,
        ceremony=SIGN_IN,
        token=token,
        response=response,
    )
    assert maintainer is not None  # only an owner's key can sign
    record_sign_in(session=session, maintainer=maintainer, method="security_key", key_id=key.id)
    return maintainer


def accept_key(*, session: Session, actor: Actor, key_id: int, reason: str) -> SecurityKey:
    """Programme staff count a flagged key as a Titan activation after all, saying why."""
    key = get_key(session=session, key_id=key_id)
    if key.maintainer_id is None:
        raise KeyNotFound("There is no such maintainer key.")
    if key.removed_at is not None:
        raise KeyProblem("The maintainer removed this key.")
    if key.counts_as_titan:
        raise KeyProblem("This key counts as a Titan already.")
    maintainer = session.get(Maintainer, key.maintainer_id)
    assert maintainer is not None  # a foreign key guarantees it
    if _standing(session, maintainer, key).early:
        raise KeyProblem(
            "This key was registered before the maintainer's parcel left (or none has left), so"
            " it cannot be one of the keys in it."
        )
    if len(reason.strip()) < 5:
        raise KeyProblem("Say why this key counts as a Titan (at least 5 characters).")
    values = {
        "accepted_at": utcnow(),
        "accepted_by": actor.label[:200],
        "accepted_reason": reason.strip()[:1000],
    }
    # Conditional: a key removed (or accepted) a moment ago is not accepted over it.
    accepted = session.execute(
        sa.update(SecurityKey)
        .where(
            col(SecurityKey.id) == key.id,
            col(SecurityKey.removed_at).is_(None),
            col(SecurityKey.accepted_at).is_(None),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if accepted.rowcount != 1:  # type: ignore[attr-defined]
        raise KeyProblem("This key changed a moment ago. Reload the page and look again.")
    for name, value in values.items():
        set_committed_value(key, name, value)
    record_event(
        session=session,
        actor=actor,
        action="security_key.accepted",
        subject_kind="security_key",
        subject_id=key.id,
        details={"reason": key.accepted_reason, "outcome": key.outcome, "aaguid": key.aaguid},
    )
    _activate_if_complete(session, actor, maintainer)
    return key


def remove_key(*, session: Session, actor: Actor, maintainer: Maintainer, key_id: int) -> None:
    """The maintainer removes a key of theirs that does not count (audited, the record kept)."""
    key = security_keys.own_key(session=session, owner=maintainer, key_id=key_id)
    if not _standing(session, maintainer, key).removable:
        raise KeyProblem(
            "This key counts towards your claim, so it stays registered: it is the proof that"
            " your keys arrived. If you lost it, please contact support."
        )
    security_keys.mark_removed(session=session, actor=actor, key=key, unless_accepted=True)


def get_key(*, session: Session, key_id: int) -> SecurityKey:
    key = session.get(SecurityKey, key_id)
    if key is None:
        raise KeyNotFound("There is no such key.")
    return key


def flagged_keys(*, session: Session) -> list[FlaggedKey]:
    """Maintainers' keys that could count as a Titan for their claim but do not (yet), oldest
    first: for review. Keys registered before the claim's parcel left cannot, nor removed ones."""
    first_shipped = (
        select(
            col(Shipment.claim_id).label("claim_id"),
            sa.func.min(Shipment.shipped_at).label("shipped_at"),
        )
        .group_by(col(Shipment.claim_id))
        .subquery()
    )
    rows = session.exec(
        select(SecurityKey, Maintainer, Claim)
        .join(Maintainer, col(Maintainer.id) == SecurityKey.maintainer_id)
        .join(
            Claim,
            sa.and_(
                col(Claim.maintainer_id) == Maintainer.id,
                col(Claim.status).not_in(CLOSED_STATUSES),
            ),
        )
        .join(first_shipped, first_shipped.c.claim_id == Claim.id)
        .where(
            SecurityKey.outcome != KeyOutcome.TITAN.value,
            col(SecurityKey.accepted_at).is_(None),
            col(SecurityKey.removed_at).is_(None),
            col(SecurityKey.created_at) >= first_shipped.c.shipped_at,
        )
        .order_by(col(SecurityKey.id))
    ).all()
    return [
        FlaggedKey(
            key,
            maintainer,
            claim.id or 0,
            parcel.reference if (parcel := shipment_of(session=session, claim=claim)) else None,
        )
        for key, maintainer, claim in rows
    ]


def inspect(
    *, key: SecurityKey, metadata: webauthn.Metadata, session: Session
) -> webauthn.AttestationReport:
    """What support sees about a key's attestation, as ``keys inspect-attestation`` prints."""
    return webauthn.inspect_attestation(
        attestation_object=security_keys.encode(key.attestation_object),
        client_data=security_keys.encode(key.client_data),
        metadata=metadata,
        titan_aaguids=titan_aaguids(session=session),
    )


@dataclass(frozen=True)
class KeyReview:
    """A key's page for staff: what was stored at registration, today's reading of its
    attestation, whose it is, and whether programme staff may count it as a Titan."""

    key: SecurityKey
    report: webauthn.AttestationReport
    maintainer: Maintainer | None  # None for a staff member's key
    parcel_reference: str | None  # the maintainer's current parcel, if any
    standing: KeyStanding | None  # None for a staff member's key or a removed one

    @property
    def acceptable(self) -> bool:
        return (
            self.standing is not None and not self.key.counts_as_titan and not self.standing.early
        )


def review_key(*, session: Session, key_id: int, metadata: webauthn.Metadata) -> KeyReview:
    key = get_key(session=session, key_id=key_id)
    report = inspect(key=key, metadata=metadata, session=session)
    maintainer = session.get(Maintainer, key.maintainer_id) if key.maintainer_id else None
    if maintainer is None:
        return KeyReview(key, report, None, None, None)
    claim = active_claim(session=session, maintainer=maintainer)
    parcel = shipment_of(session=session, claim=claim) if claim else None
    standing = None if key.removed_at else _standing(session, maintainer, key)
    return KeyReview(key, report, maintainer, parcel.reference if parcel else None, standing)


def titans_needed(*, session: Session, maintainer: Maintainer) -> tuple[int, int]:
    """Titans that count for the maintainer's claim, and how many it holds (0 without one)."""
    counted = progress(session=session, maintainer=maintainer)
    return counted.have, counted.needed


def _standing(session: Session, maintainer: Maintainer, key: SecurityKey) -> KeyStanding:
    """A key of the maintainer's that is not removed, and what it means for their claim."""
    return next(s for s in progress(session=session, maintainer=maintainer).keys if s.key is key)


def _activate_if_complete(session: Session, actor: Actor, maintainer: Maintainer) -> bool:
    # Only a parcel on its way or delivered can be activated: its keys are out of our hands.
    claim = active_claim(session=session, maintainer=maintainer)
    if claim is None:
        return False
    on_its_way = CLAIM_LIFECYCLE.allows(ClaimAction.DELIVER, claim.status)
    if not (on_its_way or CLAIM_LIFECYCLE.allows(ClaimAction.ACTIVATE, claim.status)):
        return False
    have, needed = titans_needed(session=session, maintainer=maintainer)
    if needed == 0 or have < needed:
        return False
    if on_its_way:  # registering the keys proves they arrived
        parcel = shipment_of(session=session, claim=claim)
        assert parcel is not None  # a shipped claim has a parcel
        record_delivery(session=session, actor=actor, reference=parcel.reference)
    transition_claim(session, claim, ClaimAction.ACTIVATE, actor=actor)
    return True
