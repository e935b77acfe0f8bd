"""The WebAuthn relying party: options, attestation and the key's make, sign-in, and refusals."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from cryptography import x509
from fido2 import cbor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.webauthn import (
    CHALLENGE_LIFETIME,
    TITAN_AAGUIDS,
    Assertion,
    AttestationReport,
    Challenge,
    ChallengeExpired,
    ChallengeMismatch,
    CounterRegression,
    ForgedAttestation,
    MalformedResponse,
    Metadata,
    Outcome,
    Registration,
    RelyingParty,
    RevokedAuthenticator,
    SignatureMismatch,
    StoredKey,
    UnknownCredential,
    UntrustedAuthenticator,
    UserNotPresent,
    WebAuthnError,
    WrongOrigin,
    WrongRelyingParty,
    authentication_options,
    inspect_attestation,
    registration_options,
    verify_authentication,
    verify_registration,
)
from core.errors import DomainError
from tests.soft_authenticator import AT, SoftAuthenticator, TestCA, b64url

TITAN = UUID("42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3")
OTHER_MAKE = UUID("0badc0de-0000-4000-8000-000000000005")
# What Chromium's DevTools virtual authenticator reports: in no metadata.
UNKNOWN_MAKE = UUID("01020304-0506-0708-0102-030405060708")


@pytest.fixture(scope="module")
def rp() -> RelyingParty:
    return RelyingParty.from_base_url("https://keys.example.org", name="Security Key Giveaway")


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture(scope="module")
def real_metadata() -> Metadata:
    return Metadata.bundled()


@pytest.fixture(scope="module")
def test_metadata(real_metadata: Metadata, ca: TestCA) -> Metadata:
    """The real metadata, plus the test CA trusted for Titans (in these tests only)."""
    return real_metadata.with_extra_entry(
        aaguid=TITAN, root_certificate=ca.der, description="Google Titan Security Key v2"
    )


def register(
    rp: RelyingParty,
    key: SoftAuthenticator,
    metadata: Metadata,
    *,
    exclude: tuple[bytes, ...] = (),
    **lies: Any,
) -> Registration:
    options, challenge = registration_options(
        rp=rp, user_id=b"maintainer-1", user_name="ada", display_name="Ada", exclude=exclude
    )
    response = key.register(options, **{"origin": rp.origin, **lies})
    return verify_registration(rp=rp, challenge=challenge, response=response, metadata=metadata)


# --- the relying party ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "rp_id", "origin"),
    [
        ("https://keys.example.org", "keys.example.org", "https://keys.example.org"),
        ("https://Keys.Example.org:443/giveaway/", "keys.example.org", "https://keys.example.org"),
        ("https://keys.example.org:8443", "keys.example.org", "https://keys.example.org:8443"),
        ("http://localhost:5000", "localhost", "http://localhost:5000"),
    ],
)
def test_the_relying_party_comes_from_the_base_url(base_url: str, rp_id: str, origin: str) -> None:
    rp = RelyingParty.from_base_url(base_url, name="Keys")
    assert (rp.rp_id, rp.origin, rp.name) == (rp_id, origin, "Keys")


@pytest.mark.parametrize(
    "base_url",
    ["http://keys.example.org", "https://127.0.0.1:5000", "ftp://keys.example.org", "keys", ""],
)
def test_a_base_url_webauthn_cannot_use_is_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match=r"WebAuthn|not an http"):
        RelyingParty.from_base_url(base_url, name="Keys")


# --- options ----------------------------------------------------------------------------------


def test_registration_options_ask_a_security_key_for_its_make_and_model(rp: RelyingParty) -> None:
    options, challenge = registration_options(
        rp=rp,
        user_id=b"maintainer-1",
        user_name="ada",
        display_name="Ada Lovelace",
        exclude=[b"first-key", b"second-key"],
    )

    assert json.loads(json.dumps(options)) == options
    assert options["rp"] == {"id": "keys.example.org", "name": "Security Key Giveaway"}
    assert options["user"] == {
        "id": b64url(b"maintainer-1"),
        "name": "ada",
        "displayName": "Ada Lovelace",
    }
    assert options["attestation"] == "direct"
    assert options["authenticatorSelection"] == {
        "authenticatorAttachment": "cross-platform",
        "residentKey": "discouraged",
        "requireResidentKey": False,
        "userVerification": "discouraged",
    }
    assert options["hints"] == ["security-key"]
    assert options["excludeCredentials"] == [
        {"type": "public-key", "id": b64url(b"first-key")},
        {"type": "public-key", "id": b64url(b"second-key")},
    ]
    assert options["timeout"] == 180_000
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-7, -8, -35, -257]
    assert options["challenge"] == b64url(challenge.value)
    assert len(challenge.value) == 32
    assert challenge.expires_at - challenge.created_at == CHALLENGE_LIFETIME


def test_every_request_gets_a_new_challenge(rp: RelyingParty) -> None:
    values = {
        registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")[1].value
        for _ in range(5)
    }
    assert len(values) == 5


def test_sign_in_options_name_the_persons_keys(rp: RelyingParty) -> None:
    options, challenge = authentication_options(rp=rp, credentials=[b"first-key"])

    assert options == {
        "challenge": b64url(challenge.value),
        "timeout": 180_000,
        "rpId": "keys.example.org",
        "allowCredentials": [{"type": "public-key", "id": b64url(b"first-key")}],
        "userVerification": "discouraged",
        "hints": ["security-key"],
    }


# --- what kind of key ------------------------------------------------------------------------


def test_a_titan_attested_by_a_trusted_root_counts_as_a_titan(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    options, challenge = registration_options(
        rp=rp, user_id=b"maintainer-1", user_name="ada", display_name="Ada"
    )
    response = key.register(options, origin=rp.origin)

    registration = verify_registration(
        rp=rp, challenge=challenge, response=json.dumps(response), metadata=test_metadata
    )

    assert registration.outcome is Outcome.TITAN
    assert registration.trusted is True
    assert registration.model == "Google Titan Security Key v2"
    assert registration.aaguid == TITAN
    assert registration.attestation_format == "packed"
    assert registration.message == (
        "Your Google Titan Security Key v2 is registered and counts towards activating your claim."
    )
    (credential_id,) = key.credentials
    assert registration.credential_id == credential_id
    assert registration.sign_count == 0
    assert cbor.decode(registration.public_key)[3] == -7  # type: ignore[index]
    raw = response["response"]
    assert b64url(registration.attestation_object) == raw["attestationObject"]
    assert b64url(registration.client_data) == raw["clientDataJSON"]


def test_the_real_metadata_refuses_that_same_key(
    rp: RelyingParty, ca: TestCA, real_metadata: Metadata
) -> None:
    with pytest.raises(UntrustedAuthenticator) as refused:
        register(rp, SoftAuthenticator(aaguid=TITAN, ca=ca), real_metadata)

    assert refused.value.status_code == 422
    assert "says it is the Google Titan Security Key v2" in refused.value.message


def test_a_key_that_brings_its_own_root_is_still_untrusted(
    rp: RelyingParty, ca: TestCA, real_metadata: Metadata
) -> None:
    key = SoftAuthenticator(aaguid=TITAN, ca=ca, extra_chain=[ca.der])

    with pytest.raises(UntrustedAuthenticator):
        register(rp, key, real_metadata)


def test_a_certificate_that_is_not_a_ca_cannot_issue_attestation_certificates(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    # Whoever extracts one key's attestation key must not be able to mint more "Titans".
    genuine = SoftAuthenticator(aaguid=TITAN, ca=ca)
    leaf = ca.issue(aaguid=TITAN, public_key=genuine.attestation_key.public_key())
    mint = TestCA(key=genuine.attestation_key, certificate=x509.load_der_x509_certificate(leaf))
    assert register(rp, genuine, test_metadata).outcome is Outcome.TITAN

    with pytest.raises(UntrustedAuthenticator):
        register(rp, SoftAuthenticator(aaguid=TITAN, ca=mint, extra_chain=[leaf]), test_metadata)


def test_a_root_trusted_for_another_model_does_not_vouch_for_a_titan(
    rp: RelyingParty, ca: TestCA, real_metadata: Metadata
) -> None:
    metadata = real_metadata.with_extra_entry(
        aaguid=OTHER_MAKE, root_certificate=ca.der, description="Example Key 5"
    )

    with pytest.raises(UntrustedAuthenticator):
        register(rp, SoftAuthenticator(aaguid=TITAN, ca=ca), metadata)


def test_a_trusted_key_of_another_make_is_usable_and_flagged(
    rp: RelyingParty, ca: TestCA, real_metadata: Metadata
) -> None:
    metadata = real_metadata.with_extra_entry(
        aaguid=OTHER_MAKE, root_certificate=ca.der, description="Example Key 5"
    )

    registration = register(rp, SoftAuthenticator(aaguid=OTHER_MAKE, ca=ca), metadata)

    assert (registration.outcome, registration.trusted) == (Outcome.OTHER, True)
    assert registration.model == "Example Key 5"
    assert registration.message.startswith("This key (Example Key 5) is not one of the")
    assert "staff will review it" in registration.message


def test_the_titan_models_are_a_parameter(
    rp: RelyingParty, ca: TestCA, real_metadata: Metadata
) -> None:
    metadata = real_metadata.with_extra_entry(
        aaguid=OTHER_MAKE, root_certificate=ca.der, description="Titan Security Key v3"
    )
    options, challenge = registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")
    response = SoftAuthenticator(aaguid=OTHER_MAKE, ca=ca).register(options, origin=rp.origin)

    registration = verify_registration(
        rp=rp,
        challenge=challenge,
        response=response,
        metadata=metadata,
        titan_aaguids=[str(OTHER_MAKE)],  # as a stock model would list them
    )

    assert (registration.outcome, registration.model) == (Outcome.TITAN, "Titan Security Key v3")


def test_a_key_of_a_make_no_metadata_knows_is_usable_and_unconfirmed(
    rp: RelyingParty, ca: TestCA, real_metadata: Metadata
) -> None:
    registration = register(rp, SoftAuthenticator(aaguid=UNKNOWN_MAKE, ca=ca), real_metadata)

    assert (registration.outcome, registration.trusted) == (Outcome.OTHER, False)
    assert registration.model is None
    assert registration.aaguid == UNKNOWN_MAKE
    assert registration.message.startswith("We could not confirm this key's make and model.")


def test_a_withheld_make_and_model_is_registered_with_a_way_to_retry(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)

    registration = register(rp, key, test_metadata, attestation="none")

    assert (registration.outcome, registration.trusted) == (Outcome.WITHHELD, False)
    assert registration.attestation_format == "none"
    assert registration.aaguid == UUID(int=0)
    assert registration.model is None
    assert "register it again" in registration.message
    assert "choose Allow" in registration.message


@pytest.mark.parametrize("metadata_kind", ["real", "trusting the test CA"])
def test_a_self_attested_titan_is_a_forgery(
    rp: RelyingParty,
    real_metadata: Metadata,
    test_metadata: Metadata,
    metadata_kind: str,
) -> None:
    metadata = real_metadata if metadata_kind == "real" else test_metadata

    with pytest.raises(ForgedAttestation) as refused:
        register(rp, SoftAuthenticator(aaguid=TITAN), metadata, attestation="self")

    assert refused.value.status_code == 422
    assert "signs its own attestation" in refused.value.message


def test_an_attestation_signature_that_does_not_verify_is_a_forgery(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    options, challenge = registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")
    response = SoftAuthenticator(aaguid=TITAN, ca=ca).register(options, origin=rp.origin)
    response["response"]["attestationObject"] = _edit_attestation(
        response["response"]["attestationObject"],
        lambda att: {**att, "attStmt": {**att["attStmt"], "sig": att["attStmt"]["sig"][::-1]}},
    )

    with pytest.raises(ForgedAttestation, match="does not verify"):
        verify_registration(rp=rp, challenge=challenge, response=response, metadata=test_metadata)


@pytest.mark.parametrize("status", ["REVOKED", "ATTESTATION_KEY_COMPROMISE"])
def test_a_model_the_fido_alliance_no_longer_trusts_is_refused(
    rp: RelyingParty, ca: TestCA, real_metadata: Metadata, status: str
) -> None:
    metadata = real_metadata.with_extra_entry(
        aaguid=OTHER_MAKE,
        root_certificate=ca.der,
        description="Example Key 5",
        statuses=["FIDO_CERTIFIED", status],
    )

    with pytest.raises(RevokedAuthenticator) as refused:
        register(rp, SoftAuthenticator(aaguid=OTHER_MAKE, ca=ca), metadata)

    assert refused.value.status_code == 422
    assert status.replace("_", " ").lower() in refused.value.message


# --- refusals: where, when, who ---------------------------------------------------------------

FOREIGN_ORIGINS = [
    "https://evil.example",
    "https://www.keys.example.org",  # a subdomain: fido2's default would accept it
    "https://keys.example.org:8443",  # another port: fido2's default would accept it
    "http://keys.example.org",
    "https://keys.example.org.evil.example",
    "null",
]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_a_registration_for_another_origin_is_refused(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata, origin: str
) -> None:
    with pytest.raises(WrongOrigin) as refused:
        register(rp, SoftAuthenticator(aaguid=TITAN, ca=ca), test_metadata, origin=origin)

    assert refused.value.status_code == 400
    assert "https://keys.example.org" in refused.value.message


def test_a_registration_inside_another_sites_frame_is_refused(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    with pytest.raises(WrongOrigin):
        register(rp, SoftAuthenticator(aaguid=TITAN, ca=ca), test_metadata, cross_origin=True)


@pytest.mark.parametrize("rp_id", ["evil.example", "example.org", "www.keys.example.org"])
def test_a_credential_for_another_rp_id_is_refused(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata, rp_id: str
) -> None:
    with pytest.raises(WrongRelyingParty) as refused:
        register(rp, SoftAuthenticator(aaguid=TITAN, ca=ca), test_metadata, rp_id=rp_id)

    assert refused.value.status_code == 400


def test_a_replayed_registration_is_refused(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    options, challenge = registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")
    response = SoftAuthenticator(aaguid=TITAN, ca=ca).register(options, origin=rp.origin)
    verify_registration(rp=rp, challenge=challenge, response=response, metadata=test_metadata)
    _, next_challenge = registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")

    with pytest.raises(ChallengeMismatch) as refused:
        verify_registration(
            rp=rp, challenge=next_challenge, response=response, metadata=test_metadata
        )

    assert refused.value.status_code == 400


def test_an_answer_to_a_challenge_we_never_made_is_refused(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    with pytest.raises(ChallengeMismatch):
        register(
            rp, SoftAuthenticator(aaguid=TITAN, ca=ca), test_metadata, challenge=b64url(b"x" * 32)
        )


def test_a_sign_in_challenge_cannot_register_a_key(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    options, _ = registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")
    _, sign_in_challenge = authentication_options(rp=rp, credentials=[b"k"])
    response = SoftAuthenticator(aaguid=TITAN, ca=ca).register(
        options, origin=rp.origin, challenge=b64url(sign_in_challenge.value)
    )

    with pytest.raises(ChallengeMismatch):
        verify_registration(
            rp=rp, challenge=sign_in_challenge, response=response, metadata=test_metadata
        )


def test_an_expired_challenge_is_refused(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    options, challenge = registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")
    response = SoftAuthenticator(aaguid=TITAN, ca=ca).register(options, origin=rp.origin)
    just_in_time = challenge.expires_at - timedelta(seconds=1)
    verify_registration(
        rp=rp, challenge=challenge, response=response, metadata=test_metadata, now=just_in_time
    )

    with pytest.raises(ChallengeExpired) as refused:
        verify_registration(
            rp=rp,
            challenge=challenge,
            response=response,
            metadata=test_metadata,
            now=challenge.expires_at,
        )

    assert refused.value.status_code == 400


def test_a_key_nobody_touched_is_refused(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    with pytest.raises(UserNotPresent):
        register(rp, SoftAuthenticator(aaguid=TITAN, ca=ca), test_metadata, flags=AT)


def test_a_stored_challenge_survives_the_database(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> None:
    options, challenge = registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")
    response = SoftAuthenticator(aaguid=TITAN, ca=ca).register(options, origin=rp.origin)
    stored = Challenge.from_json(challenge.to_json())

    assert stored == challenge
    registration = verify_registration(
        rp=rp, challenge=stored, response=response, metadata=test_metadata
    )
    assert registration.outcome is Outcome.TITAN


def test_localhost_works_for_development(ca: TestCA, test_metadata: Metadata) -> None:
    local = RelyingParty.from_base_url("http://localhost:5000", name="Keys (demo)")

    registration = register(local, SoftAuthenticator(aaguid=TITAN, ca=ca), test_metadata)

    assert registration.outcome is Outcome.TITAN
    with pytest.raises(WrongOrigin):
        register(
            local,
            SoftAuthenticator(aaguid=TITAN, ca=ca),
            test_metadata,
            origin="http://localhost:5001",
        )


# --- refusals: what cannot be read ------------------------------------------------------------


def _good_registration(rp: RelyingParty, ca: TestCA) -> tuple[dict[str, Any], Challenge]:
    options, challenge = registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")
    return SoftAuthenticator(aaguid=TITAN, ca=ca).register(options, origin=rp.origin), challenge


def _edit_attestation(encoded: str, edit: Any) -> str:
    attestation = cbor.decode(base64.urlsafe_b64decode(encoded + "=="))
    return b64url(cbor.encode(edit(attestation)))


def _with(response: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**response, "response": {**response["response"], **fields}}


MALFORMED: dict[str, Any] = {
    "empty string": lambda r: "",
    "not JSON": lambda r: "{not json",
    "a JSON list": lambda r: "[]",
    "a JSON number": lambda r: "42",
    "deeply nested JSON": lambda r: "[" * 5000,
    "an enormous answer": lambda r: json.dumps({**r, "padding": "x" * 100_000}),
    "only a type": lambda r: {"type": "public-key"},
    "another credential type": lambda r: {**r, "type": "password"},
    "no type": lambda r: {k: v for k, v in r.items() if k != "type"},
    "id that is not rawId": lambda r: {**r, "id": b64url(b"another")},
    "rawId not base64": lambda r: {**r, "id": "***", "rawId": "***"},
    "response a string": lambda r: {**r, "response": "attestation"},
    "client data not base64": lambda r: _with(r, clientDataJSON="***"),
    "client data not JSON": lambda r: _with(r, clientDataJSON=b64url(b"\xff\xfe")),
    "client data a number": lambda r: _with(r, clientDataJSON=7),
    "client data without origin": lambda r: _with(
        r, clientDataJSON=b64url(b'{"type":"webauthn.create","challenge":"AAAA"}')
    ),
    "attestation missing": lambda r: {**r, "response": {"clientDataJSON": "e30"}},
    "attestation not CBOR": lambda r: _with(r, attestationObject=b64url(b"\xff\x00\x01")),
    "attestation empty": lambda r: _with(r, attestationObject=""),
    "attestation deeply nested CBOR": lambda r: _with(r, attestationObject=b64url(b"\x81" * 5000)),
    "attestation a CBOR list": lambda r: _with(r, attestationObject=b64url(cbor.encode([1, 2]))),
    "authData truncated": lambda r: _with(
        r,
        attestationObject=_edit_attestation(
            r["response"]["attestationObject"], lambda a: {**a, "authData": a["authData"][:40]}
        ),
    ),
    "authData a string": lambda r: _with(
        r,
        attestationObject=_edit_attestation(
            r["response"]["attestationObject"], lambda a: {**a, "authData": "text"}
        ),
    ),
    "format a number": lambda r: _with(
        r,
        attestationObject=_edit_attestation(
            r["response"]["attestationObject"], lambda a: {**a, "fmt": 3}
        ),
    ),
    "a format WebAuthn does not define": lambda r: _with(
        r,
        attestationObject=_edit_attestation(
            r["response"]["attestationObject"], lambda a: {**a, "fmt": "x" * 40}
        ),
    ),
    "statement without signature": lambda r: _with(
        r,
        attestationObject=_edit_attestation(
            r["response"]["attestationObject"], lambda a: {**a, "attStmt": {"alg": -7}}
        ),
    ),
}


@pytest.mark.parametrize("damage", MALFORMED.values(), ids=MALFORMED.keys())
def test_an_answer_that_cannot_be_read_is_a_4xx_with_a_reason(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata, damage: Any
) -> None:
    response, challenge = _good_registration(rp, ca)

    with pytest.raises(WebAuthnError) as refused:
        verify_registration(
            rp=rp, challenge=challenge, response=damage(response), metadata=test_metadata
        )

    assert 400 <= refused.value.status_code < 500
    assert refused.value.message.endswith(".")
    assert "Response" not in refused.value.message  # fido2's words go to .detail, not to people


def test_unreadable_json_says_so(rp: RelyingParty, ca: TestCA, test_metadata: Metadata) -> None:
    response, challenge = _good_registration(rp, ca)

    with pytest.raises(MalformedResponse, match="not JSON"):
        verify_registration(rp=rp, challenge=challenge, response="{", metadata=test_metadata)
    with pytest.raises(MalformedResponse, match="could not be read"):
        verify_registration(
            rp=rp,
            challenge=challenge,
            response=_with(response, attestationObject=b64url(b"\xff\x00")),
            metadata=test_metadata,
        )


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    client_data=st.binary(max_size=200) | _json_values.map(lambda v: json.dumps(v).encode()),
    attestation=st.binary(max_size=300),
    extra=st.dictionaries(st.sampled_from(["id", "rawId", "response", "type"]), _json_values),
)
def test_nothing_the_browser_sends_escapes_as_anything_but_a_webauthn_error(
    client_data: bytes, attestation: bytes, extra: dict[str, Any]
) -> None:
    rp = RelyingParty.from_base_url("https://keys.example.org", name="Keys")
    _, challenge = registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")
    response = {
        "id": "AAAA",
        "rawId": "AAAA",
        "type": "public-key",
        "response": {
            "clientDataJSON": b64url(client_data),
            "attestationObject": b64url(attestation),
        },
        **extra,
    }

    with pytest.raises(WebAuthnError):
        verify_registration(
            rp=rp, challenge=challenge, response=response, metadata=Metadata.bundled()
        )


def test_every_webauthn_error_is_a_domain_error_with_a_4xx_status() -> None:
    from adapters import webauthn

    errors = [
        value
        for value in vars(webauthn).values()
        if isinstance(value, type) and issubclass(value, WebAuthnError)
    ]

    assert len(errors) >= 12
    for error in errors:
        assert issubclass(error, DomainError)
        assert 400 <= error.status_code < 500, error
        assert error.title


# --- signing in -------------------------------------------------------------------------------


@pytest.fixture
def titan(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata
) -> tuple[SoftAuthenticator, dict[bytes, StoredKey]]:
    """A registered Titan and the app's record of it."""
    key = SoftAuthenticator(aaguid=TITAN, ca=ca)
    registration = register(rp, key, test_metadata)
    stored = {
        registration.credential_id: StoredKey(
            public_key=registration.public_key, sign_count=registration.sign_count
        )
    }
    return key, stored


