"""Activation: registering the received keys over WebAuthn, with a software authenticator whose
test CA only these tests trust; the claim is activated by as many Titans as it holds, registered
once its parcel left. Keys that do not count may be removed; their records stay."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest
from sqlmodel import select

from accounts import security_keys
from accounts.models import SecurityKey, WebAuthnChallenge
from adapters import webauthn
from core.actors import Actor, ActorKind
from core.audit import AuditEvent
from core.db import utcnow
from distribution.activation import services as activation
from distribution.models import Claim
from distribution.shipping import fulfilment
from tests import soft_authenticator
from tests.factories import (
    ACTOR,
    USB_A,
    USB_C,
    make_owner,
    print_labels,
    redeem_parcel,
    ship,
    shipped_parcel,
    stock_famous_project,
)
from tests.soft_authenticator import SoftAuthenticator, TestCA

TITAN = UUID("42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3")
OTHER_MAKE = UUID("01020304-0506-0708-0102-030405060708")


@pytest.fixture(scope="module")
def ca():
    return TestCA.create()


@pytest.fixture(scope="module")
def trusting(ca):
    """The real metadata, plus the test CA trusted for Titans (here only)."""
    return webauthn.Metadata.bundled().with_extra_entry(
        aaguid=TITAN, root_certificate=ca.der, description="Google Titan Security Key v2"
    )


@pytest.fixture
def shipped(session, settings):
    """A maintainer whose parcel of two keys is on its way."""
    stock_famous_project(session, {USB_A: 2, USB_C: 2})
    person, parcel = shipped_parcel(session, settings)
    return person, parcel.claim_id


def register(session, settings, metadata, person, authenticator, name="My Titan", **kwargs):
    options, token = activation.begin_registration(
        session=session, settings=settings, maintainer=person
    )
    response = authenticator.register(options, origin="http://localhost", **kwargs)
    return activation.finish_registration(
        session=session,
        settings=settings,
        metadata=metadata,
        actor=ACTOR,
        maintainer=person,
        token=token,
        response=response,
        name=name,
    )


def status(session, claim_id):
    session.expire_all()
    return session.get(Claim, claim_id).status


def test_two_titans_activate_the_claim(session, settings, trusting, ca, shipped):
    person, claim_id = shipped
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)

    first = register(session, settings, trusting, person, key, name="  Keyring   Titan ")

    assert first.key.outcome == "titan" and first.key.counts_as_titan and not first.activated
    assert (first.key.name, first.key.model) == ("Keyring Titan", "Google Titan Security Key v2")
    assert first.key.aaguid == str(TITAN) and first.key.attestation_format == "packed"
    assert status(session, claim_id) == "shipped"
    options, _token = activation.begin_registration(
        session=session, settings=settings, maintainer=person
    )
    assert [d["id"] for d in options["excludeCredentials"]] == [first.key.credential_id]

    second = register(session, settings, trusting, person, SoftAuthenticator(aaguid=TITAN, ca=ca))

    assert second.activated and status(session, claim_id) == "activated"
    actions = [e.action for e in session.exec(select(AuditEvent)).all()]
    assert actions.count("security_key.registered") == 2
    assert actions[-2:] == ["claim.delivered", "claim.activated"]  # the keys prove delivery


def test_the_real_metadata_refuses_the_test_authenticator_as_a_titan(
    session, settings, ca, shipped
):
    person, claim_id = shipped
    with pytest.raises(webauthn.UntrustedAuthenticator):
        register(
            session,
            settings,
            webauthn.Metadata.bundled(),
            person,
            SoftAuthenticator(aaguid=TITAN, ca=ca),
        )
    assert session.exec(select(SecurityKey)).all() == []


def test_another_make_is_kept_flagged_and_can_be_accepted(session, settings, trusting, ca, shipped):
    person, claim_id = shipped
    register(session, settings, trusting, person, SoftAuthenticator(aaguid=TITAN, ca=ca))
    other = register(
        session, settings, trusting, person, SoftAuthenticator(aaguid=OTHER_MAKE, ca=ca)
    )

    assert (other.key.outcome, other.key.trusted, other.activated) == ("other", False, False)
    flagged = activation.flagged_keys(session=session)
    assert [(f.key, f.maintainer, f.claim_id) for f in flagged] == [(other.key, person, claim_id)]
    with pytest.raises(activation.KeyProblem, match="Say why"):
        activation.accept_key(session=session, actor=ACTOR, key_id=other.key.id, reason="ok")

    programme = Actor(ActorKind.STAFF, 7, "pat@example.org")
    activation.accept_key(
        session=session, actor=programme, key_id=other.key.id, reason="  Seen on a video call "
    )

    assert status(session, claim_id) == "activated"
    accepted = session.exec(
        select(AuditEvent).where(AuditEvent.action == "security_key.accepted")
    ).one()
    assert (accepted.actor_label, accepted.subject_id) == ("pat@example.org", str(other.key.id))
    assert accepted.details == {
        "reason": "Seen on a video call",
        "outcome": "other",
        "aaguid": str(OTHER_MAKE),
    }
    claim = session.get(Claim, claim_id)
    assert [
        (k.name, k.accepted_by, k.accepted_reason)
        for k in fulfilment.acceptances(session=session, claim=claim)
    ] == [("My Titan", "pat@example.org", "Seen on a video call")]
    assert activation.flagged_keys(session=session) == []
    with pytest.raises(activation.KeyProblem, match="counts as a Titan already"):
        activation.accept_key(session=session, actor=ACTOR, key_id=other.key.id, reason="again!")


def test_a_withheld_attestation_can_be_registered_again_to_show_the_make(
    session, settings, trusting, ca, shipped
):
    person, _claim_id = shipped
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    withheld = register(session, settings, trusting, person, key, attestation="none")

    assert withheld.key.outcome == "withheld" and "make and model" in withheld.message
    options, _token = activation.begin_registration(
        session=session, settings=settings, maintainer=person
    )
    assert options["excludeCredentials"] == []  # so the same key may show itself this time


def test_a_challenge_is_used_once_by_its_owner_before_it_expires(
    session, settings, trusting, ca, shipped
):
    person, _claim_id = shipped
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    options, token = activation.begin_registration(
        session=session, settings=settings, maintainer=person
    )
    response = key.register(options, origin="http://localhost")

    def finish(who=person, token=token, response=response):
        return activation.finish_registration(
            session=session,
            settings=settings,
            metadata=trusting,
            actor=ACTOR,
            maintainer=who,
            token=token,
            response=response,
            name="Titan",
        )

    with pytest.raises(webauthn.ChallengeMismatch, match="not one we made for you"):
        finish(who=make_owner(session, "famous"))
    with pytest.raises(activation.KeyProblem, match="1 to 60 characters"):
        activation.finish_registration(
            session=session,
            settings=settings,
            metadata=trusting,
            actor=ACTOR,
            maintainer=person,
            token=token,
            response=response,
            name=" ",
        )
    finish()
    with pytest.raises(webauthn.ChallengeMismatch, match="used already"):
        finish()

    options, late = activation.begin_registration(
        session=session, settings=settings, maintainer=person
    )
    session.get(WebAuthnChallenge, late).expires_at = utcnow() - timedelta(seconds=1)
    session.flush()
    with pytest.raises(webauthn.ChallengeExpired):
        finish(token=late, response=key.register(options, origin="http://localhost"))
    with pytest.raises(webauthn.WrongOrigin):
        options, token = activation.begin_registration(
            session=session, settings=settings, maintainer=person
        )
        finish(token=token, response=key.register(options, origin="http://localhost:8080"))


def sign_in(session, settings, email, authenticator, **kwargs):
    options, token = activation.begin_sign_in(session=session, settings=settings, email=email)
    response = authenticator.sign_in(options, origin="http://localhost", **kwargs)
    return activation.finish_sign_in(
        session=session, settings=settings, token=token, response=response
    )


def test_a_maintainer_signs_in_with_a_registered_key(session, settings, trusting, ca, shipped):
    person, _claim_id = shipped
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    registered = register(session, settings, trusting, person, key).key

    assert sign_in(session, settings, person.email.upper(), key) == person
    assert sign_in(session, settings, person.email, key) == person
    session.refresh(registered)
    assert registered.sign_count == 2 and registered.last_used_at is not None

    with pytest.raises(webauthn.CounterRegression):
        sign_in(session, settings, person.email, key, counter=1)  # a cloned key, say
    regression = session.exec(
        select(AuditEvent).where(AuditEvent.action == "security_key.counter_regression")
    ).one()
    assert regression.details == {"stored": 2, "received": 1}


def test_an_address_without_keys_learns_nothing(session, settings, trusting, ca, shipped):
    person, _claim_id = shipped
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    register(session, settings, trusting, person, key)

    unknown, _token = activation.begin_sign_in(
        session=session, settings=settings, email="nobody@example.org"
    )
    again, _token = activation.begin_sign_in(
        session=session, settings=settings, email="nobody@example.org"
    )
    known, token = activation.begin_sign_in(session=session, settings=settings, email=person.email)

    assert len(unknown["allowCredentials"]) == len(known["allowCredentials"]) == 1
    assert unknown["allowCredentials"] == again["allowCredentials"]  # the same made-up key
    with pytest.raises(webauthn.WebAuthnError):  # a real key cannot answer for nobody
        options, nobody = activation.begin_sign_in(
            session=session, settings=settings, email="nobody@example.org"
        )
        activation.finish_sign_in(
            session=session,
            settings=settings,
            token=nobody,
            response=key.sign_in(known, origin="http://localhost"),
        )


def events(session, action):
    return session.exec(select(AuditEvent).where(AuditEvent.action == action)).all()


def test_titans_registered_before_the_parcel_left_do_not_count(session, settings, trusting, ca):
    stock_famous_project(session, {USB_A: 2, USB_C: 2})
    person, parcel = redeem_parcel(session, settings)
    early = [
        register(session, settings, trusting, person, SoftAuthenticator(aaguid=aaguid, ca=ca))
        for aaguid in (TITAN, OTHER_MAKE)
    ]

    assert not any(done.activated for done in early)
    before = activation.progress(session=session, maintainer=person)
    assert (before.have, before.needed, before.shipped_at) == (0, 2, None)
    assert [(s.early, s.counts, s.removable) for s in before.keys] == [(True, False, True)] * 2

    print_labels(session, settings, [parcel.claim_id])
    ship(session, settings, parcel.reference)
    shipped = activation.progress(session=session, maintainer=person)
    assert shipped.have == 0 and shipped.shipped_at is not None  # still early: no recount
    with pytest.raises(activation.KeyProblem, match="before the maintainer's parcel left"):
        activation.accept_key(
            session=session, actor=ACTOR, key_id=early[1].key.id, reason="It is a Titan."
        )
    assert activation.flagged_keys(session=session) == []  # nothing staff could accept

    first = register(session, settings, trusting, person, SoftAuthenticator(aaguid=TITAN, ca=ca))
    assert not first.activated and status(session, parcel.claim_id) == "shipped"
    second = register(session, settings, trusting, person, SoftAuthenticator(aaguid=TITAN, ca=ca))

    assert second.activated and status(session, parcel.claim_id) == "activated"
    after = activation.progress(session=session, maintainer=person)
    assert [s.counts for s in after.keys] == [False, False, True, True]
    assert (after.have, after.needed) == (2, 2)


def test_a_key_that_does_not_count_is_removed_but_its_record_is_kept(
    session, settings, trusting, ca, shipped
):
    person, _claim_id = shipped
    titan = register(session, settings, trusting, person, SoftAuthenticator(aaguid=TITAN, ca=ca))
    retried = SoftAuthenticator(aaguid=TITAN, ca=ca)
    withheld = register(session, settings, trusting, person, retried, attestation="none").key
    withheld_id = withheld.id
    shown = register(session, settings, trusting, person, retried, name="Titan, shown")
    assert shown.activated  # the retry made a new credential; the withheld one stays behind
    withheld_credential = security_keys.decode(withheld.credential_id)

    with pytest.raises(activation.KeyProblem, match="counts towards your claim"):
        activation.remove_key(session=session, actor=ACTOR, maintainer=person, key_id=titan.key.id)
    stranger = make_owner(session, "famous")
    with pytest.raises(security_keys.KeyNotFound):
        activation.remove_key(session=session, actor=ACTOR, maintainer=stranger, key_id=withheld_id)

    activation.remove_key(session=session, actor=ACTOR, maintainer=person, key_id=withheld_id)

    session.expire_all()
    kept = session.get(SecurityKey, withheld_id)
    assert kept is not None and kept.removed_at is not None and kept.attestation_object
    listed = activation.progress(session=session, maintainer=person).keys
    assert [s.key.name for s in listed] == ["My Titan", "Titan, shown"]
    options, _token = activation.begin_registration(
        session=session, settings=settings, maintainer=person
    )
    assert security_keys.encode(withheld_credential) not in {
        d["id"] for d in options["excludeCredentials"]
    }
    (removed,) = events(session, "security_key.removed")
    assert removed.subject_id == str(withheld_id) and removed.details["outcome"] == "withheld"
    with pytest.raises(security_keys.KeyNotFound):  # once only
        activation.remove_key(session=session, actor=ACTOR, maintainer=person, key_id=withheld_id)
    # A removed key no longer signs in.
    with pytest.raises(webauthn.UnknownCredential):
        sign_in(session, settings, person.email, retried, credential_id=withheld_credential)


def test_a_made_up_attestation_format_is_refused_and_nothing_stored(
    session, settings, trusting, ca, shipped
):
    # Stored, it overflowed attestation_format VARCHAR(20) on PostgreSQL: a 500.
    person, _claim_id = shipped
    key = SoftAuthenticator(aaguid=OTHER_MAKE, ca=ca)

    with pytest.raises(webauthn.MalformedResponse, match="not one WebAuthn defines"):
        register(session, settings, trusting, person, key, fmt="x" * 40)
    with pytest.raises(webauthn.MalformedResponse, match="not one WebAuthn defines"):
        register(session, settings, trusting, person, key, fmt="packed-ish")

    assert session.exec(select(SecurityKey)).all() == []


def test_a_forged_titan_is_refused_audited_and_not_stored(session, settings, trusting, shipped):
    person, _claim_id = shipped
    forger = SoftAuthenticator(aaguid=TITAN)

    with pytest.raises(webauthn.ForgedAttestation):
        register(session, settings, trusting, person, forger, attestation="self")

    assert session.exec(select(SecurityKey)).all() == []
    (refused,) = events(session, "security_key.refused")
    assert (refused.subject_kind, refused.subject_id) == ("maintainer", str(person.id))
    assert refused.details == {
        "refusal": "ForgedAttestation",
        "aaguid": str(TITAN),
        "format": "packed",
        "model": "Google Titan Security Key v2",
    }


def test_a_key_sign_in_is_recorded_like_a_link_sign_in(session, settings, trusting, ca, shipped):
    person, _claim_id = shipped
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    registered = register(session, settings, trusting, person, key).key

    sign_in(session, settings, person.email, key)

    (signed_in,) = events(session, "sign_in.maintainer")
    assert (signed_in.actor_kind, signed_in.actor_id) == ("maintainer", person.id)
    assert signed_in.details == {"method": "security_key", "key_id": registered.id}


def test_long_expired_challenges_are_swept_away_when_a_new_one_is_kept(session, settings):
    def challenge(expired_ago):
        _options, token = activation.begin_sign_in(
            session=session, settings=settings, email="nobody@example.org"
        )
        session.get(WebAuthnChallenge, token).expires_at = utcnow() - expired_ago
        session.flush()
        return token

    stale = [challenge(timedelta(hours=hours)) for hours in (2, 30)]
    late = challenge(timedelta(minutes=10))  # still says "timed out" if answered now

    _options, fresh = activation.begin_sign_in(
        session=session, settings=settings, email="nobody@example.org"
    )

    session.expire_all()
    kept = set(session.exec(select(WebAuthnChallenge.id)).all())
    assert kept == {late, fresh} and not kept & set(stale)


def test_a_removed_key_registered_again_comes_back_as_it_shows_itself_now(
    session, settings, trusting, ca, shipped, monkeypatch
):
    person, _claim_id = shipped
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    withheld = register(session, settings, trusting, person, key, attestation="none").key
    activation.remove_key(session=session, actor=ACTOR, maintainer=person, key_id=withheld.id)
    credential = security_keys.decode(withheld.credential_id)
    # The authenticator makes the same credential again (a resident key would).
    random_bytes = soft_authenticator.os.urandom
    monkeypatch.setattr(
        soft_authenticator.os,
        "urandom",
        lambda n: credential if n == len(credential) else random_bytes(n),
    )

    again = register(session, settings, trusting, person, key, name="Back again")

    assert again.key.id == withheld.id and again.key.removed_at is None
    assert (again.key.name, again.key.outcome) == ("Back again", "titan")
    assert [s.key.id for s in activation.progress(session=session, maintainer=person).keys] == [
        withheld.id
    ]
