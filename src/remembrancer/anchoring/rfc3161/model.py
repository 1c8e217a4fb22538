"""The values of RFC 3161 verification: imprints, the checks passed, the report, the error codes.

:class:`Imprint` holds an RFC 3161 ``MessageImprint`` and checks its size
against its hash; :data:`ERROR_CODES` lists every ``tsa_*`` code a
verification can end with (each failure raises
:class:`~remembrancer.core.errors.VerificationError` through
:func:`refuse`); :class:`TokenReport` is what a valid token established.
Pure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from cryptography.hazmat.primitives import hashes

from remembrancer.core.errors import ConfigError, VerificationError

MAX_RESPONSE_BYTES = 256 * 1024


ERROR_CODES: dict[str, str] = {
    "tsa_response_malformed": "the bytes are not a well-formed TimeStampResp or TimeStampToken",
    "tsa_status_rejected": "the TSA did not grant the request (PKIStatus is not granted/grantedWithMods)",
    "tsa_signer_unknown": "no certificate for the token's signer is in the token, the pin or the trust bundle",
    "tsa_algorithm_unsupported": "the token uses a digest or signature algorithm this verifier refuses",
    "tsa_signature_invalid": "the CMS signature or its messageDigest does not verify",
    "tsa_signer_cert_mismatch": "the ESS signingCertificate attribute does not name the signing certificate",
    "tsa_cert_not_pinned": "the token is not signed by the pinned TSA certificate",
    "tsa_eku_missing": "the TSA certificate lacks a critical extendedKeyUsage of exactly id-kp-timeStamping",
    "tsa_key_usage_invalid": "the TSA certificate's keyUsage allows more than digitalSignature/nonRepudiation",
    "tsa_chain_untrusted": "the TSA certificate does not chain to the trust bundle as of genTime",
    "tsa_name_mismatch": "the TSTInfo's tsa name is not the signing certificate's subject",
    "tsa_imprint_mismatch": "the token timestamps a different message imprint",
    "tsa_nonce_mismatch": "the token does not carry the nonce of the request",
    "tsa_policy_mismatch": "the token was issued under another TSA policy",
}

_HASH_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"


def refuse(code: str, message: str, **details: Any) -> NoReturn:
    raise VerificationError(message, code=code, details=details or None)


@dataclass(frozen=True, slots=True)
class Imprint:
    """An RFC 3161 ``MessageImprint``: the hash algorithm and the hashed message."""

    hash_algorithm: str  # "sha256" | "sha384" | "sha512"
    hashed_message: bytes

    def __post_init__(self) -> None:
        size = _HASH_SIZES.get(self.hash_algorithm)
        if size is None:
            raise ConfigError(
                f"unsupported imprint hash {self.hash_algorithm!r}", code="tsa_imprint_invalid"
            )
        if len(self.hashed_message) != size:
            raise ConfigError(
                f"a {self.hash_algorithm} imprint is {size} bytes", code="tsa_imprint_invalid"
            )

    @classmethod
    def of_data(cls, data: bytes, hash_algorithm: str = "sha256") -> Imprint:
        """The imprint of arbitrary data (general TSA use: ``tsa verify --data``)."""
        if hash_algorithm not in _HASH_SIZES:
            raise ConfigError(
                f"unsupported imprint hash {hash_algorithm!r}", code="tsa_imprint_invalid"
            )
        return cls(hash_algorithm, hashlib.new(hash_algorithm, data).digest())

    @classmethod
    def for_digest(cls, digest: bytes) -> Imprint:
        """The rail's imprint for an anchored 32-byte digest: ``SHA-256(digest)``."""
        if len(digest) != 32:
            raise ConfigError("an anchored digest is 32 bytes", code="anchor_root_invalid")
        return cls("sha256", hashlib.sha256(digest).digest())


@dataclass(frozen=True, slots=True)
class Check:
    """One verification step that passed, for the report and the CLI."""

    name: str
    detail: str


@dataclass(frozen=True, slots=True)
class TokenReport:
    """What :func:`verify_token` established about a valid token."""

    form: str  # "response" (TimeStampResp) or "token" (bare TimeStampToken)
    status: str  # "granted" | "granted_with_mods"
    gen_time: dt.datetime  # the TSA's genTime (aware, UTC)
    serial_number: int
    policy: str
    imprint: Imprint
    nonce: int | None  # as carried by the token
    nonce_checked: bool
    tsa_name: str | None  # the TSTInfo's tsa field, readable
    accuracy_seconds: float | None
    signer_subject: str
    signer_issuer: str
    signer_serial: int
    signer_sha256: str
    signer_not_before: dt.datetime
    signer_not_after: dt.datetime
    chain: tuple[str, ...]  # subjects, signer first, trust anchor last
    trust_anchor_sha256: str
    valid_at_gen_time: bool  # always True in a report: a token that is not raises
    cert_expired_now: bool  # a certificate of the chain has expired as of ``checked_at``
    checked_at: dt.datetime
    verifier: str
    checks: tuple[Check, ...] = field(default=())

    @property
    def gen_time_epoch(self) -> int:
        return int(self.gen_time.timestamp())

    @property
    def serial_hex(self) -> str:
        return format(self.serial_number, "x")

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": True,
            "form": self.form,
            "status": self.status,
            "genTime": iso_utc(self.gen_time),
            "genTimeEpoch": self.gen_time_epoch,
            "serialNumber": self.serial_hex,
            "policy": self.policy,
            "imprint": {
                "hashAlgorithm": self.imprint.hash_algorithm,
                "hashedMessage": self.imprint.hashed_message.hex(),
            },
            "nonce": None if self.nonce is None else str(self.nonce),
            "nonceChecked": self.nonce_checked,
            "tsaName": self.tsa_name,
            "accuracySeconds": self.accuracy_seconds,
            "signer": {
                "subject": self.signer_subject,
                "issuer": self.signer_issuer,
                "serialNumber": format(self.signer_serial, "x"),
                "sha256": self.signer_sha256,
                "notBefore": iso_utc(self.signer_not_before),
                "notAfter": iso_utc(self.signer_not_after),
            },
            "chain": list(self.chain),
            "trustAnchorSha256": self.trust_anchor_sha256,
            "validAtGenTime": self.valid_at_gen_time,
            "certExpiredNow": self.cert_expired_now,
            "checkedAt": iso_utc(self.checked_at),
            "verifier": self.verifier,
            "checks": [{"name": c.name, "detail": c.detail} for c in self.checks],
        }


def iso_utc(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# Digest algorithms a SignerInfo may list (OpenSSL refuses a token listing one it
# does not know); the signer's own digest must also be in HASHES.
KNOWN_DIGESTS = frozenset({"md5", "sha1", "sha224", "sha256", "sha384", "sha512",
                            "sha512_224", "sha512_256", "sha3_224", "sha3_256", "sha3_384",
                            "sha3_512"})  # fmt: skip
# ESSCertIDv2 hash algorithms (an identifier of the certificate, not a signature).
ESS_HASHES = frozenset(KNOWN_DIGESTS - {"md5"})