def sign_in(
    rp: RelyingParty, key: SoftAuthenticator, stored: dict[bytes, StoredKey], **lies: Any
) -> Assertion:
    options, challenge = authentication_options(rp=rp, credentials=list(stored))
    response = key.sign_in(options, **{"origin": rp.origin, **lies})
    return verify_authentication(rp=rp, challenge=challenge, response=response, credentials=stored)


def test_signing_in_with_a_registered_key_moves_its_counter(rp: RelyingParty, titan: Any) -> None:
    key, stored = titan
    (credential_id,) = stored

    first = sign_in(rp, key, stored)
    stored[credential_id] = StoredKey(stored[credential_id].public_key, first.sign_count)
    second = sign_in(rp, key, stored)

    assert (first.credential_id, first.sign_count) == (credential_id, 1)
    assert second.sign_count == 2


@pytest.mark.parametrize(("stored_count", "sent"), [(5, 5), (5, 4), (5, 0)])
def test_a_counter_that_did_not_move_forward_is_refused(
    rp: RelyingParty, titan: Any, stored_count: int, sent: int
) -> None:
    key, stored = titan
    (credential_id,) = stored
    stored[credential_id] = StoredKey(stored[credential_id].public_key, stored_count)

    with pytest.raises(CounterRegression) as refused:
        sign_in(rp, key, stored, counter=sent)

    assert refused.value.status_code == 409
    assert (refused.value.credential_id, refused.value.stored) == (credential_id, stored_count)
    assert refused.value.received == sent


