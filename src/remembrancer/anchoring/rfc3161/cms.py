"""The CMS layer of a timestamp token: the signer, its signature, the ESS attributes.

The signer certificate is the one the SignerInfo's issuerAndSerialNumber
names (searched in the pin, the trust bundle, then the token, as ``openssl
ts -verify``); messageDigest is over the eContent octets as received and the
signature over the signed attributes as received (RFC 5652 sections 5.4,
5.6), RSA PKCS #1 v1.5 or ECDSA only; the ESS signingCertificate(V2)
attribute must name the signer first.  Pure: ``cryptography`` decides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from asn1crypto import x509 as asn1_x509  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from remembrancer.anchoring.rfc3161.model import ESS_HASHES, HASHES, OID_TST_INFO, refuse
from remembrancer.anchoring.rfc3161.parse import Parsed


def signer_certificate(
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
        if cert.serial_number == want["serial_number"].native and same_name(
            cert.issuer, want["issuer"]
        ):
            return cert, source
    refuse(
        "tsa_signer_unknown",
        "the signer's certificate is not in the token, the pin or the trust bundle",
    )


def same_name(name: x509.Name, asn1_name: Any) -> bool:
    try:
        der = name.public_bytes()
        if der == asn1_name.untag().dump():  # the same bytes: no need to normalise
            return True
        return bool(asn1_x509.Name.load(der) == asn1_name)
    except Exception:
        return False


def _attributes(parsed: Parsed, oid: str) -> list[Any]:
    return [a for a in parsed.signed_attrs if a["type"].dotted == oid]


def verify_cms_signature(parsed: Parsed, cert: x509.Certificate) -> str:
    """RFC 5652 sections 5.4 and 5.6, as OpenSSL's PKCS7_signatureVerify does it.

    messageDigest is over the eContent's octets as received; the signature is
    over the signed attributes as received (SET tag in place of [0]), hashed with
    the SignerInfo's digestAlgorithm; RSA keys sign with PKCS #1 v1.5, EC keys
    with ECDSA."""
    signer_info = parsed.signer_info
    digest_alg = signer_info["digest_algorithm"]["algorithm"].native
    if digest_alg not in HASHES:
        refuse("tsa_algorithm_unsupported", f"digest algorithm {digest_alg} is not accepted")
    content_types = _attributes(parsed, "1.2.840.113549.1.9.3")
    digests = _attributes(parsed, "1.2.840.113549.1.9.4")
    if (
        len(content_types) != 1
        or len(content_types[0]["values"]) != 1
        or content_types[0]["values"][0].dotted != OID_TST_INFO
    ):
        refuse("tsa_signature_invalid", "the signed contentType attribute is not id-ct-TSTInfo")
    if len(digests) != 1 or len(digests[0]["values"]) != 1:
        refuse("tsa_signature_invalid", "the signed attributes lack one messageDigest")
    h = hashes.Hash(HASHES[digest_alg]())
    h.update(parsed.tst_info_der)
    if digests[0]["values"][0].native != h.finalize():
        refuse("tsa_signature_invalid", "messageDigest does not match the TSTInfo")
    signature = signer_info["signature"].native
    label = signer_info["signature_algorithm"]["algorithm"].native
    if label in ("rsassa_pss", "ed25519", "ed448"):
        refuse(
            "tsa_algorithm_unsupported",
            f"signature algorithm {label} is not accepted (RFC 3161 verifiers such as "
            "OpenSSL's check PKCS #1 v1.5 and ECDSA signatures only)",
        )
    hash_alg = HASHES[digest_alg]()
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, parsed.signed_attrs_der, padding.PKCS1v15(), hash_alg)
            return f"RSA-PKCS1v15-{digest_alg.upper()}"
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, parsed.signed_attrs_der, ec.ECDSA(hash_alg))
            return f"ECDSA-{digest_alg.upper()}"
    except InvalidSignature:
        refuse(
            "tsa_signature_invalid",
            f"the CMS signature does not verify (over the signed attributes as received, "
            f"{digest_alg})",
        )
    except (UnsupportedAlgorithm, ValueError, TypeError) as e:
        refuse("tsa_signature_invalid", f"the CMS signature cannot be checked: {e}")
    refuse(
        "tsa_algorithm_unsupported",
        f"a {type(key).__name__.removesuffix('PublicKey').lstrip('_')} signing key is not "
        "accepted (RSA or ECDSA only)",
    )


def check_ess(parsed: Parsed, chain: Sequence[x509.Certificate]) -> str:
    """RFC 3161 section 2.4.1 / RFC 5816 / RFC 5035, evaluated as OpenSSL does.

    signingCertificate (ESSCertID, SHA-1) and signingCertificateV2 may both be
    present; each is checked on its own.  In each, the first certificate ID
    must name the signer (``chain[0]``) and any further ID another certificate
    of the validated chain; an issuerSerial, when present, must match too."""
    found = [("v1", attr) for attr in _attributes(parsed, "1.2.840.113549.1.9.16.2.12")] + [
        ("v2", attr) for attr in _attributes(parsed, "1.2.840.113549.1.9.16.2.47")
    ]
    if not found:
        refuse("tsa_signer_cert_mismatch", "the token has no ESS signingCertificate(V2) attribute")
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    described = []
    for version in ("v1", "v2"):
        attrs = [a for v, a in found if v == version]
        if not attrs:
            continue
        if len(attrs) != 1 or len(attrs[0]["values"]) != 1:
            refuse("tsa_signer_cert_mismatch", f"more than one ESS attribute ({version})")
        ids = attrs[0]["values"][0]["certs"]
        if len(ids) == 0:
            refuse("tsa_signer_cert_mismatch", "an ESS attribute names no certificate")
        hash_names = set()
        for index, cert_id in enumerate(ids):
            hash_name = "sha1" if version == "v1" else cert_id["hash_algorithm"]["algorithm"].native
            if hash_name not in ESS_HASHES:
                refuse("tsa_algorithm_unsupported", f"ESS hash {hash_name} is not accepted")
            hash_names.add(hash_name)
            position = _ess_position(cert_id, hash_name, chain, ders)
            if position is None or (position == 0) != (index == 0):
                refuse(
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
            refuse("tsa_signer_cert_mismatch", f"an ESS {hash_name} hash has the wrong length")
        if expected != digest:
            continue
        issuer_serial = cert_id["issuer_serial"]
        if not issuer_serial.contents:
            return position
        names = issuer_serial["issuer"]
        if (
            len(names) == 1
            and names[0].name == "directory_name"
            and same_name(cert.issuer, names[0].chosen)
            and issuer_serial["serial_number"].native == cert.serial_number
        ):
            return position
    return None
