"""The RFC 3161 rail: anchor a digest with a Time-Stamp Authority (DESIGN.md 3.8).

Two layers, shaped like python-tuf's trust core and its I/O shell:

* :func:`verify_token` is pure (no I/O, no clock unless given one): it takes
  the bytes of a ``TimeStampResp`` (RFC 3161 section 2.4.2) or of a bare
  ``TimeStampToken``, the message imprint the caller expects, the nonce it
  sent and the trust roots it pins, and returns a :class:`TokenReport` or
  raises :class:`~remembrancer.core.errors.VerificationError` with one of the
  ``tsa_*`` codes in :data:`ERROR_CODES`.  It raises nothing else, for any
  input bytes.
* :class:`Rfc3161Rail` does the HTTP (RFC 3161 section 3.4, ``POST`` of
  ``application/timestamp-query``), keeps the response exactly as received in
  the anchor's evidence, and re-verifies it offline.

What is anchored: for a 32-byte ``digest`` the rail asks for a timestamp over
``SHA-256(digest)``; that is the message imprint ``Imprint.for_digest``
builds, and what :meth:`Rfc3161Rail.verify` recomputes from ``anchor.root``
(never from the evidence).

Verification, in this order, each step with its own error code (the checks
and their semantics are those of ``openssl ts -verify``, with the chain judged
at genTime; docs/adr/0010-rfc3161-acceptance.md lists where we differ):

1. parse -> ``tsa_response_malformed``: size cap, one BER element and no
   trailing byte, bounded nesting (:mod:`remembrancer.anchoring.ber`).  BER is
   accepted where no signature reaches (indefinite lengths, the certificate
   SET OF in any order, as Bouncy Castle, FreeTSA, DigiCert and others send
   it); the encapsulated TSTInfo and the signed attributes must be framed as
   DER (RFC 5652 section 5.3) and are kept exactly as received; one
   SignerInfo, named by issuerAndSerialNumber;
2. ``PKIStatus`` granted or grantedWithMods -> ``tsa_status_rejected``;
3. the signer certificate (from the pin, the trust bundle, then the token) ->
   ``tsa_signer_unknown``;
4. messageDigest over the eContent octets as received, and the signature over
   the signed attributes as received (the SET tag in place of [0]), hashed with
   the SignerInfo's digestAlgorithm: RSA PKCS #1 v1.5 or ECDSA (RFC 5652
   sections 5.4, 5.6) -> ``tsa_signature_invalid``
   (``tsa_algorithm_unsupported`` for SHA-1, RSASSA-PSS, EdDSA);
5. the pin -> ``tsa_cert_not_pinned``; the extendedKeyUsage critical and
   exactly id-kp-timeStamping (RFC 3161 section 2.3) -> ``tsa_eku_missing``;
   a keyUsage of digitalSignature and/or nonRepudiation only ->
   ``tsa_key_usage_invalid``;
6. the chain to a root of the trust bundle **as of genTime** ->
   ``tsa_chain_untrusted``;
7. the ESS signingCertificate and/or signingCertificateV2 attribute: its
   first certificate ID names the signer, any other a CA of the chain (RFC
   3161 section 2.4.1, RFC 5816) -> ``tsa_signer_cert_mismatch``;
8. the TSTInfo's ``tsa`` name, if present, is the signer's subject or one of
   its subjectAltNames -> ``tsa_name_mismatch``;
9. imprint (algorithm and value; hash parameters other than absent or NULL
   fail step 1), nonce, policy ->
   ``tsa_imprint_mismatch``, ``tsa_nonce_mismatch``, ``tsa_policy_mismatch``.

Why genTime: a timestamp token proves that the data existed at genTime; it
stays valid after the TSA certificate expires (RFC 3161 section 4, and the
practice of long-term signature formats).  The report says the chain was valid
at genTime and whether a certificate in it has expired since
(``cert_expired_now``).

Who decides.  asn1crypto reads the structure, ``cryptography`` verifies the
signature and validates the path; no other library's verdict is consulted
(rfc3161-client's strict-DER parser refused the tokens real TSAs send, see the
ADR).  Step 6 is ``cryptography``'s RFC 5280 path validation with a fixed
time (``PolicyBuilder().time(genTime)``) and an extension policy written for
TSAs rather than the web PKI: the EKU is checked in step 5; an issuing
certificate must carry basicConstraints cA=TRUE and, if it has keyUsage,
keyCertSign; an unknown critical extension is refused.  The trust anchors
are the self-issued certificates of the bundle (as OpenSSL without partial
chains); the bundle's other certificates and the token's only help build the
path.  The web PKI's algorithm rules still apply (no SHA-1 certificate
signatures, RSA keys of 2048 bits or more, no DSA).  Revocation is not
checked: no CRL or OCSP is fetched (offline verification).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import http.client
import importlib.metadata
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from asn1crypto import cms, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import verification as x509v
from cryptography.x509.oid import ExtendedKeyUsageOID

from remembrancer.anchoring import ber
from remembrancer.anchoring.base import RailError, Verdict, VerifyContext
from remembrancer.anchoring.settings import Rfc3161Settings, rail_settings
from remembrancer.core.anchor import Anchor, Finality
from remembrancer.core.errors import ConfigError, VerificationError

MAX_RESPONSE_BYTES = 256 * 1024
QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"
MAX_CHAIN_DEPTH = 6

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
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"


def _fail(code: str, message: str, **details: Any) -> NoReturn:
    raise VerificationError(message, code=code, details=details or None)


@functools.cache
def _lib_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed with us
        return "unknown"


# -- values ---------------------------------------------------------------------------


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
            "genTime": _iso(self.gen_time),
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
                "notBefore": _iso(self.signer_not_before),
                "notAfter": _iso(self.signer_not_after),
            },
            "chain": list(self.chain),
            "trustAnchorSha256": self.trust_anchor_sha256,
            "validAtGenTime": self.valid_at_gen_time,
            "certExpiredNow": self.cert_expired_now,
            "checkedAt": _iso(self.checked_at),
            "verifier": self.verifier,
            "checks": [{"name": c.name, "detail": c.detail} for c in self.checks],
        }


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _as_datetime(now: int | float | dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if isinstance(now, dt.datetime):
        return now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(now, dt.UTC)


def verifier_description(trust_roots: Sequence[x509.Certificate]) -> str:
    """The ``verifier`` string of an anchor checked against ``trust_roots``."""
    return (
        f"remembrancer.rfc3161 (asn1crypto {_lib_version('asn1crypto')}, "
        f"cryptography {_lib_version('cryptography')}); chain as of genTime; "
        f"trust bundle sha256:{trust_bundle_fingerprint(trust_roots)}"
    )


def trust_bundle_fingerprint(trust_roots: Sequence[x509.Certificate]) -> str:
    """SHA-256 over the bundle's DER certificates, sorted and deduplicated.

    Independent of PEM whitespace, comments and certificate order."""
    ders = sorted({c.public_bytes(serialization.Encoding.DER) for c in trust_roots})
    h = hashlib.sha256()
    for der in ders:
        h.update(len(der).to_bytes(4, "big") + der)
    return h.hexdigest()


def load_trust_bundle(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """The certificates of a PEM trust bundle (ConfigError if unusable or empty)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(
            f"cannot read trust bundle {path}: {e.strerror}", code="tsa_trust_bundle_unreadable"
        ) from e
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ConfigError(
            f"{path} is not a PEM bundle of certificates: {e}", code="tsa_trust_bundle_invalid"
        ) from e
    if not certs:
        raise ConfigError(f"{path} holds no certificate", code="tsa_trust_bundle_invalid")
    return certs


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """One PEM (or DER) certificate, for ``pinned_cert``."""
    certs = load_trust_bundle(path) if _looks_pem(path) else None
    if certs is not None:
        if len(certs) != 1:
            raise ConfigError(f"{path} must hold exactly one certificate", code="tsa_pin_invalid")
        return certs[0]
    try:
        return x509.load_der_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a certificate: {e}", code="tsa_pin_invalid") from e