def test_a_key_without_a_counter_may_always_send_zero(rp: RelyingParty, titan: Any) -> None:
    key, stored = titan

    assert sign_in(rp, key, stored, counter=0).sign_count == 0
    assert sign_in(rp, key, stored, counter=0).sign_count == 0


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_a_sign_in_for_another_origin_is_refused(rp: RelyingParty, titan: Any, origin: str) -> None:
    key, stored = titan

    with pytest.raises(WrongOrigin):
        sign_in(rp, key, stored, origin=origin)


def test_a_sign_in_for_another_rp_id_is_refused(rp: RelyingParty, titan: Any) -> None:
    key, stored = titan

    with pytest.raises(WrongRelyingParty):
        sign_in(rp, key, stored, rp_id="evil.example")


def test_a_sign_in_without_a_touch_is_refused(rp: RelyingParty, titan: Any) -> None:
    key, stored = titan

    with pytest.raises(UserNotPresent):
        sign_in(rp, key, stored, flags=0)


def test_a_replayed_sign_in_is_refused(rp: RelyingParty, titan: Any) -> None:
    key, stored = titan
    options, challenge = authentication_options(rp=rp, credentials=list(stored))
    response = key.sign_in(options, origin=rp.origin)
    verify_authentication(rp=rp, challenge=challenge, response=response, credentials=stored)
    _, next_challenge = authentication_options(rp=rp, credentials=list(stored))

    with pytest.raises(ChallengeMismatch):
        verify_authentication(
            rp=rp, challenge=next_challenge, response=response, credentials=stored
        )
    with pytest.raises(ChallengeMismatch):  # nor can it pass for a registration
        verify_registration(
            rp=rp, challenge=challenge, response=response, metadata=Metadata.bundled()
        )


