"""Activation: registering the received keys over WebAuthn, with a software authenticator whose
test CA only these tests trust; the claim is activated by as many Titans as it holds."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest
from sqlmodel import select

from accounts.models import SecurityKey, WebAuthnChallenge
from db import AuditEvent, utcnow
from distribution import activation, webauthn
from distribution.models import Claim
from tests.factories import (
    ACTOR,
    USB_A,
    USB_C,
    make_owner,
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
    assert activation.flagged_keys(session=session) == [other.key]
    with pytest.raises(activation.KeyProblem, match="Say why"):
        activation.accept_key(session=session, actor=ACTOR, key_id=other.key.id, reason="ok")

    activation.accept_key(
        session=session, actor=ACTOR, key_id=other.key.id, reason="Seen on a video call"
    )

    assert status(session, claim_id) == "activated"
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