def _looks_pem(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as f:
            return b"-----BEGIN" in f.read(4096)
    except OSError:
        return True  # let load_trust_bundle report the error


# -- parsing --------------------------------------------------------------------------

MAX_EMBEDDED_CERTS = 32
MAX_SIGNED_ATTRS = 32

# The DER contents of the OBJECT IDENTIFIERs the structure is navigated by.
_OID_SIGNED_DATA_BYTES = bytes.fromhex("2a864886f70d010702")
_OID_TST_INFO_BYTES = bytes.fromhex("2a864886f70d0109100104")
# Digest algorithms a SignerInfo may list (OpenSSL refuses a token listing one it
# does not know); the signer's own digest must also be in _HASHES.
_KNOWN_DIGESTS = frozenset({"md5", "sha1", "sha224", "sha256", "sha384", "sha512",
                            "sha512_224", "sha512_256", "sha3_224", "sha3_256", "sha3_384",
                            "sha3_512"})  # fmt: skip
# ESSCertIDv2 hash algorithms (an identifier of the certificate, not a signature).
_ESS_HASHES = frozenset(_KNOWN_DIGESTS - {"md5"})


@dataclass(frozen=True, slots=True)
class _Parsed:
    form: str
    status: int
    token_der: bytes  # the TimeStampToken (ContentInfo) exactly as received
    signed_data: Any  # asn1crypto.cms.SignedData
    signer_info: Any  # asn1crypto.cms.SignerInfo
    signed_attrs: Any  # asn1crypto.cms.CMSAttributes, read from signed_attrs_der
    signed_attrs_der: bytes  # what the signature covers: the attributes as received, SET tag
    tst_info: Any  # asn1crypto.tsp.TSTInfo
    tst_info_der: bytes  # the eContent octets as received (what messageDigest covers)
    certificates: tuple[x509.Certificate, ...]
    unreadable_certificates: int  # embedded certificates cryptography cannot read (unused)


def _malformed(message: str) -> NoReturn:
    _fail("tsa_response_malformed", message)


def _children(tlv: ber.Tlv, what: str, count: tuple[int, int]) -> tuple[ber.Tlv, ...]:
    if not tlv.constructed or not count[0] <= len(tlv.children) <= count[1]:
        _malformed(f"{what}: not the expected structure")
    return tlv.children


def parse_response(data: bytes) -> _Parsed:
    """Parse a TimeStampResp or a bare TimeStampToken into its parts.

    BER is accepted where no signature reaches (indefinite lengths, a
    certificate SET OF in any order, as real TSAs send them); the two signed
    parts, the encapsulated TSTInfo and the signed attributes, must be framed
    as DER (definite, minimal lengths; RFC 5652 section 5.3, RFC 3161 section
    2.4.2) and are kept exactly as received.  Bounded: at most
    MAX_RESPONSE_BYTES, one element and no trailing byte, nesting and element
    counts capped (:mod:`remembrancer.anchoring.ber`).

    Raises VerificationError ``tsa_response_malformed`` or, for a response
    that is not granted, ``tsa_status_rejected``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        _malformed("the response must be bytes")
    data = bytes(data)
    if len(data) > MAX_RESPONSE_BYTES:
        _malformed(f"larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        top = ber.read(data)
    except ber.BerError as e:
        _malformed(f"not one well-formed BER element: {e}")
    try:
        return _parse(data, top)
    except VerificationError:
        raise
    except Exception as e:  # asn1crypto and cryptography raise several types on bad input
        _malformed(f"cannot parse: {type(e).__name__}: {e}")


def _parse(data: bytes, top: ber.Tlv) -> _Parsed:
    if not top.is_(0, 16):
        _malformed("neither a TimeStampResp nor a TimeStampToken (not a SEQUENCE)")
    parts = _children(top, "the response", (1, 2))
    # A TimeStampResp starts with PKIStatusInfo (a SEQUENCE); a token, a ContentInfo,
    # starts with its contentType (an OBJECT IDENTIFIER).
    if parts[0].is_(0, 6):
        form, status, token = "token", 0, top
    elif parts[0].is_(0, 16):
        form = "response"
        # PKIStatusInfo: status INTEGER, statusString SEQUENCE OF UTF8String OPTIONAL,
        # failInfo BIT STRING OPTIONAL.  Its text is read only to report a rejection.
        status_parts = _children(parts[0], "the PKIStatusInfo", (1, 3))
        tags = [(t.tag_class, t.tag_number) for t in status_parts]
        if tags not in ([(0, 2)], [(0, 2), (0, 16)], [(0, 2), (0, 3)], [(0, 2), (0, 16), (0, 3)]):
            _malformed("the PKIStatusInfo is not the expected structure")
        texts = status_parts[1].children if status_parts[1:] and status_parts[1].is_(0, 16) else ()
        if any(not text.is_(0, 12) for text in texts):
            _malformed("the PKIStatusInfo's statusString is not a list of UTF8String")
        status_info = tsp.PKIStatusInfo.load(parts[0].raw(data), strict=True)
        status = int(status_info["status"])
        if status not in (0, 1):
            status_text, fail_info = _rejection_details(status_info)
            _fail(
                "tsa_status_rejected",
                f"the TSA answered {status_info['status'].native}"
                + (f": {'; '.join(status_text)}" if status_text else ""),
                status=status,
                status_string=status_text,
                fail_info=sorted(fail_info) if fail_info else [],
            )
        if len(parts) != 2:
            _malformed("a granted response without a timeStampToken")
        token = parts[1]
    else:
        _malformed("neither a TimeStampResp nor a TimeStampToken")
    if not token.is_(0, 16):
        _malformed("the timeStampToken is not a ContentInfo")
    content_type, explicit = _children(token, "the ContentInfo", (2, 2))
    if not content_type.is_(0, 6) or content_type.content(data) != _OID_SIGNED_DATA_BYTES:
        _malformed("the token is not CMS SignedData")
    if not explicit.is_(2, 0):
        _malformed("the ContentInfo's content is not [0]")
    (sd,) = _children(explicit, "the ContentInfo's content", (1, 1))
    if not sd.is_(0, 16):
        _malformed("the SignedData is not a SEQUENCE")
    fields = _children(sd, "the SignedData", (4, 6))
    version, digest_algorithms, encap, *middle, signer_infos = fields
    if not (version.is_(0, 2) and digest_algorithms.is_(0, 17) and encap.is_(0, 16)
            and signer_infos.is_(0, 17)):  # fmt: skip
        _malformed("the SignedData's fields are not in the expected order")
    cert_set: ber.Tlv | None = None
    for i, tlv in enumerate(middle):
        if tlv.is_(2, 0) and i == 0:
            cert_set = tlv
        elif not (tlv.is_(2, 1) and i == len(middle) - 1):
            _malformed("unexpected fields between the SignedData's content and its signers")

    # The encapsulated TSTInfo: what messageDigest covers is the eContent's value.
    encap_parts = _children(encap, "the EncapsulatedContentInfo", (1, 2))
    if not encap_parts[0].is_(0, 6) or encap_parts[0].content(data) != _OID_TST_INFO_BYTES:
        _malformed("the token does not encapsulate a TSTInfo")
    if len(encap_parts) != 2 or not encap_parts[1].is_(2, 0):
        _malformed("the token has no TSTInfo content (detached)")
    (octets,) = _children(encap_parts[1], "the eContent", (1, 1))
    if not octets.is_(0, 4) or not _is_octet_string(octets):
        _malformed("the eContent is not an OCTET STRING")
    tst_info_der = octets.string_value(data)
    try:
        tst_tlv = ber.read(tst_info_der)
    except ber.BerError as e:
        _malformed(f"the TSTInfo is not one well-formed element: {e}")
    reason = ber.der_framing_error(tst_tlv)
    if reason is not None:
        _malformed(f"the TSTInfo is not DER: {reason}")
    tst_info = tsp.TSTInfo.load(tst_info_der, strict=True)
    tst_info.native  # noqa: B018
    if tst_info["version"].native != "v1":
        _malformed("TSTInfo version must be 1")

    # The one SignerInfo, and its signed attributes exactly as received.
    (si,) = _children(signer_infos, "the SignerInfos (exactly one signer)", (1, 1))
    si_fields = _children(si, "the SignerInfo", (5, 7))
    if not si_fields[1].is_(0, 16):
        _malformed(
            "the SignerInfo does not name its signer by issuerAndSerialNumber "
            "(a subjectKeyIdentifier is not accepted: OpenSSL's RFC 3161 verifier cannot read it)"
        )
    if not si_fields[3].is_(2, 0) or not si_fields[3].constructed:
        _fail("tsa_signature_invalid", "the SignerInfo has no signed attributes")
    attrs_tlv = si_fields[3]
    reason = ber.der_framing_error(attrs_tlv)
    if reason is not None:
        _malformed(f"the signed attributes are not DER-framed: {reason}")
    if len(attrs_tlv.children) > MAX_SIGNED_ATTRS:
        _malformed(f"more than {MAX_SIGNED_ATTRS} signed attributes")
    for attr in attrs_tlv.children:
        # Each attribute's SET OF values as DER orders it (OpenSSL re-encodes it so);
        # the order of the attributes themselves is verified as received.
        values = _children(attr, "a signed attribute", (2, 2))[1]
        encodings = [v.raw(data) for v in values.children]
        if not values.is_(0, 17) or encodings != sorted(encodings):
            _malformed("a signed attribute's values are not a SET OF in DER order")
    signed_attrs_der = b"\x31" + attrs_tlv.raw(data)[1:]
    # Read lazily: the attributes verification uses are read then (an unreadable one
    # fails its step); others stay unread, as OpenSSL leaves them.
    signed_attrs = cms.CMSAttributes.load(signed_attrs_der, strict=True)
    for attr in signed_attrs:
        attr["type"].native  # noqa: B018
    signer_info = cms.SignerInfo.load(si.raw(data), strict=True)
    for name in ("version", "sid", "signature", "unsigned_attrs"):
        signer_info[name].native  # noqa: B018  (algorithm parameters stay unread, as OpenSSL)
    for name in ("digest_algorithm", "signature_algorithm"):
        signer_info[name]["algorithm"].native  # noqa: B018
    signed_data = cms.SignedData.load(sd.raw(data), strict=True)
    for name in ("version", "digest_algorithms", "crls"):
        signed_data[name].native  # noqa: B018  (the TSTInfo and certificates are read apart)
    listed = set()
    for algorithm in signed_data["digest_algorithms"]:
        name = algorithm["algorithm"].native
        if name not in _KNOWN_DIGESTS:
            _malformed(f"digestAlgorithms lists an unknown algorithm {name}")
        listed.add(name)
    if signer_info["digest_algorithm"]["algorithm"].native not in listed:
        _malformed("digestAlgorithms lacks the signer's digest algorithm")

    # The certificate set is not signed: any order, BER around it; each entry must
    # be an X.509 certificate (OpenSSL refuses other CertificateChoices).
    certs: list[x509.Certificate] = []
    unreadable = 0
    if cert_set is not None:
        if len(cert_set.children) > MAX_EMBEDDED_CERTS:
            _malformed(f"more than {MAX_EMBEDDED_CERTS} embedded certificates")
        for entry in cert_set.children:
            if not entry.is_(0, 16):
                _malformed("an embedded certificate is not an X.509 certificate")
            try:
                cert = x509.load_der_x509_certificate(entry.raw(data))
                cert.serial_number  # noqa: B018
            except ValueError:
                # Unsigned and unreadable: ignored; if the chain needs it, it fails there.
                unreadable += 1
                continue
            certs.append(cert)
    return _Parsed(
        form=form,
        status=status,
        token_der=token.raw(data),
        signed_data=signed_data,
        signer_info=signer_info,
        signed_attrs=signed_attrs,
        signed_attrs_der=signed_attrs_der,
        tst_info=tst_info,
        tst_info_der=tst_info_der,
        certificates=tuple(certs),
        unreadable_certificates=unreadable,
    )


def _rejection_details(status_info: Any) -> tuple[list[str], set[str] | None]:
    try:
        text = [str(s) for s in (status_info["status_string"].native or [])]
    except ValueError:  # not UTF-8: say so rather than fail on the TSA's prose
        text = ["(statusString not readable)"]
    try:
        fail_info = status_info["fail_info"].native
    except ValueError:
        fail_info = {"(failInfo not readable)"}
    return text, fail_info


def _is_octet_string(tlv: ber.Tlv) -> bool:
    """A primitive OCTET STRING, or a constructed one made only of OCTET STRINGs."""
    if not tlv.is_(0, 4):
        return False
    return not tlv.constructed or all(_is_octet_string(child) for child in tlv.children)


# -- verification ---------------------------------------------------------------------


def _signer_certificate(
    signer_info: Any,
    embedded: Sequence[x509.Certificate],
    pinned: x509.Certificate | None,
    trust_roots: Sequence[x509.Certificate],
) -> tuple[x509.Certificate, str]:
    """The certificate the SignerInfo's issuerAndSerialNumber names.

    Searched like OpenSSL's ``ts -verify`` (the certificates it is given, then the
    token's): the pin, the trust bundle, then the token."""
    want = signer_info["sid"].chosen
    candidates = [(pinned, "pin")] if pinned is not None else []
    candidates += [(c, "trust bundle") for c in trust_roots]
    candidates += [(c, "token") for c in embedded]
    for cert, source in candidates:
        if cert.serial_number == want["serial_number"].native and _same_name(
            cert.issuer, want["issuer"]
        ):
            return cert, source
    _fail(
        "tsa_signer_unknown",
        "the signer's certificate is not in the token, the pin or the trust bundle",
    )


def _same_name(name: x509.Name, asn1_name: Any) -> bool:
    try:
        der = name.public_bytes()
        if der == asn1_name.untag().dump():  # the same bytes: no need to normalise
            return True
        return bool(asn1_x509.Name.load(der) == asn1_name)
    except Exception:
        return False


def _attributes(parsed: _Parsed, oid: str) -> list[Any]:
    return [a for a in parsed.signed_attrs if a["type"].dotted == oid]


def _verify_cms_signature(parsed: _Parsed, cert: x509.Certificate) -> str:
    """RFC 5652 sections 5.4 and 5.6, as OpenSSL's PKCS7_signatureVerify does it.

    messageDigest is over the eContent's octets as received; the signature is
    over the signed attributes as received (SET tag in place of [0]), hashed with
    the SignerInfo's digestAlgorithm; RSA keys sign with PKCS #1 v1.5, EC keys
    with ECDSA."""
    signer_info = parsed.signer_info
    digest_alg = signer_info["digest_algorithm"]["algorithm"].native
    if digest_alg not in _HASHES:
        _fail("tsa_algorithm_unsupported", f"digest algorithm {digest_alg} is not accepted")
    content_types = _attributes(parsed, "1.2.840.113549.1.9.3")
    digests = _attributes(parsed, "1.2.840.113549.1.9.4")
    if (
        len(content_types) != 1
        or len(content_types[0]["values"]) != 1
        or content_types[0]["values"][0].dotted != _OID_TST_INFO
    ):
        _fail("tsa_signature_invalid", "the signed contentType attribute is not id-ct-TSTInfo")
    if len(digests) != 1 or len(digests[0]["values"]) != 1:
        _fail("tsa_signature_invalid", "the signed attributes lack one messageDigest")
    h = hashes.Hash(_HASHES[digest_alg]())
    h.update(parsed.tst_info_der)
    if digests[0]["values"][0].native != h.finalize():
        _fail("tsa_signature_invalid", "messageDigest does not match the TSTInfo")
    signature = signer_info["signature"].native
    label = signer_info["signature_algorithm"]["algorithm"].native
    if label in ("rsassa_pss", "ed25519", "ed448"):
        _fail(
            "tsa_algorithm_unsupported",
            f"signature algorithm {label} is not accepted (RFC 3161 verifiers such as "
            "OpenSSL's check PKCS #1 v1.5 and ECDSA signatures only)",
        )
    hash_alg = _HASHES[digest_alg]()
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, parsed.signed_attrs_der, padding.PKCS1v15(), hash_alg)
            return f"RSA-PKCS1v15-{digest_alg.upper()}"
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, parsed.signed_attrs_der, ec.ECDSA(hash_alg))
            return f"ECDSA-{digest_alg.upper()}"
    except InvalidSignature:
        _fail(
            "tsa_signature_invalid",
            f"the CMS signature does not verify (over the signed attributes as received, "
            f"{digest_alg})",
        )
    except (UnsupportedAlgorithm, ValueError, TypeError) as e:
        _fail("tsa_signature_invalid", f"the CMS signature cannot be checked: {e}")
    _fail(
        "tsa_algorithm_unsupported",
        f"a {type(key).__name__.removesuffix('PublicKey').lstrip('_')} signing key is not "
        "accepted (RSA or ECDSA only)",
    )