def test_a_key_that_is_not_the_persons_is_refused(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata, titan: Any
) -> None:
    key, stored = titan
    stranger = SoftAuthenticator(aaguid=TITAN, ca=ca)
    register(rp, stranger, test_metadata)
    options, challenge = authentication_options(rp=rp, credentials=list(stored))
    (strangers_credential,) = stranger.credentials
    response = stranger.sign_in(options, origin=rp.origin, credential_id=strangers_credential)

    with pytest.raises(UnknownCredential):
        verify_authentication(rp=rp, challenge=challenge, response=response, credentials=stored)


def test_a_signature_by_another_key_is_refused(
    rp: RelyingParty, ca: TestCA, test_metadata: Metadata, titan: Any
) -> None:
    key, stored = titan
    (credential_id,) = stored
    impostor = SoftAuthenticator(aaguid=TITAN, ca=ca)
    register(rp, impostor, test_metadata)
    # The impostor signs with its own key under the person's credential ID.
    impostor.credentials[credential_id] = next(iter(impostor.credentials.values()))
    options, challenge = authentication_options(rp=rp, credentials=list(stored))
    response = impostor.sign_in(options, origin=rp.origin, credential_id=credential_id)

    with pytest.raises(SignatureMismatch) as refused:
        verify_authentication(rp=rp, challenge=challenge, response=response, credentials=stored)

    assert refused.value.status_code == 400


