"""A software security key for tests: P-256 credentials, attestation from a test CA, assertions.

fido2 ships no authenticator. This one builds clientDataJSON and authenticatorData byte by byte,
attests new credentials as ``packed`` (signed by an attestation certificate from a ``TestCA``, or
self-attested with the credential's own key) or ``none``, and answers in the shape of the
browser's ``PublicKeyCredential.toJSON()``. Keyword arguments let a test lie about the origin, the
RP ID, the challenge or the touch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fido2 import cbor

AAGUID_EXTENSION = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
UP, AT = 0x01, 0x40  # authenticatorData flags: user present, attested credential data
ES256 = -7


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _name(common_name: str, *, unit: str = "Authenticator Attestation") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Soft Keys Test"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    *, subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
    )


@dataclass
class TestCA:
    """A self-signed attestation root, like the one a key maker keeps in its factory."""

    __test__ = False  # not a pytest test class

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, common_name: str = "Soft Keys Test Root") -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        certificate = (
            _certificate(subject=name, issuer=name, public_key=key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, certificate=certificate)

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def issue(self, *, aaguid: UUID, public_key: ec.EllipticCurvePublicKey) -> bytes:
        """An attestation certificate (DER) carrying the AAGUID extension, as FIDO requires."""
        return (
            _certificate(
                subject=_name("Soft Key Batch 1"),
                issuer=self.certificate.subject,
                public_key=public_key,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                # The extension's value is an OCTET STRING holding the 16 AAGUID bytes.
                x509.UnrecognizedExtension(AAGUID_EXTENSION, b"\x04\x10" + aaguid.bytes),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )


@dataclass
class _Credential:
    key: ec.EllipticCurvePrivateKey
    counter: int = 0


@dataclass
class SoftAuthenticator:
    """A security key of model ``aaguid`` whose attestation certificate ``ca`` issued."""

    aaguid: UUID
    ca: TestCA | None = None
    extra_chain: Sequence[bytes] = ()  # more certificates to send after the attestation one
    attestation_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credentials: dict[bytes, _Credential] = field(default_factory=dict)

    def register(
        self,
        options: Mapping[str, Any],
        *,
        origin: str,
        attestation: str = "packed",  # or "self" or "none"
        rp_id: str | None = None,
        challenge: str | None = None,
        flags: int = UP | AT,
        cross_origin: bool = False,
        fmt: str | None = None,  # the format's name to send, whatever the statement is
    ) -> dict[str, Any]:
        """Make a credential, as ``navigator.credentials.create`` would answer."""
        key = ec.generate_private_key(ec.SECP256R1())
        credential_id = os.urandom(32)
        self.credentials[credential_id] = _Credential(key)
        client_data = _client_data(
            "webauthn.create", challenge or options["challenge"], origin, cross_origin
        )
        numbers = key.public_key().public_numbers()
        cose_key = {1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32), -3: numbers.y.to_bytes(32)}
        aaguid = bytes(16) if attestation == "none" else self.aaguid.bytes  # as browsers do
        auth_data = (
            _authenticator_data(rp_id or options["rp"]["id"], flags, 0)
            + aaguid
            + struct.pack(">H", len(credential_id))
            + credential_id
            + cbor.encode(cose_key)
        )
        signed = auth_data + hashlib.sha256(client_data).digest()
        statement: dict[str, Any]
        if attestation == "none":
            statement = {}
        elif attestation == "self":
            statement = {"alg": ES256, "sig": _sign(key, signed)}
        else:
            assert self.ca is not None, "packed attestation needs a CA"
            certificate = self.ca.issue(
                aaguid=self.aaguid, public_key=self.attestation_key.public_key()
            )
            statement = {
                "alg": ES256,
                "sig": _sign(self.attestation_key, signed),
                "x5c": [certificate, *self.extra_chain],
            }
        fmt = fmt or ("none" if attestation == "none" else "packed")
        attestation_object = cbor.encode({"fmt": fmt, "attStmt": statement, "authData": auth_data})
        return _credential_json(
            credential_id,
            {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation_object),
                "transports": ["usb", "nfc"],
            },
        )

    def sign_in(
        self,
        options: Mapping[str, Any],
        *,
        origin: str,
        credential_id: bytes | None = None,
        counter: int | None = None,
        rp_id: str | None = None,
        flags: int = UP,
    ) -> dict[str, Any]:
        """Sign a challenge, as ``navigator.credentials.get`` would answer."""
        allowed = [item["id"] for item in options.get("allowCredentials", [])]
        if credential_id is None:
            credential_id = next(c for c in self.credentials if b64url(c) in allowed)
        credential = self.credentials[credential_id]
        credential.counter = credential.counter + 1 if counter is None else counter
        client_data = _client_data("webauthn.get", options["challenge"], origin, False)
        auth_data = _authenticator_data(rp_id or options["rpId"], flags, credential.counter)
        signature = _sign(credential.key, auth_data + hashlib.sha256(client_data).digest())
        return _credential_json(
            credential_id,
            {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
            },
        )


def _client_data(kind: str, challenge: str, origin: str, cross_origin: bool) -> bytes:
    data = {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": cross_origin}
    return json.dumps(data, separators=(",", ":")).encode()


def _authenticator_data(rp_id: str, flags: int, counter: int) -> bytes:
    return hashlib.sha256(rp_id.encode()).digest() + struct.pack(">BI", flags, counter)


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _credential_json(credential_id: bytes, response: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": b64url(credential_id),
        "rawId": b64url(credential_id),
        "type": "public-key",
        "authenticatorAttachment": "cross-platform",
        "clientExtensionResults": {},
        "response": response,
    }