def _check_ess(parsed: _Parsed, chain: Sequence[x509.Certificate]) -> str:
    """RFC 3161 section 2.4.1 / RFC 5816 / RFC 5035, evaluated as OpenSSL does.

    signingCertificate (ESSCertID, SHA-1) and signingCertificateV2 may both be
    present; each is checked on its own.  In each, the first certificate ID
    must name the signer (``chain[0]``) and any further ID another certificate
    of the validated chain; an issuerSerial, when present, must match too."""
    found = [("v1", attr) for attr in _attributes(parsed, "1.2.840.113549.1.9.16.2.12")] + [
        ("v2", attr) for attr in _attributes(parsed, "1.2.840.113549.1.9.16.2.47")
    ]
    if not found:
        _fail("tsa_signer_cert_mismatch", "the token has no ESS signingCertificate(V2) attribute")
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    described = []
    for version in ("v1", "v2"):
        attrs = [a for v, a in found if v == version]
        if not attrs:
            continue
        if len(attrs) != 1 or len(attrs[0]["values"]) != 1:
            _fail("tsa_signer_cert_mismatch", f"more than one ESS attribute ({version})")
        ids = attrs[0]["values"][0]["certs"]
        if len(ids) == 0:
            _fail("tsa_signer_cert_mismatch", "an ESS attribute names no certificate")
        hash_names = set()
        for index, cert_id in enumerate(ids):
            hash_name = "sha1" if version == "v1" else cert_id["hash_algorithm"]["algorithm"].native
            if hash_name not in _ESS_HASHES:
                _fail("tsa_algorithm_unsupported", f"ESS hash {hash_name} is not accepted")
            hash_names.add(hash_name)
            position = _ess_position(cert_id, hash_name, chain, ders)
            if position is None or (position == 0) != (index == 0):
                _fail(
                    "tsa_signer_cert_mismatch",
                    f"ESS signingCertificate{'V2' if version == 'v2' else ''} certificate ID "
                    f"#{index} does not name "
                    + ("the signer's certificate" if index == 0 else "a CA of the signer's chain"),
                )
        described.append(
            f"signingCertificate{'V2' if version == 'v2' else ''} ({', '.join(sorted(hash_names))})"
        )
    return " and ".join(described) + " names the signer"