def test_an_unreadable_sign_in_is_a_4xx(rp: RelyingParty, titan: Any) -> None:
    _, stored = titan
    _, challenge = authentication_options(rp=rp, credentials=list(stored))

    responses: list[Any] = ["", "[]", {"type": "public-key"}, {"type": "public-key", "response": 1}]
    for response in responses:
        with pytest.raises(MalformedResponse):
            verify_authentication(rp=rp, challenge=challenge, response=response, credentials=stored)


# --- the metadata and the support tool --------------------------------------------------------


def test_the_bundled_metadata_knows_the_titan_v2_and_loads_once(real_metadata: Metadata) -> None:
    titan = real_metadata.model_for(TITAN)

    assert TITAN in TITAN_AAGUIDS
    assert titan is not None
    assert titan.description == "Google Titan Security Key v2"
    assert titan.root_certificates
    assert titan.refused_status is None
    assert len(real_metadata.by_aaguid) > 300
    assert Metadata.bundled() is real_metadata


def test_a_test_entry_leaves_the_bundled_metadata_alone(
    real_metadata: Metadata, test_metadata: Metadata, ca: TestCA
) -> None:
    assert test_metadata.model_for(TITAN).root_certificates == (ca.der,)  # type: ignore[union-attr]
    assert ca.der not in real_metadata.model_for(TITAN).root_certificates  # type: ignore[union-attr]


