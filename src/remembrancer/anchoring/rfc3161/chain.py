"""The TSA certificate and its chain: trust bundles, EKU, key usage, the path as of genTime.

The EKU must be critical and exactly id-kp-timeStamping (RFC 3161 section
2.3); keyUsage only digitalSignature and/or nonRepudiation; the path is
``cryptography``'s RFC 5280 validation at genTime with a policy written for
TSAs (issuers cA=TRUE and keyCertSign, unknown critical extensions
refused).  Trust anchors are the self-issued certificates of the bundle.
Pure except the loaders of trust bundles and pinned certificates (one
bounded file read each).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asn1crypto import x509 as asn1_x509  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import verification as x509v
from cryptography.x509.oid import ExtendedKeyUsageOID

from remembrancer.anchoring.rfc3161.cms import same_name
from remembrancer.anchoring.rfc3161.model import iso_utc, refuse
from remembrancer.core.errors import ConfigError

MAX_CHAIN_DEPTH = 6


@functools.cache
def _lib_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed with us
        return "unknown"


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


def check_eku(cert: x509.Certificate) -> None:
    """RFC 3161 section 2.3: exactly one critical EKU, id-kp-timeStamping only."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        refuse("tsa_eku_missing", "the TSA certificate has no extendedKeyUsage")
    except (ValueError, x509.DuplicateExtension) as e:
        refuse("tsa_eku_missing", f"the TSA certificate's extensions are invalid: {e}")
    if not ext.critical:
        refuse("tsa_eku_missing", "the TSA certificate's extendedKeyUsage is not critical")
    if list(ext.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        refuse(
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


def check_key_usage(cert: x509.Certificate) -> str:
    """A TSA certificate's keyUsage, if present, is digitalSignature and/or
    nonRepudiation only (OpenSSL's timestamp-signing purpose)."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "no keyUsage"
    except (ValueError, x509.DuplicateExtension) as e:
        refuse("tsa_key_usage_invalid", f"the TSA certificate's extensions are invalid: {e}")
    others = [name for name in _NOT_FOR_TSA_KEY_USAGES if getattr(ku, name)]
    if others or not (ku.digital_signature or ku.content_commitment):
        refuse(
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


def check_chain(
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
        refuse("tsa_chain_untrusted", "the trust bundle holds no root (self-issued) certificate")
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
        refuse(
            "tsa_chain_untrusted",
            f"the TSA certificate does not chain to the trust bundle at genTime {iso_utc(at)}: {e}",
        )
    except (ValueError, TypeError) as e:
        refuse("tsa_chain_untrusted", f"the TSA certificate chain cannot be checked: {e}")


def check_tsa_name(tsa_field: Any, signer: x509.Certificate) -> str:
    """RFC 3161 section 2.4.2: the TSTInfo's ``tsa`` names the signer, as its
    subject (a directoryName) or one of its subjectAltNames (OpenSSL's rule)."""
    text = general_name_text(tsa_field)
    if tsa_field.name == "directory_name" and same_name(signer.subject, tsa_field.chosen):
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
    refuse(
        "tsa_name_mismatch",
        f"TSTInfo names {text!r}, signed by {signer.subject.rfc4514_string()} "
        "(neither its subject nor a subjectAltName)",
    )


def general_name_text(general_name: Any) -> str:
    try:
        if general_name.name == "directory_name":
            return str(general_name.chosen.human_friendly)
        return f"{general_name.name}:{general_name.native}"
    except Exception:
        return general_name.name if isinstance(general_name.name, str) else "?"
