"""Claim evidence (``remembrancer.evidence/v1``): a signed anchor claim that is false on its face.

:class:`ClaimEvidence` is the reporter-signed object; :func:`verify_claim_evidence`
re-derives the finding from the message the accused signed, with the
verifier's own rails (the rules are in the package docstring): the
reporter's signature makes a report accountable, never true.
:func:`open_signed_message` checks a federation message's sender signature.
Pure: rails and message openers are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from remembrancer.core.aggregation import AGGREGATE_ANCHOR_TYPE, AggregateAnchor
from remembrancer.core.anchor import Anchor, checkpoint_digest, covers
from remembrancer.core.encoding import b64url_decode, b64url_encode, decode_base64, encode_base64
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.jcs import canonicalize, loads_strict, sha256_hex
from remembrancer.core.keys import PublicKey, SigningKey, public_from_did_key
from remembrancer.core.note import Note
from remembrancer.federation.evidence.equivocation import incident_ref
from remembrancer.federation.receipts import (
    Countersignature,
    FederationReceipt,
    verify_countersignature,
)
from remembrancer.federation.registry.model import Registry

__all__ = [
    "CLAIM_EVIDENCE_TYPE",
    "MAX_CLAIM_EVIDENCE_BYTES",
    "MAX_MESSAGE_BYTES",
    "ClaimEvidence",
    "ClaimReport",
    "open_signed_message",
    "verify_claim_evidence",
]


CLAIM_EVIDENCE_TYPE: Final = "remembrancer.evidence/v1"
MAX_CLAIM_EVIDENCE_BYTES: Final = 512 * 1024
MAX_MESSAGE_BYTES: Final = 256 * 1024
MAX_POINTER_CHARS: Final = 1024

ClaimKind: TypeAlias = Literal["forged_countersignature", "invalid_anchor_claim"]
Finding: TypeAlias = Literal["signature_invalid", "root_mismatch", "rail_failed"]
_FINDINGS: Final[dict[str, tuple[str, ...]]] = {
    "forged_countersignature": ("signature_invalid",),
    "invalid_anchor_claim": ("root_mismatch", "rail_failed"),
}


def open_signed_message(data: bytes, sender_key: PublicKey) -> dict[str, Any]:
    """Parse a federation message and check its sender's signature.

    The message is a JSON object whose ``signature`` is the unpadded
    base64url Ed25519 signature, by the sender's key, of the RFC 8785 form of
    the object without ``signature`` (DESIGN 3.10).  FormatError
    ``message_malformed``; VerificationError ``message_signature_invalid``.
    """
    try:
        value = loads_strict(data, max_bytes=MAX_MESSAGE_BYTES)
    except FormatError as e:
        raise FormatError(f"the message is not JSON: {e.message}", code="message_malformed") from e
    if not isinstance(value, dict) or not isinstance(value.get("signature"), str):
        raise FormatError("a message is a JSON object with a signature", code="message_malformed")
    try:
        sig = b64url_decode(value["signature"], what="signature")
    except FormatError as e:
        raise FormatError(e.message, code="message_malformed") from e
    body = {k: v for k, v in value.items() if k != "signature"}
    if not sender_key.verify(canonicalize(body), sig):
        raise VerificationError(
            "the message's signature does not verify under the sender's key",
            code="message_signature_invalid",
            details={"key": sender_key.did},
        )
    return value


MessageOpener: TypeAlias = Callable[[bytes, PublicKey], Mapping[str, Any]]
AnchorReverifier: TypeAlias = Callable[[Anchor], Anchor]


def _resolve_pointer(doc: Any, pointer: str) -> Any:
    """RFC 6901: the value at ``pointer`` in ``doc`` (FormatError ``evidence_pointer_invalid``)."""
    if pointer == "":
        return doc
    if not pointer.startswith("/"):
        raise FormatError("a JSON pointer is empty or starts with '/'",
                          code="evidence_pointer_invalid")  # fmt: skip
    value = doc
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            if token not in value:
                raise FormatError(f"no member {token!r}", code="evidence_pointer_invalid")
            value = value[token]
        elif isinstance(value, list):
            if not re.fullmatch(r"0|[1-9][0-9]{0,8}", token) or int(token) >= len(value):
                raise FormatError(f"no element {token!r}", code="evidence_pointer_invalid")
            value = value[int(token)]
        else:
            raise FormatError(f"cannot descend into a scalar at {token!r}",
                              code="evidence_pointer_invalid")  # fmt: skip
    return value


_CLAIM_FIELDS: Final = frozenset(
    {"type", "kind", "federation_id", "accused", "message", "receipt_at", "countersigner",
     "finding", "reporter", "reported_at", "signature"}
)  # fmt: skip


def _did_key(value: object, what: str) -> PublicKey:
    if not isinstance(value, str):
        raise FormatError(f"{what} is a did:key", code="evidence_malformed")
    try:
        return public_from_did_key(value)
    except FormatError as e:
        raise FormatError(f"{what}: {e.message}", code="evidence_malformed") from e


@dataclass(frozen=True, slots=True)
class ClaimEvidence:
    """A reporter-signed ``remembrancer.evidence/v1`` object (see the module docstring)."""

    kind: ClaimKind
    federation_id: str
    accused: str
    message: bytes
    receipt_at: str
    countersigner: str
    finding: Finding
    reporter: str
    reported_at: int
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in _FINDINGS:
            raise FormatError(f"unknown evidence kind {self.kind!r}", code="evidence_malformed")
        if not isinstance(self.finding, str) or self.finding not in _FINDINGS[self.kind]:
            raise FormatError(
                f"{self.kind} evidence has finding {' or '.join(_FINDINGS[self.kind])}",
                code="evidence_malformed",
            )
        if not isinstance(self.federation_id, str) or not 1 <= len(self.federation_id) <= 63:
            raise FormatError("federation_id is a string", code="evidence_malformed")
        _did_key(self.accused, "accused")
        _did_key(self.reporter, "reporter")
        if not isinstance(self.message, bytes) or not 0 < len(self.message) <= MAX_MESSAGE_BYTES:
            raise FormatError(
                f"message is 1 to {MAX_MESSAGE_BYTES} bytes", code="evidence_malformed"
            )
        if (
            not isinstance(self.receipt_at, str)
            or len(self.receipt_at) > MAX_POINTER_CHARS
            or (self.receipt_at and not self.receipt_at.startswith("/"))
        ):
            raise FormatError("receipt_at is an RFC 6901 JSON pointer", code="evidence_malformed")
        if not isinstance(self.countersigner, str) or not 1 <= len(self.countersigner) <= 512:
            raise FormatError("countersigner is a DID", code="evidence_malformed")
        if self.kind == "invalid_anchor_claim" and self.countersigner != self.accused:
            raise FormatError(
                "an invalid anchor claim is the accused's own countersignature",
                code="evidence_malformed",
            )
        if type(self.reported_at) is not int or not 0 <= self.reported_at < 2**53:
            raise FormatError("reported_at is POSIX seconds", code="evidence_malformed")
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise FormatError("signature is 64 bytes", code="evidence_malformed")

    def _body(self) -> dict[str, Any]:
        return {
            "type": CLAIM_EVIDENCE_TYPE,
            "kind": self.kind,
            "federation_id": self.federation_id,
            "accused": self.accused,
            "message": encode_base64(self.message),
            "receipt_at": self.receipt_at,
            "countersigner": self.countersigner,
            "finding": self.finding,
            "reporter": self.reporter,
            "reported_at": self.reported_at,
        }

    def signing_input(self) -> bytes:
        """RFC 8785 form of the object without ``signature``: what the reporter signs."""
        return canonicalize(self._body())

    def to_dict(self) -> dict[str, Any]:
        return {**self._body(), "signature": b64url_encode(self.signature)}

    def to_bytes(self) -> bytes:
        """The canonical (RFC 8785) bytes of the whole object."""
        return canonicalize(self.to_dict())

    @classmethod
    def create(
        cls,
        *,
        kind: ClaimKind,
        federation_id: str,
        accused: str,
        message: bytes,
        receipt_at: str,
        countersigner: str,
        finding: Finding,
        reporter_key: SigningKey,
        reported_at: int,
    ) -> ClaimEvidence:
        """Build evidence and sign it with the reporter's key."""
        unsigned = cls(kind, federation_id, accused, message, receipt_at, countersigner,
                       finding, reporter_key.did, reported_at, bytes(64))  # fmt: skip
        sig = reporter_key.sign(unsigned.signing_input())
        return cls(kind, federation_id, accused, message, receipt_at, countersigner,
                   finding, reporter_key.did, reported_at, sig)  # fmt: skip

    @classmethod
    def parse(cls, data: bytes) -> ClaimEvidence:
        """Parse evidence JSON strictly (any formatting; exact field set and types).

        FormatError codes: ``evidence_too_large``, ``evidence_malformed``.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FormatError("evidence is bytes", code="evidence_malformed")
        data = bytes(data)
        if len(data) > MAX_CLAIM_EVIDENCE_BYTES:
            raise FormatError(
                f"evidence is at most {MAX_CLAIM_EVIDENCE_BYTES} bytes", code="evidence_too_large"
            )
        try:
            d = loads_strict(data, max_bytes=MAX_CLAIM_EVIDENCE_BYTES)
        except FormatError as e:
            raise FormatError(
                f"evidence is not JSON: {e.message}", code="evidence_malformed"
            ) from e
        if not isinstance(d, dict) or set(d) != _CLAIM_FIELDS:
            raise FormatError(
                f"evidence has exactly the fields {', '.join(sorted(_CLAIM_FIELDS))}",
                code="evidence_malformed",
            )
        if d["type"] != CLAIM_EVIDENCE_TYPE:
            raise FormatError(f"type must be {CLAIM_EVIDENCE_TYPE}", code="evidence_malformed")
        if not isinstance(d["message"], str):
            raise FormatError("message is base64", code="evidence_malformed")
        message = decode_base64(d["message"], what="message", code="evidence_malformed")
        try:
            signature = b64url_decode(d["signature"], what="signature")
        except FormatError as e:
            raise FormatError(e.message, code="evidence_malformed") from e
        return cls(
            kind=d["kind"],
            federation_id=d["federation_id"],
            accused=d["accused"],
            message=message,
            receipt_at=d["receipt_at"],
            countersigner=d["countersigner"],
            finding=d["finding"],
            reporter=d["reporter"],
            reported_at=d["reported_at"],
            signature=signature,
        )

    @property
    def evidence_ref(self) -> str:
        """``sha256:<hex>`` of :meth:`to_bytes`."""
        return sha256_hex(self.to_bytes())


@dataclass(frozen=True, slots=True)
class ClaimReport:
    """What verified claim evidence proves against ``accused`` (its registry DID)."""

    kind: str
    finding: str
    federation_id: str
    accused: str
    accused_key: str
    countersigner: str
    reporter: str
    reported_at: int
    evidence_ref: str
    incident: str
    detail: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "finding": self.finding,
            "federation_id": self.federation_id,
            "accused": self.accused,
            "accused_key": self.accused_key,
            "countersigner": self.countersigner,
            "reporter": self.reporter,
            "reported_at": self.reported_at,
            "evidence_ref": self.evidence_ref,
            "incident": self.incident,
            "detail": dict(self.detail),
        }


def _claim_error(message: str, code: str, **details: Any) -> VerificationError:
    return VerificationError(message, code=code, details=details)


def _receipt_at(value: Any, pointer: str, federation_id: str) -> FederationReceipt:
    try:
        receipt = FederationReceipt.from_dict(_resolve_pointer(value, pointer))
    except FormatError as e:
        raise _claim_error(
            f"there is no federation receipt at {pointer!r}: {e.message}",
            "evidence_claim_malformed",
            cause=e.code,
        ) from e
    if receipt.federation_id != federation_id:
        raise _claim_error(
            f"the receipt is for federation {receipt.federation_id}",
            "evidence_federation_mismatch",
        )
    return receipt


def _signer_key(node: str, registry: Registry) -> PublicKey | None:
    if node.startswith("did:key:"):
        try:
            return public_from_did_key(node)
        except FormatError:
            return None
    peer = registry.get(node)
    return peer.pubkey if peer else None


def verify_claim_evidence(
    evidence: ClaimEvidence,
    registry: Registry,
    *,
    open_message: MessageOpener = open_signed_message,
    reverify: AnchorReverifier | None = None,
) -> ClaimReport:
    """Re-check invalid-anchor-claim evidence (``forged_countersignature`` never
    verifies: ``evidence_not_attributable``).

    ``registry`` maps keys to peers (the accused must be one);
    ``open_message`` checks a federation message's sender signature (the
    protocol's own, by default :func:`open_signed_message`); ``reverify``
    re-verifies an anchor with this node's rails (needed for ``rail_failed``
    only) and returns it with its new status.

    VerificationError codes: ``evidence_report_signature_invalid``,
    ``evidence_federation_mismatch``, ``evidence_accused_unknown``,
    ``evidence_message_unsigned`` (details ``cause``),
    ``evidence_not_attributable`` (a ``forged_countersignature`` report; the
    message is an ``evidence`` message; its sender is someone else; the
    accused's countersignature is not valid; an aggregate claim not made as
    the receipt of the accused's own ``receipt`` message),
    ``evidence_claim_malformed``, ``evidence_claim_not_found``,
    ``evidence_rail_unavailable``,
    ``evidence_not_misbehaviour`` (the claim checks out: nothing is proven).
    Errors raised by ``reverify`` propagate.
    """
    reporter_key = public_from_did_key(evidence.reporter)
    if not reporter_key.verify(evidence.signing_input(), evidence.signature):
        raise _claim_error("the reporter's signature does not verify",
                           "evidence_report_signature_invalid")  # fmt: skip
    if evidence.federation_id != registry.federation_id:
        raise _claim_error(
            f"the evidence is for federation {evidence.federation_id}, not {registry.federation_id}",
            "evidence_federation_mismatch",
        )
    accused_key = public_from_did_key(evidence.accused)
    accused = registry.peer_by_key(accused_key)
    if accused is None:
        raise _claim_error(
            f"{evidence.accused} is not a peer of {registry.federation_id}",
            "evidence_accused_unknown",
        )
    if evidence.kind != "invalid_anchor_claim":
        raise _claim_error(
            "a countersignature that does not verify is nobody's statement, and carrying one"
            " is a relay: it proves nothing about the accused",
            "evidence_not_attributable",
        )
    detail: dict[str, Any] = {"receipt_at": evidence.receipt_at}
    incident = _verify_anchor_claim(
        evidence, registry, accused_key, accused.did, open_message, reverify, detail
    )
    return ClaimReport(
        kind=evidence.kind,
        finding=evidence.finding,
        federation_id=evidence.federation_id,
        accused=accused.did,
        accused_key=accused.key_did,
        countersigner=evidence.countersigner,
        reporter=evidence.reporter,
        reported_at=evidence.reported_at,
        evidence_ref=evidence.evidence_ref,
        incident=incident,
        detail=detail,
    )


def _verify_anchor_claim(
    evidence: ClaimEvidence,
    registry: Registry,
    accused_key: PublicKey,
    accused_did: str,
    open_message: MessageOpener,
    reverify: AnchorReverifier | None,
    detail: dict[str, Any],
) -> str:
    try:
        value = loads_strict(evidence.message, max_bytes=MAX_MESSAGE_BYTES)
    except FormatError as e:
        raise _claim_error(f"the message is not JSON: {e.message}", "evidence_claim_malformed",
                           cause=e.code) from e  # fmt: skip
    if isinstance(value, dict) and value.get("type") == "evidence":
        raise _claim_error("evidence messages carry others' offences; they are not claims",
                           "evidence_not_attributable")  # fmt: skip
    try:
        claimed = _resolve_pointer(value, evidence.receipt_at)
    except FormatError:
        claimed = None
    if isinstance(claimed, dict) and claimed.get("type") == AGGREGATE_ANCHOR_TYPE:
        return _verify_aggregate_claim(
            evidence, registry, accused_key, accused_did, open_message, reverify, detail
        )
    receipt = _receipt_at(value, evidence.receipt_at, evidence.federation_id)
    own: list[Countersignature] = [
        cs for cs in receipt.signatures if _signer_key(cs.node, registry) == accused_key
    ]
    if not own:
        raise _claim_error("the accused did not countersign this receipt",
                           "evidence_claim_not_found")  # fmt: skip
    if not any(verify_countersignature(receipt, cs, accused_key) for cs in own):
        raise _claim_error(
            "the accused's countersignature does not verify, so the claim is not theirs",
            "evidence_not_attributable",
        )
    anchor = receipt.anchor
    detail.update(receipt=receipt.id, target=anchor.target, tx_ref=anchor.tx_ref)
    if evidence.finding == "root_mismatch":
        try:
            body = Note.from_bytes(receipt.checkpoint).text.encode("utf-8")
        except FormatError as e:
            raise _claim_error("the receipt's checkpoint is not a note",
                               "evidence_claim_malformed", cause=e.code) from e  # fmt: skip
        digest = checkpoint_digest(body)
        if covers(anchor, digest):
            raise _claim_error("the anchor covers the checkpoint's digest",
                               "evidence_not_misbehaviour")  # fmt: skip
        detail.update(anchored_root="sha256:" + anchor.root.hex(),
                      checkpoint_digest="sha256:" + digest.hex())  # fmt: skip
    else:
        _rail_failed(anchor, reverify, detail)
    return incident_ref(
        "invalid_anchor_claim",
        canonicalize(receipt.statement()),
        accused_key.did.encode("utf-8"),
        b"",
    )


def _rail_failed(anchor: Anchor, reverify: AnchorReverifier | None, detail: dict[str, Any]) -> None:
    """The ``rail_failed`` finding: claimed verified, failed on this node's rail."""
    if reverify is None:
        raise _claim_error("a rail_failed finding needs this node's rails to re-check",
                           "evidence_rail_unavailable")  # fmt: skip
    if anchor.status != "verified":
        raise _claim_error(f"the claim says the anchor is {anchor.status}, not verified",
                           "evidence_not_misbehaviour")  # fmt: skip
    checked = reverify(anchor)
    if checked.status != "failed":
        raise _claim_error(
            f"this node's rail finds the anchor {checked.status}, not failed",
            "evidence_not_misbehaviour",
        )
    detail.update(rail_verifier=checked.verifier, rail_error=checked.error)


def _verify_aggregate_claim(
    evidence: ClaimEvidence,
    registry: Registry,
    accused_key: PublicKey,
    accused_did: str,
    open_message: MessageOpener,
    reverify: AnchorReverifier | None,
    detail: dict[str, Any],
) -> str:
    """A coordinator's signed ``remembrancer.aggregate-anchor/v1`` claim that is false."""
    try:
        message = open_message(evidence.message, accused_key)
    except (VerificationError, FormatError) as e:
        raise _claim_error(f"the message is not signed by the accused: {e.message}",
                           "evidence_message_unsigned", cause=e.code) from e  # fmt: skip
    if message.get("federation_id") != evidence.federation_id:
        raise _claim_error("the message is for another federation", "evidence_federation_mismatch")
    sender = message.get("sender")
    peer = registry.get(sender) if isinstance(sender, str) else None
    if peer is None or peer.did != accused_did:
        raise _claim_error("the message's sender is not the accused", "evidence_not_attributable")
    if message.get("type") != "receipt" or evidence.receipt_at != "/content/receipt":
        # Anything else the accused signed around the claim (a bundle, say) is a relay.
        raise _claim_error("a coordinator claims an aggregate only as the receipt of a receipt"
                           " message", "evidence_not_attributable")  # fmt: skip
    try:
        claim = AggregateAnchor.from_dict(_resolve_pointer(message, evidence.receipt_at))
    except FormatError as e:
        raise _claim_error(f"there is no aggregate anchor at {evidence.receipt_at!r}: {e.message}",
                           "evidence_claim_malformed", cause=e.code) from e  # fmt: skip
    if claim.federation_id != evidence.federation_id:
        raise _claim_error(f"the claim is for federation {claim.federation_id}",
                           "evidence_federation_mismatch")  # fmt: skip
    named = registry.get(claim.coordinator)
    if named is None or named.did != accused_did:
        raise _claim_error("the claim names another coordinator", "evidence_not_attributable")
    anchor = claim.anchor
    detail.update(aggregate_origin=claim.origin, aggregate_size=claim.size,
                  target=anchor.target, tx_ref=anchor.tx_ref, epoch=claim.epoch)  # fmt: skip
    if evidence.finding == "root_mismatch":
        if claim.consistent():
            raise _claim_error("the aggregation path leads from the checkpoint to the root",
                               "evidence_not_misbehaviour")  # fmt: skip
        detail.update(anchored_root="sha256:" + anchor.root.hex(),
                      checkpoint_digest="sha256:" + claim.checkpoint.hex())  # fmt: skip
    else:
        _rail_failed(anchor, reverify, detail)
    return incident_ref(
        "invalid_anchor_claim",
        canonicalize(claim.to_dict()),
        accused_key.did.encode("utf-8"),
        b"aggregate",
    )
