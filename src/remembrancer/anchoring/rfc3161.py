"""The RFC 3161 rail: anchor a digest with a Time-Stamp Authority (DESIGN.md 3.8).

Two layers, shaped like python-tuf's trust core and its I/O shell:

* :func:`verify_token` is pure (no I/O, no clock unless given one): it takes
  the DER bytes of a ``TimeStampResp`` (RFC 3161 section 2.4.2) or of a bare
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

Verification, in this order, each step with its own error code:

1. parse (size cap, strict DER: asn1crypto for the CMS layer and
   rfc3161-client's Rust parser as a gate) -> ``tsa_response_malformed``;
2. ``PKIStatus`` granted or grantedWithMods -> ``tsa_status_rejected``;
3. the signer certificate (from the token, the pin or the bundle) ->
   ``tsa_signer_unknown``; the CMS signature over the signed attributes, whose
   messageDigest must match the TSTInfo (RFC 5652 section 5.4) ->
   ``tsa_signature_invalid`` (``tsa_algorithm_unsupported`` for SHA-1 and
   unknown algorithms); the ESS signingCertificate(V2) attribute must name that
   certificate (RFC 3161 section 2.4.1, RFC 5816) -> ``tsa_signer_cert_mismatch``;
4. the pin -> ``tsa_cert_not_pinned``; the extendedKeyUsage must be critical
   and exactly id-kp-timeStamping (RFC 3161 section 2.3) -> ``tsa_eku_missing``;
5. the chain to the trust roots **as of genTime** -> ``tsa_chain_untrusted``;
6. the TSTInfo's ``tsa`` name, if present, must be the signer's subject ->
   ``tsa_name_mismatch``;
7. imprint, nonce, policy -> ``tsa_imprint_mismatch``, ``tsa_nonce_mismatch``,
   ``tsa_policy_mismatch``;
8. rfc3161-client's own ``Verifier`` over the same token (OpenSSL's
   PKCS7_verify with the chain checked at genTime, its EKU, nonce, policy and
   imprint checks) must agree.

Why genTime: a timestamp token proves that the data existed at genTime; it
stays valid after the TSA certificate expires (RFC 3161 section 4, and the
practice of long-term signature formats).  The report says the chain was valid
at genTime and whether a certificate in it has expired since
(``cert_expired_now``).

Who checks what.  rfc3161-client 1.0.x hands the TSTInfo's genTime to
OpenSSL's ``PKCS7_verify`` as the verification time, so it does judge the
chain as of genTime; it also checks a critical EKU *containing*
timeStamping, the nonce, the policy and the imprint value.  It does not
accept grantedWithMods (the status sits outside the signed token, so step 8
hands it the same token under status granted), check the ESS attribute, the
``tsa`` name, the imprint's hash algorithm or an EKU with extra purposes, and
its errors are one exception type.  Hence steps 1-7 are ours, each with its
own code, and the library is a second, independent opinion that must agree.
Step 5 is ``cryptography``'s RFC 5280 path validation with a fixed time
(``PolicyBuilder().time(genTime)``) and an extension policy written for TSAs
rather than the web PKI: the EKU is checked in step 4; an issuing certificate
must carry basicConstraints cA=TRUE and, if it has keyUsage, keyCertSign.  The
web PKI's algorithm rules still apply (no SHA-1 certificate signatures, RSA
keys of 2048 bits or more, no DSA), and the trust bundle must hold the root
(OpenSSL, in step 8, does not accept an intermediate as a trust anchor).
Revocation is not checked: no CRL or OCSP is fetched (offline verification).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
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

import rfc3161_client
from asn1crypto import cms, core, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import verification as x509v
from cryptography.x509.oid import ExtendedKeyUsageOID

from remembrancer.anchoring.base import RailError, Verdict, VerifyContext
from remembrancer.core.anchor import Anchor, Finality
from remembrancer.core.errors import ConfigError, VerificationError

MAX_RESPONSE_BYTES = 256 * 1024
QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"
MAX_CHAIN_DEPTH = 6

ERROR_CODES: dict[str, str] = {
    "tsa_response_malformed": "the bytes are not a well-formed DER TimeStampResp or TimeStampToken",
    "tsa_status_rejected": "the TSA did not grant the request (PKIStatus is not granted/grantedWithMods)",
    "tsa_signer_unknown": "no certificate for the token's signer is in the token, the pin or the trust bundle",
    "tsa_algorithm_unsupported": "the token uses a digest or signature algorithm this verifier refuses",
    "tsa_signature_invalid": "the CMS signature or its messageDigest does not verify",
    "tsa_signer_cert_mismatch": "the ESS signingCertificate attribute does not name the signing certificate",
    "tsa_cert_not_pinned": "the token is not signed by the pinned TSA certificate",
    "tsa_eku_missing": "the TSA certificate lacks a critical extendedKeyUsage of exactly id-kp-timeStamping",
    "tsa_chain_untrusted": "the TSA certificate does not chain to the trust bundle as of genTime",
    "tsa_name_mismatch": "the TSTInfo's tsa name is not the signing certificate's subject",
    "tsa_imprint_mismatch": "the token timestamps a different message imprint",
    "tsa_nonce_mismatch": "the token does not carry the nonce of the request",
    "tsa_policy_mismatch": "the token was issued under another TSA policy",
}

_HASH_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"


def _fail(code: str, message: str, **details: Any) -> NoReturn:
    raise VerificationError(message, code=code, details=details or None)


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
        f"remembrancer.rfc3161 (cryptography {_lib_version('cryptography')}, "
        f"rfc3161-client {_lib_version('rfc3161-client')}); chain as of genTime; "
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


@dataclass(frozen=True, slots=True)
class _Parsed:
    form: str
    status: int
    response_der: bytes  # the response (a bare token wrapped with status granted)
    token_der: bytes
    signed_data: Any  # asn1crypto.cms.SignedData
    tst_info: Any  # asn1crypto.tsp.TSTInfo
    tst_info_der: bytes
    certificates: tuple[x509.Certificate, ...]


def _der_header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes([tag, length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw


def _first_inner_tag(der: bytes) -> int:
    """The tag of the first element inside a DER SEQUENCE (no recursion)."""
    if len(der) < 2 or der[0] != 0x30:
        _fail("tsa_response_malformed", "not a DER SEQUENCE")
    n = der[1]
    off = 2 if n < 0x80 else 2 + (n & 0x7F)
    if off >= len(der):
        _fail("tsa_response_malformed", "truncated DER")
    return der[off]


class _TimeStampResp(core.Sequence):  # type: ignore[misc]
    """RFC 3161 section 2.4.2, with the token OPTIONAL as the RFC has it
    (asn1crypto's ``tsp.TimeStampResp`` requires it, so it cannot read a rejection)."""

    _fields = [  # noqa: RUF012  (asn1crypto's declarative spec)
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def parse_response(data: bytes) -> _Parsed:
    """Parse a DER TimeStampResp or TimeStampToken, strictly, into its parts.

    Raises VerificationError ``tsa_response_malformed`` or, for a response
    that is not granted, ``tsa_status_rejected``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        _fail("tsa_response_malformed", "the response must be bytes")
    data = bytes(data)
    if len(data) > MAX_RESPONSE_BYTES:
        _fail("tsa_response_malformed", f"larger than {MAX_RESPONSE_BYTES} bytes")
    # A TimeStampResp starts with PKIStatusInfo (a SEQUENCE); a token, a ContentInfo,
    # starts with its contentType (an OBJECT IDENTIFIER).
    first = _first_inner_tag(data)
    try:
        if first == 0x06:
            form, status = "token", 0
            token = cms.ContentInfo.load(data, strict=True)
            token_der = data
            granted = tsp.PKIStatusInfo({"status": 0}).dump()
            response_der = _der_header(0x30, len(granted) + len(data)) + granted + data
        elif first == 0x30:
            form = "response"
            resp = _TimeStampResp.load(data, strict=True)
            status_info = resp["status"]
            status = int(status_info["status"])
            if status not in (0, 1):
                status_text = [str(s) for s in (status_info["status_string"].native or [])]
                fail_info = status_info["fail_info"].native
                _fail(
                    "tsa_status_rejected",
                    f"the TSA answered {status_info['status'].native}"
                    + (f": {'; '.join(status_text)}" if status_text else ""),
                    status=status,
                    status_string=status_text,
                    fail_info=sorted(fail_info) if fail_info else [],
                )
            token = resp["time_stamp_token"]
            if isinstance(token, core.Void) or not token.contents:
                _fail("tsa_response_malformed", "a granted response without a timeStampToken")
            token_der = token.dump()
            granted = tsp.PKIStatusInfo({"status": 0}).dump()
            response_der = _der_header(0x30, len(granted) + len(token_der)) + granted + token_der
        else:
            _fail("tsa_response_malformed", "neither a TimeStampResp nor a TimeStampToken")
        if token["content_type"].dotted != _OID_SIGNED_DATA:
            _fail("tsa_response_malformed", "the token is not CMS SignedData")
        signed_data = token["content"]
        encap = signed_data["encap_content_info"]
        if encap["content_type"].dotted != _OID_TST_INFO:
            _fail("tsa_response_malformed", "the token does not encapsulate a TSTInfo")
        if not encap["content"].contents:
            _fail("tsa_response_malformed", "the token has no TSTInfo content")
        tst_info_der = bytes(encap["content"])
        tst_info = tsp.TSTInfo.load(tst_info_der, strict=True)
        tst_info.native  # noqa: B018  (force the lazy parser over every field)
        signed_data.native  # noqa: B018
        if tst_info["version"].native != "v1":
            _fail("tsa_response_malformed", "TSTInfo version must be 1")
        # RFC 5652 section 5.1: v3 when eContentType is not id-data.
        if signed_data["version"].native != "v3":
            _fail("tsa_response_malformed", "SignedData version must be 3")
        signer_infos = signed_data["signer_infos"]
        if len(signer_infos) != 1:
            _fail("tsa_response_malformed", f"expected one SignerInfo, got {len(signer_infos)}")
        # RFC 5652 section 5.3: v1 with issuerAndSerialNumber, v3 with subjectKeyIdentifier.
        expected_version = (
            "v1" if signer_infos[0]["sid"].name == "issuer_and_serial_number" else "v3"
        )
        if signer_infos[0]["version"].native != expected_version:
            _fail("tsa_response_malformed", "the SignerInfo version does not match its sid")
        listed = {a["algorithm"].dotted for a in signed_data["digest_algorithms"]}
        if signer_infos[0]["digest_algorithm"]["algorithm"].dotted not in listed:
            _fail("tsa_response_malformed", "digestAlgorithms lacks the signer's digest algorithm")
        certs: list[x509.Certificate] = []
        for choice in signed_data["certificates"] or []:
            if choice.name == "certificate":
                if choice.chosen["tbs_certificate"]["serial_number"].native <= 0:
                    _fail("tsa_response_malformed", "an embedded certificate has a serial <= 0")
                certs.append(x509.load_der_x509_certificate(choice.chosen.dump()))
    except VerificationError:
        raise
    except Exception as e:  # asn1crypto and cryptography raise several types on bad DER
        _fail("tsa_response_malformed", f"cannot parse: {type(e).__name__}: {e}")
    _gate_strict_der(data if form == "response" else response_der)
    return _Parsed(
        form, status, response_der, token_der, signed_data, tst_info, tst_info_der, tuple(certs)
    )


def _gate_strict_der(response_der: bytes) -> None:
    """rfc3161-client's Rust parser (strict DER) must accept what we parsed."""

    def read() -> None:
        r = rfc3161_client.decode_timestamp_response(response_der)
        info = r.tst_info
        _ = (info.gen_time, info.nonce, info.serial_number, info.policy)
        _ = info.message_imprint.message
        _ = (r.signed_data.certificates, r.signed_data.signer_infos)

    _library_call(read, "tsa_response_malformed")


def _library_call(fn: Callable[[], Any], code: str) -> Any:
    """Run an rfc3161-client call; any failure, even a Rust panic, becomes ``code``."""
    try:
        return fn()
    except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
        raise
    except BaseException as e:  # pyo3's PanicException derives from BaseException
        _fail(code, f"rfc3161-client: {type(e).__name__}: {e}")


# -- verification ---------------------------------------------------------------------


def _signer_certificate(
    signer_info: Any,
    embedded: Sequence[x509.Certificate],
    pinned: x509.Certificate | None,
    trust_roots: Sequence[x509.Certificate],
) -> tuple[x509.Certificate, str]:
    sid = signer_info["sid"]
    candidates = [(c, "token") for c in embedded]
    if pinned is not None:
        candidates.append((pinned, "pin"))
    candidates += [(c, "trust bundle") for c in trust_roots]
    for cert, source in candidates:
        if sid.name == "issuer_and_serial_number":
            want = sid.chosen
            if cert.serial_number == want["serial_number"].native and _same_name(
                cert.issuer, want["issuer"]
            ):
                return cert, source
        else:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == sid.chosen.native:
                return cert, source
    _fail(
        "tsa_signer_unknown",
        "the signer's certificate is not in the token, the pin or the trust bundle",
    )


def _same_name(name: x509.Name, asn1_name: Any) -> bool:
    try:
        der = name.public_bytes()
        if der == asn1_name.dump():
            return True
        return bool(asn1_x509.Name.load(der) == asn1_name)
    except Exception:
        return False


def _verify_cms_signature(signed_data: Any, tst_info_der: bytes, cert: x509.Certificate) -> str:
    """RFC 5652 section 5.4/5.6: messageDigest and the signature over signedAttrs."""
    signer_info = signed_data["signer_infos"][0]
    digest_alg = signer_info["digest_algorithm"]["algorithm"].native
    if digest_alg not in _HASHES:
        _fail("tsa_algorithm_unsupported", f"digest algorithm {digest_alg} is not accepted")
    attrs = signer_info["signed_attrs"]
    if not attrs.contents:
        _fail("tsa_signature_invalid", "the SignerInfo has no signed attributes")
    by_type: dict[str, list[Any]] = {}
    for attr in attrs:
        by_type.setdefault(attr["type"].dotted, []).append(attr)
    content_types = by_type.get("1.2.840.113549.1.9.3", [])
    digests = by_type.get("1.2.840.113549.1.9.4", [])
    if (
        len(content_types) != 1
        or len(content_types[0]["values"]) != 1
        or content_types[0]["values"][0].dotted != _OID_TST_INFO
    ):
        _fail("tsa_signature_invalid", "the signed contentType attribute is not id-ct-TSTInfo")
    if len(digests) != 1 or len(digests[0]["values"]) != 1:
        _fail("tsa_signature_invalid", "the signed attributes lack one messageDigest")
    h = hashes.Hash(_HASHES[digest_alg]())
    h.update(tst_info_der)
    if digests[0]["values"][0].native != h.finalize():
        _fail("tsa_signature_invalid", "messageDigest does not match the TSTInfo")
    # The signature covers the DER of the attributes with the universal SET OF tag
    # (0x31) in place of the [0] IMPLICIT tag they carry in the SignerInfo.
    signed_bytes = b"\x31" + attrs.dump()[1:]
    signature = signer_info["signature"].native
    sig_alg = signer_info["signature_algorithm"]
    algo = sig_alg.signature_algo
    key = cert.public_key()
    try:
        if algo == "ed25519":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                _fail("tsa_signature_invalid", "an Ed25519 signature needs an Ed25519 key")
            key.verify(signature, signed_bytes)
            return "Ed25519"
        try:
            hash_name = sig_alg.hash_algo
        except ValueError:  # rsaEncryption: the SignerInfo's digest algorithm applies
            hash_name = digest_alg
        if hash_name not in _HASHES:
            _fail("tsa_algorithm_unsupported", f"signature hash {hash_name} is not accepted")
        hash_alg = _HASHES[hash_name]()
        if algo == "ecdsa":
            if not isinstance(key, ec.EllipticCurvePublicKey):
                _fail("tsa_signature_invalid", "an ECDSA signature needs an EC key")
            key.verify(signature, signed_bytes, ec.ECDSA(hash_alg))
            return f"ECDSA-{hash_name.upper()}"
        if algo == "rsassa_pkcs1v15":
            if not isinstance(key, rsa.RSAPublicKey):
                _fail("tsa_signature_invalid", "an RSA signature needs an RSA key")
            key.verify(signature, signed_bytes, padding.PKCS1v15(), hash_alg)
            return f"RSA-PKCS1v15-{hash_name.upper()}"
        if algo == "rsassa_pss":
            if not isinstance(key, rsa.RSAPublicKey):
                _fail("tsa_signature_invalid", "an RSA-PSS signature needs an RSA key")
            params = sig_alg["parameters"]
            mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
            if mgf_hash not in _HASHES:
                _fail("tsa_algorithm_unsupported", f"PSS MGF1 hash {mgf_hash} is not accepted")
            pss = padding.PSS(
                mgf=padding.MGF1(_HASHES[mgf_hash]()), salt_length=params["salt_length"].native
            )
            key.verify(signature, signed_bytes, pss, hash_alg)
            return f"RSA-PSS-{hash_name.upper()}"
    except InvalidSignature:
        _fail("tsa_signature_invalid", "the CMS signature does not verify")
    except (UnsupportedAlgorithm, ValueError, TypeError, KeyError) as e:
        _fail("tsa_signature_invalid", f"the CMS signature cannot be checked: {e}")
    _fail("tsa_algorithm_unsupported", f"signature algorithm {algo} is not accepted")


def _check_ess(signed_data: Any, cert: x509.Certificate) -> str:
    """RFC 3161 section 2.4.1 / RFC 5816: the signed ESS attribute names the signer cert."""
    signer_info = signed_data["signer_infos"][0]
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    found: list[tuple[str, Any]] = []
    for attr in signer_info["signed_attrs"]:
        oid = attr["type"].dotted
        if oid == "1.2.840.113549.1.9.16.2.47":
            found += [("v2", sc) for sc in attr["values"]]
        elif oid == "1.2.840.113549.1.9.16.2.12":
            found += [("v1", sc) for sc in attr["values"]]
    if len(found) != 1:
        _fail(
            "tsa_signer_cert_mismatch",
            "the token needs exactly one ESS signingCertificate(V2) attribute",
        )
    version, sc = found[0]
    ids = sc["certs"]
    if len(ids) == 0:
        _fail("tsa_signer_cert_mismatch", "the ESS attribute names no certificate")
    first = ids[0]
    if version == "v2":
        hash_name = first["hash_algorithm"]["algorithm"].native
        if hash_name not in _HASHES:
            _fail("tsa_algorithm_unsupported", f"ESS hash {hash_name} is not accepted")
        expected = hashlib.new(hash_name, cert_der).digest()
    else:
        hash_name = "sha1"  # ESSCertID is SHA-1 by definition; it identifies, it does not sign
        expected = hashlib.sha1(cert_der, usedforsecurity=False).digest()
    if first["cert_hash"].native != expected:
        _fail("tsa_signer_cert_mismatch", "the ESS certificate hash is not the signer's")
    issuer_serial = first["issuer_serial"]
    if issuer_serial.contents and issuer_serial["serial_number"].native != cert.serial_number:
        _fail("tsa_signer_cert_mismatch", "the ESS issuerSerial is not the signer's")
    return f"signingCertificate{'V2' if version == 'v2' else ''} ({hash_name}) names the signer"


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
    """RFC 5280 path validation of ``cert`` to ``trust_roots`` at time ``at``."""
    if not trust_roots:
        _fail("tsa_chain_untrusted", "no trust roots were given")
    ca_policy = (
        x509v.ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, x509v.Criticality.AGNOSTIC, _ca_basic_constraints)
        .may_be_present(x509.KeyUsage, x509v.Criticality.AGNOSTIC, _ca_key_usage)
    )
    try:
        verifier = (
            x509v.PolicyBuilder()
            .store(x509v.Store(list(trust_roots)))
            .time(at.astimezone(dt.UTC))
            .max_chain_depth(MAX_CHAIN_DEPTH)
            .extension_policies(ca_policy=ca_policy, ee_policy=x509v.ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        intermediates = [c for c in embedded if c != cert]
        return list(verifier.verify(cert, intermediates).chain)
    except x509v.VerificationError as e:
        _fail(
            "tsa_chain_untrusted",
            f"the TSA certificate does not chain to the trust bundle at genTime {_iso(at)}: {e}",
        )
    except (ValueError, TypeError) as e:
        _fail("tsa_chain_untrusted", f"the TSA certificate chain cannot be checked: {e}")


def _check_with_rfc3161_client(
    parsed: _Parsed,
    imprint: Imprint,
    *,
    nonce: int | None,
    trust_roots: Sequence[x509.Certificate],
    policy_oid: str | None,
    signer: x509.Certificate,
) -> None:
    """rfc3161-client's Verifier must agree (a second, independent implementation)."""
    roots = list({c.public_bytes(serialization.Encoding.DER): c for c in trust_roots}.values())
    kwargs: dict[str, Any] = {"roots": roots}
    if not parsed.certificates:
        kwargs["tsa_certificate"] = signer
    if nonce is not None:
        kwargs["nonce"] = nonce
    if policy_oid is not None:
        kwargs["policy_id"] = x509.ObjectIdentifier(policy_oid)

    def run() -> None:
        resp = rfc3161_client.decode_timestamp_response(parsed.response_der)
        rfc3161_client.VerifierBuilder(**kwargs).build().verify(resp, imprint.hashed_message)

    try:
        run()
    except rfc3161_client.VerificationError as e:
        text = str(e)
        code = "tsa_chain_untrusted"
        for needle, mapped in (
            ("Nonce", "tsa_nonce_mismatch"),
            ("Policy", "tsa_policy_mismatch"),
            ("Mismatch between messages", "tsa_imprint_mismatch"),
            ("EKU", "tsa_eku_missing"),
            ("signature", "tsa_signature_invalid"),
        ):
            if needle in text:
                code = mapped
                break
        _fail(code, f"rfc3161-client refused the token: {text}")
    except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
        raise
    except BaseException as e:  # pyo3's PanicException derives from BaseException
        _fail("tsa_response_malformed", f"rfc3161-client: {type(e).__name__}: {e}")


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
    None to skip that check (the report says so).  ``trust_roots`` are the
    certificates the chain must reach; the chain is evaluated at the token's
    genTime.  ``now`` (epoch seconds or datetime, default the clock) only
    feeds ``cert_expired_now``.  Raises VerificationError with a ``tsa_*``
    code (see :data:`ERROR_CODES`), and nothing else.
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
    checks.append(
        Check(
            "parse",
            f"DER {'TimeStampResp' if parsed.form == 'response' else 'TimeStampToken'}"
            f", status {status_name}, {len(parsed.certificates)} certificate(s) embedded",
        )
    )
    try:
        signer_info = parsed.signed_data["signer_infos"][0]
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
    signer, source = _signer_certificate(signer_info, parsed.certificates, pinned_cert, trust_roots)
    stage[0] = "tsa_signature_invalid"
    algorithm = _verify_cms_signature(parsed.signed_data, parsed.tst_info_der, signer)
    checks.append(
        Check(
            "signature",
            f"CMS {algorithm} by {signer.subject.rfc4514_string()} (certificate from the "
            f"{source}); messageDigest matches the TSTInfo",
        )
    )
    stage[0] = "tsa_signer_cert_mismatch"
    checks.append(Check("ess", _check_ess(parsed.signed_data, signer)))
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
    checks.append(Check("eku", "critical extendedKeyUsage: id-kp-timeStamping only"))
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
    stage[0] = "tsa_name_mismatch"
    tsa_name = None
    if tsa_field.contents:
        tsa_name = _general_name_text(tsa_field)
        if tsa_field.name == "directory_name" and not _same_name(signer.subject, tsa_field.chosen):
            _fail(
                "tsa_name_mismatch",
                f"TSTInfo names {tsa_name!r}, signed by {signer.subject.rfc4514_string()}",
            )
        checks.append(Check("tsa-name", f"{tsa_name}"))
    stage[0] = "tsa_imprint_mismatch"
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
    stage[0] = "tsa_chain_untrusted"
    _check_with_rfc3161_client(
        parsed,
        imprint,
        nonce=nonce,
        trust_roots=trust_roots,
        policy_oid=policy_oid,
        signer=signer,
    )
    checks.append(
        Check(
            "rfc3161-client",
            f"rfc3161-client {_lib_version('rfc3161-client')} agrees "
            "(OpenSSL PKCS#7 signature and chain at genTime, EKU, nonce, policy, imprint)",
        )
    )
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

_SETTINGS = {"url", "trust_bundle", "policy_oid", "pinned_cert", "timeout", "base_dir"}


@dataclass
class Rfc3161Rail:
    """Anchors digests at one TSA: target ``rfc3161:<tsa name>``.

    Settings (``anchoring.rfc3161.<name>`` in the node config): ``url`` (the
    TSA endpoint; without it the rail only verifies), ``trust_bundle`` (PEM file of trusted root CAs), optional
    ``policy_oid`` (requested, and required in tokens), ``pinned_cert`` (PEM
    of the TSA's signing certificate: tokens must be signed by exactly it),
    ``timeout`` (seconds, default 10) and ``base_dir`` (relative paths resolve
    against it; the node passes its config directory).
    """

    target: str
    url: str | None  # None: a verifier only (``remembrancer anchor verify --tsa-trust``)
    trust_roots: list[x509.Certificate]
    policy_oid: str | None = None
    pinned_cert: x509.Certificate | None = None
    timeout: float = 10.0
    nonce_source: Callable[[], int] = new_nonce  # seedable for deterministic simulations

    @classmethod
    def from_config(cls, target: str, settings: Mapping[str, Any]) -> Rfc3161Rail:
        scheme, _, name = target.partition(":")
        if scheme != "rfc3161" or not name:
            raise ConfigError(f"{target} is not an rfc3161:<name> target", code="rail_unknown")
        if not isinstance(settings, Mapping):
            raise ConfigError(f"anchoring.{scheme}.{name} must be a mapping", code="config_invalid")
        unknown = sorted(set(settings) - _SETTINGS)
        if unknown:
            raise ConfigError(
                f"anchoring.rfc3161.{name}: unknown setting(s) {', '.join(unknown)}",
                code="config_invalid",
            )
        url = settings.get("url")
        if url is not None and (
            not isinstance(url, str) or not url.startswith(("http://", "https://"))
        ):
            raise ConfigError(
                f"anchoring.rfc3161.{name}.url must be an http(s) URL", code="config_invalid"
            )
        base = Path(str(settings.get("base_dir") or "."))

        def path(key: str) -> Path:
            value = settings.get(key)
            if not isinstance(value, str | os.PathLike) or not str(value):
                raise ConfigError(
                    f"anchoring.rfc3161.{name}.{key} must be a file path", code="config_invalid"
                )
            return base / Path(value).expanduser()

        if "trust_bundle" not in settings:
            raise ConfigError(
                f"anchoring.rfc3161.{name}.trust_bundle is required", code="config_invalid"
            )
        trust_roots = load_trust_bundle(path("trust_bundle"))
        pinned = load_certificate(path("pinned_cert")) if settings.get("pinned_cert") else None
        policy = settings.get("policy_oid")
        if policy is not None:
            try:
                x509.ObjectIdentifier(str(policy))
            except ValueError as e:
                raise ConfigError(
                    f"anchoring.rfc3161.{name}.policy_oid is not an OID", code="config_invalid"
                ) from e
            policy = str(policy)
        timeout = settings.get("timeout", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(
                f"anchoring.rfc3161.{name}.timeout must be a positive number",
                code="config_invalid",
            )
        return cls(target, url, trust_roots, policy, pinned, float(timeout))

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