def _inspect(response: dict[str, Any], metadata: Metadata) -> AttestationReport:
    return inspect_attestation(
        attestation_object=response["response"]["attestationObject"],
        client_data=response["response"]["clientDataJSON"],
        metadata=metadata,
    )


def test_inspecting_a_genuine_titan_attestation(
    rp: RelyingParty, ca: TestCA, real_metadata: Metadata, test_metadata: Metadata
) -> None:
    response, _ = _good_registration(rp, ca)

    trusted = _inspect(response, test_metadata)
    untrusted = _inspect(response, real_metadata)

    assert asdict(trusted) == {
        "format": "packed",
        "aaguid": str(TITAN),
        "model": "Google Titan Security Key v2",
        "trusted": True,
        "titan": True,
        "problem": None,
    }
    assert (untrusted.trusted, untrusted.titan, untrusted.model) == (
        False,
        False,
        "Google Titan Security Key v2",
    )
    assert untrusted.problem is not None
    assert "not signed by that model's maker" in untrusted.problem


def test_inspecting_withheld_and_forged_attestations(
    rp: RelyingParty, test_metadata: Metadata
) -> None:
    options, _ = registration_options(rp=rp, user_id=b"u", user_name="a", display_name="A")
    key = SoftAuthenticator(aaguid=TITAN)

    withheld = _inspect(key.register(options, origin=rp.origin, attestation="none"), test_metadata)
    forged = _inspect(key.register(options, origin=rp.origin, attestation="self"), test_metadata)

    assert asdict(withheld) == {
        "format": "none",
        "aaguid": str(UUID(int=0)),
        "model": None,
        "trusted": False,
        "titan": False,
        "problem": None,
    }
    assert (forged.format, forged.trusted, forged.titan) == ("packed", False, False)
    assert forged.problem is not None and "signs its own attestation" in forged.problem


@pytest.mark.parametrize(
    ("attestation_object", "client_data", "problem"),
    [
        ("", "", "not base64url CBOR"),
        ("%%%", "e30", "not base64url CBOR"),
        (b64url(b"\x81" * 5000), "e30", "not base64url CBOR"),
        (b64url(cbor.encode({"fmt": "packed"})), "e30", "not base64url CBOR"),
        (None, "not base64 at all!", "client data is not base64url client JSON"),
        (None, b64url(b"[1, 2]"), "client data is not base64url client JSON"),
        (None, b64url(b'{"type": "webauthn.create", "challenge": "AAAA", "origin": "x"}'), "does"),
    ],
)
def test_inspecting_garbage_reports_a_problem_and_never_raises(
    rp: RelyingParty,
    ca: TestCA,
    test_metadata: Metadata,
    attestation_object: str | None,
    client_data: str,
    problem: str,
) -> None:
    if attestation_object is None:
        response, _ = _good_registration(rp, ca)
        attestation_object = response["response"]["attestationObject"]

    report = inspect_attestation(
        attestation_object=attestation_object, client_data=client_data, metadata=test_metadata
    )

    assert (report.trusted, report.titan) == (False, False)
    assert report.problem is not None
    assert problem in report.problem