def _ess_position(
    cert_id: Any, hash_name: str, chain: Sequence[x509.Certificate], ders: Sequence[bytes]
) -> int | None:
    """The first position in ``chain`` of the certificate ``cert_id`` names, or None."""
    expected = cert_id["cert_hash"].native
    for position, (cert, der) in enumerate(zip(chain, ders, strict=True)):
        digest = hashlib.new(hash_name, der, usedforsecurity=False).digest()
        if len(expected) != len(digest):
            _fail("tsa_signer_cert_mismatch", f"an ESS {hash_name} hash has the wrong length")
        if expected != digest:
            continue
        issuer_serial = cert_id["issuer_serial"]
        if not issuer_serial.contents:
            return position
        names = issuer_serial["issuer"]
        if (
            len(names) == 1
            and names[0].name == "directory_name"
            and _same_name(cert.issuer, names[0].chosen)
            and issuer_serial["serial_number"].native == cert.serial_number
        ):
            return position
    return None


def _check_eku(cert: x509.Certificate) -> None:
    """RFC 3161 section 2.3: exactly one critical EKU, id-kp-timeStamping only."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        _fail("tsa_eku_missing", "the TSA certificate has no extendedKeyUsage")
    except (ValueError, x509.DuplicateExtension) as e:
        _fail("tsa_eku_missing", f"the TSA certificate's extensions are invalid: {e}")
    if not ext.critical:
        _fail("tsa_eku_missing", "the TSA certificate's extendedKeyUsage is not critical")
    if list(ext.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        _fail(
            "tsa_eku_missing",
            "the TSA certificate's extendedKeyUsage is not exactly id-kp-timeStamping",
            eku=[o.dotted_string for o in ext.value],
        )


_NOT_FOR_TSA_KEY_USAGES = (
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


def _check_key_usage(cert: x509.Certificate) -> str:
    """A TSA certificate's keyUsage, if present, is digitalSignature and/or
    nonRepudiation only (OpenSSL's timestamp-signing purpose)."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "no keyUsage"
    except (ValueError, x509.DuplicateExtension) as e:
        _fail("tsa_key_usage_invalid", f"the TSA certificate's extensions are invalid: {e}")
    others = [name for name in _NOT_FOR_TSA_KEY_USAGES if getattr(ku, name)]
    if others or not (ku.digital_signature or ku.content_commitment):
        _fail(
            "tsa_key_usage_invalid",
            "the TSA certificate's keyUsage must be digitalSignature and/or nonRepudiation"
            + (f", not {', '.join(others)}" if others else ""),
        )
    allowed = [
        ("digitalSignature", ku.digital_signature),
        ("nonRepudiation", ku.content_commitment),
    ]
    return "keyUsage " + " and ".join(name for name, on in allowed if on)


def _ca_basic_constraints(
    policy: x509v.Policy, cert: x509.Certificate, ext: x509.BasicConstraints | None
) -> None:
    if ext is None or not ext.ca:
        raise ValueError("an issuing certificate must have basicConstraints cA=TRUE")


def _ca_key_usage(policy: x509v.Policy, cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
    if ext is not None and not ext.key_cert_sign:
        raise ValueError("an issuing certificate's keyUsage must allow keyCertSign")


def _check_chain(
    cert: x509.Certificate,
    embedded: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    at: dt.datetime,
) -> list[x509.Certificate]:
    """RFC 5280 path validation of ``cert`` at time ``at``, ending at a root of the bundle.

    Like OpenSSL without partial chains: the self-issued certificates of the
    trust bundle are the trust anchors; its other certificates (intermediates,
    the TSA certificate itself) and the token's only help build the path."""
    anchors = [c for c in trust_roots if c.subject == c.issuer]
    if not anchors:
        _fail("tsa_chain_untrusted", "the trust bundle holds no root (self-issued) certificate")
    ca_policy = (
        x509v.ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, x509v.Criticality.AGNOSTIC, _ca_basic_constraints)
        .may_be_present(x509.KeyUsage, x509v.Criticality.AGNOSTIC, _ca_key_usage)
    )
    try:
        verifier = (
            x509v.PolicyBuilder()
            .store(x509v.Store(anchors))
            .time(at.astimezone(dt.UTC))
            .max_chain_depth(MAX_CHAIN_DEPTH)
            .extension_policies(ca_policy=ca_policy, ee_policy=x509v.ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        untrusted = [c for c in trust_roots if c.subject != c.issuer] + list(embedded)
        intermediates = list({c.fingerprint(hashes.SHA256()): c for c in untrusted}.values())
        return list(verifier.verify(cert, [c for c in intermediates if c != cert]).chain)
    except x509v.VerificationError as e:
        _fail(
            "tsa_chain_untrusted",
            f"the TSA certificate does not chain to the trust bundle at genTime {_iso(at)}: {e}",
        )
    except (ValueError, TypeError) as e:
        _fail("tsa_chain_untrusted", f"the TSA certificate chain cannot be checked: {e}")


def _check_tsa_name(tsa_field: Any, signer: x509.Certificate) -> str:
    """RFC 3161 section 2.4.2: the TSTInfo's ``tsa`` names the signer, as its
    subject (a directoryName) or one of its subjectAltNames (OpenSSL's rule)."""
    text = _general_name_text(tsa_field)
    if tsa_field.name == "directory_name" and _same_name(signer.subject, tsa_field.chosen):
        return f"{text} (the signer's subject)"
    try:
        san = signer.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        alt_names = asn1_x509.GeneralNames.load(san.value.public_bytes())
    except x509.ExtensionNotFound:
        alt_names = []
    for alt in alt_names:
        if alt.name != tsa_field.name:
            continue
        if alt.name == "directory_name":
            same = bool(alt.chosen == tsa_field.chosen)
        else:  # the value's contents, byte for byte (OpenSSL's GENERAL_NAME_cmp)
            same = alt.chosen.contents == tsa_field.chosen.contents
        if same:
            return f"{text} (a subjectAltName of the signer)"
    _fail(
        "tsa_name_mismatch",
        f"TSTInfo names {text!r}, signed by {signer.subject.rfc4514_string()} "
        "(neither its subject nor a subjectAltName)",
    )


def verify_token(
    response_der: bytes,
    imprint: Imprint,
    *,
    nonce: int | None,
    trust_roots: Sequence[x509.Certificate],
    policy_oid: str | None = None,
    pinned_cert: x509.Certificate | None = None,
    now: int | float | dt.datetime | None = None,
) -> TokenReport:
    """Verify an RFC 3161 TimeStampResp (or bare TimeStampToken) offline.

    ``imprint`` is what the token must timestamp (its hash algorithm and
    value, stated explicitly: the rail's anchors imprint ``SHA-256(digest)``,
    general use imprints the data).  ``nonce`` is the request's nonce, or
    None to skip that check (the report says so).  ``trust_roots`` is the
    trust bundle: its self-issued certificates are the trust anchors, any
    other certificate in it (an intermediate, the TSA's own certificate for
    tokens that do not embed it) only helps build the chain, which is
    evaluated at the token's genTime.  ``now`` (epoch seconds or datetime,
    default the clock) only feeds ``cert_expired_now``.  Raises
    VerificationError with a ``tsa_*`` code (see :data:`ERROR_CODES`), and
    nothing else.
    """
    if not isinstance(imprint, Imprint):
        _fail("tsa_imprint_mismatch", "no valid imprint to compare with")
    checked_at = _as_datetime(now)
    stage = ["tsa_response_malformed"]  # the code for an unexpected error at each step
    try:
        return _verify_token(
            response_der,
            imprint,
            nonce=nonce,
            trust_roots=trust_roots,
            policy_oid=policy_oid,
            pinned_cert=pinned_cert,
            checked_at=checked_at,
            stage=stage,
        )
    except (VerificationError, MemoryError):
        raise
    except Exception as e:  # e.g. a corrupted key or curve in an embedded certificate
        _fail(stage[0], f"cannot check the token: {type(e).__name__}: {e}")


def _verify_token(
    response_der: bytes,
    imprint: Imprint,
    *,
    nonce: int | None,
    trust_roots: Sequence[x509.Certificate],
    policy_oid: str | None,
    pinned_cert: x509.Certificate | None,
    checked_at: dt.datetime,
    stage: list[str],
) -> TokenReport:
    parsed = parse_response(response_der)
    checks: list[Check] = []
    status_name = "granted" if parsed.status == 0 else "granted_with_mods"
    unreadable = (
        f", {parsed.unreadable_certificates} unreadable (ignored)"
        if parsed.unreadable_certificates
        else ""
    )
    checks.append(
        Check(
            "parse",
            f"{'TimeStampResp' if parsed.form == 'response' else 'TimeStampToken'}"
            f", status {status_name}, {len(parsed.certificates)} certificate(s) embedded"
            f"{unreadable}; TSTInfo and signed attributes DER-framed, verified as received",
        )
    )
    try:
        info = parsed.tst_info
        gen_time: dt.datetime = info["gen_time"].native
        serial: int = info["serial_number"].native
        policy: str = info["policy"].dotted
        token_alg: str = info["message_imprint"]["hash_algorithm"]["algorithm"].native
        token_hash: bytes = info["message_imprint"]["hashed_message"].native
        token_nonce: int | None = info["nonce"].native
        tsa_field = info["tsa"]
        accuracy = info["accuracy"]
        accuracy_seconds = (
            None
            if not accuracy.contents
            else float(accuracy["seconds"].native or 0)
            + (accuracy["millis"].native or 0) / 1e3
            + (accuracy["micros"].native or 0) / 1e6
        )
    except VerificationError:
        raise
    except Exception as e:
        _fail("tsa_response_malformed", f"cannot read the TSTInfo: {type(e).__name__}: {e}")
    if not isinstance(gen_time, dt.datetime) or gen_time.tzinfo is None:
        _fail("tsa_response_malformed", "genTime is not a UTC time")

    stage[0] = "tsa_signer_unknown"
    signer, source = _signer_certificate(
        parsed.signer_info, parsed.certificates, pinned_cert, trust_roots
    )
    stage[0] = "tsa_signature_invalid"
    algorithm = _verify_cms_signature(parsed, signer)
    checks.append(
        Check(
            "signature",
            f"CMS {algorithm} by {signer.subject.rfc4514_string()} (certificate from the "
            f"{source}); messageDigest matches the TSTInfo",
        )
    )
    stage[0] = "tsa_cert_not_pinned"
    signer_der = signer.public_bytes(serialization.Encoding.DER)
    if pinned_cert is not None:
        if pinned_cert.public_bytes(serialization.Encoding.DER) != signer_der:
            _fail(
                "tsa_cert_not_pinned",
                f"signed by {signer.subject.rfc4514_string()}, not by the pinned certificate",
            )
        checks.append(Check("pin", "signed by exactly the pinned TSA certificate"))
    stage[0] = "tsa_eku_missing"
    _check_eku(signer)
    stage[0] = "tsa_key_usage_invalid"
    key_usage = _check_key_usage(signer)
    checks.append(Check("eku", f"critical extendedKeyUsage: id-kp-timeStamping only; {key_usage}"))
    stage[0] = "tsa_chain_untrusted"
    chain = _check_chain(signer, parsed.certificates, trust_roots, gen_time)
    expired = [c for c in chain if c.not_valid_after_utc < checked_at]
    checks.append(
        Check(
            "chain",
            " -> ".join(c.subject.rfc4514_string() for c in chain)
            + f" (trust bundle); valid at genTime {_iso(gen_time)}",
        )
    )
    if expired:
        checks.append(
            Check(
                "expiry",
                f"{expired[0].subject.rfc4514_string()} expired "
                f"{_iso(expired[0].not_valid_after_utc)}, after genTime: the token stays valid",
            )
        )
    stage[0] = "tsa_signer_cert_mismatch"
    checks.append(Check("ess", _check_ess(parsed, chain)))
    stage[0] = "tsa_name_mismatch"
    tsa_name = None
    if tsa_field.contents:
        tsa_name = _general_name_text(tsa_field)
        checks.append(Check("tsa-name", _check_tsa_name(tsa_field, signer)))
    stage[0] = "tsa_imprint_mismatch"
    # (hash parameters other than absent or NULL fail the TSTInfo's parse: malformed)
    if token_alg != imprint.hash_algorithm or token_hash != imprint.hashed_message:
        _fail(
            "tsa_imprint_mismatch",
            f"the token timestamps {token_alg}:{token_hash.hex()}, "
            f"expected {imprint.hash_algorithm}:{imprint.hashed_message.hex()}",
        )
    checks.append(Check("imprint", f"{token_alg} {token_hash.hex()} matches"))
    if nonce is not None:
        if token_nonce != nonce:
            _fail(
                "tsa_nonce_mismatch",
                "the token's nonce is not the request's",
                expected=str(nonce),
                found=None if token_nonce is None else str(token_nonce),
            )
        checks.append(Check("nonce", f"{nonce} matches"))
    else:
        checks.append(Check("nonce", "not checked (no nonce given)"))
    if policy_oid is not None:
        if policy != policy_oid:
            _fail("tsa_policy_mismatch", f"issued under {policy}, expected {policy_oid}")
        checks.append(Check("policy", f"{policy} matches"))
    else:
        checks.append(Check("policy", f"{policy} (any policy accepted)"))
    anchor_cert = chain[-1]
    return TokenReport(
        form=parsed.form,
        status=status_name,
        gen_time=gen_time.astimezone(dt.UTC),
        serial_number=serial,
        policy=policy,
        imprint=imprint,
        nonce=token_nonce,
        nonce_checked=nonce is not None,
        tsa_name=tsa_name,
        accuracy_seconds=accuracy_seconds,
        signer_subject=signer.subject.rfc4514_string(),
        signer_issuer=signer.issuer.rfc4514_string(),
        signer_serial=signer.serial_number,
        signer_sha256=hashlib.sha256(signer_der).hexdigest(),
        signer_not_before=signer.not_valid_before_utc,
        signer_not_after=signer.not_valid_after_utc,
        chain=tuple(c.subject.rfc4514_string() for c in chain),
        trust_anchor_sha256=hashlib.sha256(
            anchor_cert.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
        valid_at_gen_time=True,
        cert_expired_now=bool(expired),
        checked_at=checked_at,
        verifier=verifier_description(trust_roots),
        checks=tuple(checks),
    )


def _general_name_text(general_name: Any) -> str:
    try:
        if general_name.name == "directory_name":
            return str(general_name.chosen.human_friendly)
        return f"{general_name.name}:{general_name.native}"
    except Exception:
        return general_name.name if isinstance(general_name.name, str) else "?"


# -- the request ----------------------------------------------------------------------


def build_request(imprint: Imprint, *, nonce: int, policy_oid: str | None = None) -> bytes:
    """A DER TimeStampReq (RFC 3161 section 2.4.1), certReq true."""
    req: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": imprint.hash_algorithm},
            "hashed_message": imprint.hashed_message,
        },
        "nonce": nonce,
        "cert_req": True,
    }
    if policy_oid is not None:
        req["req_policy"] = policy_oid
    return bytes(tsp.TimeStampReq(req).dump())


def new_nonce() -> int:
    """A random 64-bit nonce (RFC 3161 section 2.4.1), top bit set for a fixed size."""
    return secrets.randbits(63) | (1 << 63)


# -- the rail -------------------------------------------------------------------------


@dataclass
class Rfc3161Rail:
    """Anchors digests at one TSA: target ``rfc3161:<tsa name>``.

    Settings (``anchoring.rfc3161.<name>``): :class:`Rfc3161Settings`; ``url``
    is the TSA endpoint (without it the rail only verifies), ``trust_bundle``
    the PEM file of trusted root CAs, ``policy_oid`` is requested and
    required in tokens, ``pinned_cert`` the TSA's signing certificate (tokens
    must be signed by exactly it).
    """

    target: str
    url: str | None  # None: a verifier only (``remembrancer anchor verify --tsa-trust``)
    trust_roots: list[x509.Certificate]
    policy_oid: str | None = None
    pinned_cert: x509.Certificate | None = None
    timeout: float = 10.0
    nonce_source: Callable[[], int] = new_nonce  # seedable for deterministic simulations

    @classmethod
    def from_config(cls, target: str, settings: Rfc3161Settings | Mapping[str, Any]) -> Rfc3161Rail:
        scheme, _, name = target.partition(":")
        if scheme != "rfc3161" or not name:
            raise ConfigError(f"{target} is not an rfc3161:<name> target", code="rail_unknown")
        s = rail_settings(target, settings, Rfc3161Settings)
        trust_roots = load_trust_bundle(s.trust_bundle)
        pinned = load_certificate(s.pinned_cert) if s.pinned_cert is not None else None
        return cls(target, s.url, trust_roots, s.policy_oid, pinned, s.timeout)

    @property
    def verifier(self) -> str:
        return verifier_description(self.trust_roots)

    def _post(self, body: bytes) -> bytes:
        """POST a TimeStampReq; RailError classified for the scheduler's backoff."""
        if self.url is None:
            raise RailError(
                f"{self.target} has no url: it can verify anchors but not make them",
                code="rail_not_configured",
                error_class="validation",
            )
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                data: bytes = reply.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in (401, 403):
                raise RailError(
                    f"{self.target}: the TSA refused our credentials (HTTP {e.code})",
                    code="tsa_http_auth",
                    error_class="auth",
                    details={"http_status": e.code},
                ) from e
            transient = e.code >= 500 or e.code in (408, 425, 429)
            raise RailError(
                f"{self.target}: the TSA answered HTTP {e.code}",
                code="tsa_http_error",
                error_class="transient" if transient else "validation",
                details={"http_status": e.code},
            ) from e
        except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise RailError(
                f"{self.target}: cannot reach the TSA at {self.url}: {reason}",
                code="tsa_unreachable",
                error_class="transient",
            ) from e
        if len(data) > MAX_RESPONSE_BYTES:
            raise RailError(
                f"{self.target}: the TSA's answer is larger than {MAX_RESPONSE_BYTES} bytes",
                code="tsa_response_malformed",
                error_class="validation",
            )
        return data

    def submit(self, digest: bytes, *, now: int) -> Anchor:
        """Timestamp ``SHA-256(digest)``; the anchor comes back already ``verified``."""
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise RailError(
                "an anchored digest is 32 bytes",
                code="anchor_root_invalid",
                error_class="validation",
            )
        imprint = Imprint.for_digest(digest)
        nonce = self.nonce_source()
        response = self._post(build_request(imprint, nonce=nonce, policy_oid=self.policy_oid))
        try:
            report = self._verify(response, imprint, nonce, now)
        except VerificationError as e:
            raise RailError(
                f"{self.target}: {e.message}",
                code=e.code,
                error_class="validation",
                details={**e.details, "tsr": base64.b64encode(response).decode("ascii")},
            ) from e
        return Anchor(
            target=self.target,
            root=digest,
            status="verified",
            tx_ref=report.serial_hex,
            anchor_ts=report.gen_time_epoch,
            observed_at=now,
            verifier=report.verifier,
            finality=Finality(0, 0, "final"),
            evidence=self._evidence(response, nonce, report),
        )

    def _verify(self, response: bytes, imprint: Imprint, nonce: int, now: int) -> TokenReport:
        return verify_token(
            response,
            imprint,
            nonce=nonce,
            trust_roots=self.trust_roots,
            policy_oid=self.policy_oid,
            pinned_cert=self.pinned_cert,
            now=now,
        )

    def _evidence(self, response: bytes, nonce: int, report: TokenReport) -> dict[str, Any]:
        return {
            "type": "rfc3161",
            "tsr": base64.b64encode(response).decode("ascii"),
            "nonce": str(nonce),
            "imprint": {
                "hashAlgorithm": report.imprint.hash_algorithm,
                "hashedMessage": report.imprint.hashed_message.hex(),
            },
            "tsaName": report.tsa_name or report.signer_subject,
            "policy": report.policy,
            "serialNumber": report.serial_hex,
            "genTime": _iso(report.gen_time),
            "signerSha256": report.signer_sha256,
            "url": self.url,
        }

    def verify(self, anchor: Anchor, ctx: VerifyContext) -> Verdict:
        """Judge the stored TimeStampResp offline against this node's trust bundle.

        The imprint is recomputed from ``anchor.root``; the nonce comes from the
        evidence (it binds the response to our request, not to the root).  The
        verdict's facts are the token's serial number (``tx_ref``) and genTime
        (``anchor_ts``).  The anchor's own status, finality, txRef and anchor
        time are never read."""
        if anchor.target != self.target:
            return Verdict.unchecked(
                "tsa_target_mismatch", f"anchor for {anchor.target}, not {self.target}"
            )
        try:
            evidence = anchor.evidence
            tsr_text = evidence.get("tsr")
            nonce_text = evidence.get("nonce")
            if not isinstance(tsr_text, str) or not isinstance(nonce_text, str):
                raise VerificationError(
                    "the evidence lacks tsr or nonce", code="tsa_evidence_malformed"
                )
            try:
                response = base64.b64decode(tsr_text, validate=True)
                nonce = int(nonce_text, 10)
            except (binascii.Error, ValueError) as e:
                raise VerificationError(
                    f"the evidence is garbled: {e}", code="tsa_evidence_malformed"
                ) from e
            report = self._verify(response, Imprint.for_digest(anchor.root), nonce, ctx.now)
        except (VerificationError, ConfigError) as e:
            return Verdict.failed(e.code, e.message, self.verifier)
        return Verdict.ok(report.verifier, tx_ref=report.serial_hex,
                          anchor_ts=report.gen_time_epoch)  # fmt: skip
