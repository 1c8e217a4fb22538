"""Strict, bounded parsing of a ``TimeStampResp`` or a bare ``TimeStampToken``.

At most :data:`~remembrancer.anchoring.rfc3161.model.MAX_RESPONSE_BYTES`,
one BER element and no trailing byte, nesting and element counts capped
(:mod:`remembrancer.anchoring.rfc3161.ber`).  BER is accepted where no
signature reaches; the encapsulated TSTInfo and the signed attributes must
be framed as DER and are kept exactly as received (what the signature and
messageDigest cover).  Every failure is ``tsa_response_malformed`` (or
``tsa_status_rejected`` for a response that was not granted).  Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from asn1crypto import cms, tsp  # type: ignore[import-untyped]
from cryptography import x509

from remembrancer.anchoring.rfc3161 import ber
from remembrancer.anchoring.rfc3161.model import KNOWN_DIGESTS, MAX_RESPONSE_BYTES, refuse
from remembrancer.core.errors import VerificationError

MAX_EMBEDDED_CERTS = 32
MAX_SIGNED_ATTRS = 32

# The DER contents of the OBJECT IDENTIFIERs the structure is navigated by.
_OID_SIGNED_DATA_BYTES = bytes.fromhex("2a864886f70d010702")
_OID_TST_INFO_BYTES = bytes.fromhex("2a864886f70d0109100104")


@dataclass(frozen=True, slots=True)
class Parsed:
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
    refuse("tsa_response_malformed", message)


def _children(tlv: ber.Tlv, what: str, count: tuple[int, int]) -> tuple[ber.Tlv, ...]:
    if not tlv.constructed or not count[0] <= len(tlv.children) <= count[1]:
        _malformed(f"{what}: not the expected structure")
    return tlv.children


def parse_response(data: bytes) -> Parsed:
    """Parse a TimeStampResp or a bare TimeStampToken into its parts.

    BER is accepted where no signature reaches (indefinite lengths, a
    certificate SET OF in any order, as real TSAs send them); the two signed
    parts, the encapsulated TSTInfo and the signed attributes, must be framed
    as DER (definite, minimal lengths; RFC 5652 section 5.3, RFC 3161 section
    2.4.2) and are kept exactly as received.  Bounded: at most
    MAX_RESPONSE_BYTES, one element and no trailing byte, nesting and element
    counts capped (:mod:`remembrancer.anchoring.rfc3161.ber`).

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


def _parse(data: bytes, top: ber.Tlv) -> Parsed:
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
            refuse(
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
    if not si_fields[3].is_(2, 0):
        refuse("tsa_signature_invalid", "the SignerInfo has no signed attributes")
    if not si_fields[3].constructed:
        # OpenSSL's decoder lets this through; X.690 8.12.1 does not (a SET OF is
        # always constructed), and neither do we.
        _malformed("the signed attributes ([0] IMPLICIT SET OF) are marked primitive")
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
        if name not in KNOWN_DIGESTS:
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
    return Parsed(
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
