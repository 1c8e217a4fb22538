"""Federation messages (docs/spec/federation.md): the signed envelope, its
content types, and the receiver's acceptance checks.

A message is one JSON object with exactly the members ``type``,
``federation_id``, ``sender``, ``seq``, ``timestamp``, ``content`` and
``signature``.  Its wire form is the RFC 8785 canonical form of that object
(nothing else is accepted), and ``signature`` is the unpadded base64url
Ed25519 signature, by the sender's registered key, of the canonical form of
the object without ``signature`` (the *signing input*).

This module is pure: bytes and values in, values or typed errors out.  It
reads no clock (``now`` is a parameter) and does no I/O.  Replay state and
rate limits sit behind two small interfaces (:class:`ReplayState`,
:class:`RateLimiter`) so the node can keep them in its store.

:meth:`MessageVerifier.verify` makes the checks of the spec's section
"Receiving" in its order, each failure one error with one code:

========================  =========================================  =======
code                      error class                                status
========================  =========================================  =======
``oversize``              :class:`FormatError`                       413
``malformed``             :class:`FormatError`                       400
``federation_mismatch``   :class:`PolicyError`                       421
``unknown_sender``        :class:`PolicyError`                       404
``stale``                 :class:`PolicyError`                       422
``replayed``              :class:`ConflictError`                     409
``signature_invalid``     :class:`VerificationError`                 401
``peer_suspended``        :class:`PolicyError`                       410
``role_not_allowed``      :class:`PolicyError`                       403
``rate_limited``          :class:`PushbackError` (``retry_after``)   429
========================  =========================================  =======

(The HTTP statuses are applied by :mod:`remembrancer.federation.transport`.)

Cost: for small messages the checks around the Ed25519 verification (parse,
canonical-form check, grammar, bookkeeping) take about a third of the time of
the verification itself; ``bench/federation.py`` measures the ratio (goal:
at least 0.7 of PyNaCl's single-core verify rate).  The canonical-form check
has a fast path on the standard library's C JSON codec (see
:func:`_decode_canonical`) and falls back to :mod:`remembrancer.core.jcs`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, Protocol, TypeAlias, cast

from remembrancer.core.cadence import TARGET_RE
from remembrancer.core.errors import (
    ConflictError,
    FormatError,
    PolicyError,
    PushbackError,
    VerificationError,
)
from remembrancer.core.jcs import canonicalize, loads_strict, parse_canonical
from remembrancer.core.keys import PublicKey
from remembrancer.core.note import check_note_text
from remembrancer.federation.receipts import TYPE as FEDERATION_RECEIPT_TYPE
from remembrancer.federation.receipts import Countersignature, FederationReceipt

__all__ = [
    "ALLOWED_ROLES",
    "DEFAULT_BURST",
    "DEFAULT_RATE",
    "DEFAULT_SKEW",
    "MAX_LIST_ITEMS",
    "MAX_MESSAGE_BYTES",
    "MAX_SEQ",
    "MESSAGE_TYPES",
    "PEER_STATUSES",
    "ROLES",
    "AnchorContent",
    "BundleContent",
    "CheckpointContent",
    "Content",
    "CountersignContent",
    "EvidenceContent",
    "HeartbeatContent",
    "KnownPeer",
    "LogSummary",
    "MemoryReplayState",
    "Message",
    "MessageSigner",
    "MessageVerifier",
    "PeerInfo",
    "RateLimiter",
    "ReceiptContent",
    "ReplayState",
    "ReplayWindow",
    "RequestContent",
    "SeqCounter",
    "XnsContent",
]

MAX_MESSAGE_BYTES: Final = 256 * 1024
"""Largest accepted message body, in bytes (262,144)."""
DEFAULT_SKEW: Final = 120
"""Default timestamp window: a message is fresh if ``|timestamp - now| <= 120`` seconds."""
DEFAULT_RATE: Final = 20.0
"""Default per-sender rate limit: messages per second ..."""
DEFAULT_BURST: Final = 100
"""... and burst (for a :class:`RateLimiter` such as ``node.ratelimit.TokenBuckets``)."""
MAX_SEQ: Final = 2**53 - 1
MAX_LIST_ITEMS: Final = 1024
MAX_DID_CHARS: Final = 512
MAX_ORIGIN_CHARS: Final = 255

MessageType: TypeAlias = Literal[
    "heartbeat",
    "checkpoint",
    "anchor",
    "countersign",
    "receipt",
    "evidence",
    "request",
    "bundle",
    "xns",
]
MESSAGE_TYPES: Final[tuple[MessageType, ...]] = (
    "heartbeat",
    "checkpoint",
    "anchor",
    "countersign",
    "receipt",
    "evidence",
    "request",
    "bundle",
    "xns",
)
Role: TypeAlias = Literal["witness", "anchor", "countersign", "relay", "coordinator"]
ROLES: Final[frozenset[str]] = frozenset(
    {"witness", "anchor", "countersign", "relay", "coordinator"}
)
PeerStatus: TypeAlias = Literal["active", "probation", "suspended"]
PEER_STATUSES: Final[frozenset[str]] = frozenset({"active", "probation", "suspended"})

ALLOWED_ROLES: Final[Mapping[str, frozenset[str] | None]] = {
    "heartbeat": None,
    "checkpoint": None,
    "anchor": frozenset({"anchor", "coordinator"}),
    "countersign": frozenset({"countersign"}),
    "receipt": frozenset({"anchor", "coordinator"}),
    "evidence": None,
    "request": None,
    "bundle": None,
    "xns": frozenset({"relay"}),
}
"""Which peer roles may send each type; ``None``: every registered peer."""

EVIDENCE_KINDS: Final = frozenset(
    {"equivocation", "forged_countersignature", "invalid_anchor_claim"}
)
WANTS: Final = ("receipts", "anchors")
COUNTERSIGNATURE_ROLES: Final = frozenset({"anchor", "witness"})  # as in federation receipts

_FEDERATION_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# W3C DID syntax without DID URL parts (the registry's grammar); <= 512 characters.
_DID_RE: Final = re.compile(r"did:[a-z0-9]+:(?:[A-Za-z0-9._-]|%[0-9A-Fa-f]{2}|:)*[A-Za-z0-9._-]")
_RECEIPT_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,512}")
_NAMESPACE_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}:[a-z0-9][a-z0-9-]{0,62}")
_HASH_RE: Final = re.compile(r"sha256:[0-9a-f]{64}")
_SIG_RE: Final = re.compile(r"[A-Za-z0-9_-]{85}[AQgw]")  # 64 bytes: 4 zero padding bits
_RECEIPT_TYPE_RE: Final = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}/v[0-9]{1,4}")
_ENVELOPE: Final = frozenset(
    {"type", "federation_id", "sender", "seq", "timestamp", "content", "signature"}
)
_SIG_MEMBER: Final = b',"signature":"'
_URL_TO_STD: Final = bytes.maketrans(b"-_", b"+/")


# --------------------------------------------------------------------------
# Small strict checks (every failure is FormatError "malformed")
# --------------------------------------------------------------------------


def _malformed(where: str, message: str) -> FormatError:
    return FormatError(f"{where} {message}", code="malformed", details={"field": where})


def _object(
    value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if type(value) is not dict:
        raise _malformed(where, "must be a JSON object")
    for k in required:
        if k not in value:
            raise _malformed(f"{where}.{k}", "is missing")
    if len(value) != len(required):
        extra = [k for k in value if k not in required and k not in optional]
        if extra:
            raise _malformed(f"{where}.{sorted(extra)[0]}", "is not a known field")
    return value


def _int(value: Any, where: str, low: int = 0, high: int = MAX_SEQ) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _malformed(where, f"must be an integer from {low} to {high}")
    return value


def _match(value: Any, pattern: re.Pattern[str], where: str, what: str) -> str:
    if type(value) is not str or pattern.fullmatch(value) is None:
        raise _malformed(where, f"must be {what}")
    return value


def _namespace(value: Any, where: str) -> str:
    return _match(value, _NAMESPACE_RE, where, "a namespace <org>:<name>")


def _hash(value: Any, where: str) -> str:
    return _match(value, _HASH_RE, where, "sha256:<64 lowercase hex>")


def _did(value: Any, where: str) -> str:
    if type(value) is not str or len(value) > MAX_DID_CHARS or _DID_RE.fullmatch(value) is None:
        raise _malformed(where, f"must be a DID of at most {MAX_DID_CHARS} characters")
    return value


# A signed-note key name (core.note.is_valid_key_name): no '+', no Unicode white
# space, no control characters, no lone surrogates; at most 255 characters here.
_ORIGIN_RE: Final = re.compile(
    r"[^+\x00-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ud800-\udfff]{1,255}"
)


def _origin(value: Any, where: str) -> str:
    if type(value) is not str or _ORIGIN_RE.fullmatch(value) is None:
        raise _malformed(where, "must be a log origin (a signed-note key name, <= 255 chars)")
    return value


def _text(value: Any, where: str) -> str:
    if type(value) is not str or not value:
        raise _malformed(where, "must be a non-empty string")
    return value


def _note(value: Any, where: str) -> str:
    try:
        return check_note_text(value)
    except FormatError as e:
        raise _malformed(where, f"must be signed-note text: {e.message}") from e


def _list(value: Any, where: str, *, max_items: int = MAX_LIST_ITEMS) -> list[Any]:
    if type(value) is not list or len(value) > max_items:
        raise _malformed(where, f"must be a list of at most {max_items} items")
    return value


def _json_objects(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    items = _list(value, where)
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise _malformed(f"{where}[{i}]", "must be a JSON object")
    return tuple(items)


def _typed_object(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _malformed(where, "must be a JSON object")
    _match(value.get("type"), _RECEIPT_TYPE_RE, f"{where}.type", "a type like name/v1")
    return value


def _sig(value: Any, where: str) -> bytes:
    _match(value, _SIG_RE, where, "the unpadded base64url of a 64-byte Ed25519 signature")
    return binascii.a2b_base64(value.encode("ascii").translate(_URL_TO_STD) + b"==")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------
# Content types
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogSummary:
    """One log's state in a heartbeat: ``{origin, size, root}``."""

    origin: str
    size: int
    root: str  # sha256:<hex>

    @classmethod
    def from_json(cls, value: Any, where: str = "logs[]") -> LogSummary:
        _object(value, where, ("origin", "size", "root"))
        return cls(
            _origin(value["origin"], f"{where}.origin"),
            _int(value["size"], f"{where}.size"),
            _hash(value["root"], f"{where}.root"),
        )

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "size": self.size, "root": self.root}


@dataclass(frozen=True, slots=True)
class HeartbeatContent:
    """``heartbeat``: the sender is alive and its logs are at these states."""

    TYPE: ClassVar[MessageType] = "heartbeat"
    logs: tuple[LogSummary, ...] = ()

    @classmethod
    def from_json(cls, value: Any) -> HeartbeatContent:
        _object(value, "content", ("logs",))
        items = _list(value["logs"], "content.logs")
        logs = tuple(LogSummary.from_json(v, f"content.logs[{i}]") for i, v in enumerate(items))
        if len({s.origin for s in logs}) != len(logs):
            raise _malformed("content.logs", "must not list an origin twice")
        return cls(logs)

    def to_json(self) -> dict[str, Any]:
        return {"logs": [s.to_json() for s in self.logs]}


@dataclass(frozen=True, slots=True)
class CheckpointContent:
    """``checkpoint``: a signed checkpoint note (log signature, maybe cosignatures).

    With ``namespace``, ``target`` and ``epoch`` (all three or none) it is a
    member's checkpoint for the coordinator of a collaborative anchor of
    ``target`` in ``epoch`` (:mod:`remembrancer.federation.collaborative`);
    without them, gossip."""

    TYPE: ClassVar[MessageType] = "checkpoint"
    origin: str
    note: str
    namespace: str | None = None
    target: str | None = None
    epoch: int | None = None

    def __post_init__(self) -> None:
        given = (self.namespace is not None, self.target is not None, self.epoch is not None)
        if any(given) and not all(given):
            raise _malformed("content", "has namespace, target and epoch together or none")

    @property
    def for_aggregation(self) -> bool:
        return self.target is not None

    @classmethod
    def from_json(cls, value: Any) -> CheckpointContent:
        _object(value, "content", ("origin", "note"), ("namespace", "target", "epoch"))
        origin = _origin(value["origin"], "content.origin")
        note = _note(value["note"], "content.note")
        if not note.startswith(origin + "\n"):
            raise _malformed("content.note", "must start with the origin line")
        namespace = target = epoch = None
        if "namespace" in value or "target" in value or "epoch" in value:
            for k in ("namespace", "target", "epoch"):
                if k not in value:
                    raise _malformed(
                        f"content.{k}", "is missing (namespace, target, epoch go together)"
                    )
            namespace = _namespace(value["namespace"], "content.namespace")
            target = _match(value["target"], TARGET_RE, "content.target",
                            "an anchor target <scheme>:<name>")  # fmt: skip
            epoch = _int(value["epoch"], "content.epoch")
        return cls(origin, note, namespace, target, epoch)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"origin": self.origin, "note": self.note}
        if self.target is not None:
            out.update(namespace=self.namespace, target=self.target, epoch=self.epoch)
        return out


@dataclass(frozen=True, slots=True)
class AnchorContent:
    """``anchor``: a federation receipt proposal (``remembrancer.federation-receipt/v1``,
    see :mod:`remembrancer.federation.receipts`) for the peers to re-verify and countersign.

    ``receipt`` is the JSON object as sent (treat it as read-only); see
    :meth:`federation_receipt`.
    """

    TYPE: ClassVar[MessageType] = "anchor"
    namespace: str
    receipt: dict[str, Any]

    @classmethod
    def from_json(cls, value: Any) -> AnchorContent:
        _object(value, "content", ("namespace", "receipt"))
        namespace = _namespace(value["namespace"], "content.namespace")
        receipt = _typed_object(value["receipt"], "content.receipt")
        if receipt["type"] != FEDERATION_RECEIPT_TYPE:
            raise _malformed("content.receipt.type", f"must be {FEDERATION_RECEIPT_TYPE!r}")
        if receipt.get("namespace") != namespace:
            raise _malformed("content.receipt.namespace", "must be content.namespace")
        return cls(namespace, receipt)

    def federation_receipt(self) -> FederationReceipt:
        """The receipt, parsed (FormatError ``receipt_malformed`` if it does not parse)."""
        return FederationReceipt.from_dict(self.receipt)

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "receipt": self.receipt}


@dataclass(frozen=True, slots=True)
class CountersignContent:
    """``countersign``: the sender re-verified the receipt ``receipt_id`` (the
    :attr:`FederationReceipt.id` of an ``anchor`` proposal) and countersigned it.

    ``signature`` is a :class:`~remembrancer.federation.receipts.Countersignature`
    over the receipt's statement, ready to go into the receipt's ``signatures``.
    """

    TYPE: ClassVar[MessageType] = "countersign"
    namespace: str
    receipt_id: str
    signature: Countersignature

    @classmethod
    def from_json(cls, value: Any) -> CountersignContent:
        _object(value, "content", ("namespace", "receipt_id", "signature"))
        namespace = _namespace(value["namespace"], "content.namespace")
        receipt_id = _match(
            value["receipt_id"], _RECEIPT_ID_RE, "content.receipt_id", "a receipt id"
        )
        sig = value["signature"]
        where = "content.signature"
        _object(sig, where, ("node", "role", "timestamp", "sig"))
        role = sig["role"]  # the type first: a list or an object is not hashable
        if not isinstance(sig["role"], str) or role not in COUNTERSIGNATURE_ROLES:
            raise _malformed(f"{where}.role", 'must be "anchor" or "witness"')
        signature = Countersignature(
            _did(sig["node"], f"{where}.node"),
            role,
            _int(sig["timestamp"], f"{where}.timestamp"),
            _sig(sig["sig"], f"{where}.sig"),
        )
        return cls(namespace, receipt_id, signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "receipt_id": self.receipt_id,
            "signature": self.signature.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class ReceiptContent:
    """``receipt``: a finished receipt (federation receipt, or a member's
    aggregate anchor receipt), a JSON object with a ``type`` like ``name/v1``."""

    TYPE: ClassVar[MessageType] = "receipt"
    namespace: str
    receipt: dict[str, Any]

    @classmethod
    def from_json(cls, value: Any) -> ReceiptContent:
        _object(value, "content", ("namespace", "receipt"))
        return cls(
            _namespace(value["namespace"], "content.namespace"),
            _typed_object(value["receipt"], "content.receipt"),
        )

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "receipt": self.receipt}


@dataclass(frozen=True, slots=True)
class EvidenceContent:
    """``evidence``: a self-contained, offline-verifiable evidence file."""

    TYPE: ClassVar[MessageType] = "evidence"
    kind: str  # equivocation | invalid_countersignature | invalid_anchor
    subject: str  # the DID or origin accused
    file: str

    @classmethod
    def from_json(cls, value: Any) -> EvidenceContent:
        _object(value, "content", ("kind", "subject", "file"))
        kind = value["kind"]
        if not isinstance(kind, str) or kind not in EVIDENCE_KINDS:
            raise _malformed("content.kind", "must be " + " | ".join(sorted(EVIDENCE_KINDS)))
        return cls(
            kind,
            _origin(value["subject"], "content.subject"),
            _text(value["file"], "content.file"),
        )

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "file": self.file}


@dataclass(frozen=True, slots=True)
class RequestContent:
    """``request``: ask for the receipts and anchors of a namespace in a time range."""

    TYPE: ClassVar[MessageType] = "request"
    namespace: str
    from_ts: int | None = None
    to_ts: int | None = None
    want: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, value: Any) -> RequestContent:
        _object(value, "content", ("namespace",), ("fromTs", "toTs", "want"))
        from_ts = _int(value["fromTs"], "content.fromTs") if "fromTs" in value else None
        to_ts = _int(value["toTs"], "content.toTs") if "toTs" in value else None
        if from_ts is not None and to_ts is not None and from_ts > to_ts:
            raise _malformed("content.fromTs", "must not be after toTs")
        want: tuple[str, ...] | None = None
        if "want" in value:
            items = _list(value["want"], "content.want", max_items=len(WANTS))
            if not items or any(w not in WANTS for w in items) or len(set(items)) != len(items):
                raise _malformed("content.want", 'must list "receipts" and/or "anchors" once')
            want = tuple(items)
        return cls(_namespace(value["namespace"], "content.namespace"), from_ts, to_ts, want)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"namespace": self.namespace}
        if self.from_ts is not None:
            out["fromTs"] = self.from_ts
        if self.to_ts is not None:
            out["toTs"] = self.to_ts
        if self.want is not None:
            out["want"] = list(self.want)
        return out


@dataclass(frozen=True, slots=True)
class BundleContent:
    """``bundle``: receipts and anchors of a namespace, e.g. the answer to a request."""

    TYPE: ClassVar[MessageType] = "bundle"
    namespace: str
    receipts: tuple[dict[str, Any], ...] = ()
    anchors: tuple[dict[str, Any], ...] = ()
    in_reply_to: int | None = None  # the seq of the request answered

    @classmethod
    def from_json(cls, value: Any) -> BundleContent:
        _object(value, "content", ("namespace", "receipts", "anchors"), ("in_reply_to",))
        reply = value.get("in_reply_to")
        return cls(
            _namespace(value["namespace"], "content.namespace"),
            _json_objects(value["receipts"], "content.receipts"),
            _json_objects(value["anchors"], "content.anchors"),
            None if reply is None else _int(reply, "content.in_reply_to", 1),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "namespace": self.namespace,
            "receipts": list(self.receipts),
            "anchors": list(self.anchors),
        }
        if self.in_reply_to is not None:
            out["in_reply_to"] = self.in_reply_to
        return out


@dataclass(frozen=True, slots=True)
class XnsContent:
    """``xns``: a ``namespace.message@1.0.0`` record admitted in ``source``,
    with the tlog-proof of its inclusion, for delivery into ``target``."""

    TYPE: ClassVar[MessageType] = "xns"
    source: str
    target: str
    record: dict[str, Any]
    proof: str

    @classmethod
    def from_json(cls, value: Any) -> XnsContent:
        _object(value, "content", ("source", "target", "record", "proof"))
        source = _namespace(value["source"], "content.source")
        target = _namespace(value["target"], "content.target")
        if source == target:
            raise _malformed("content.target", "must differ from the source")
        record = value["record"]
        if type(record) is not dict or record.get("namespace") != source:
            raise _malformed("content.record", "must be a record object of the source namespace")
        return cls(source, target, record, _text(value["proof"], "content.proof"))

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "record": self.record,
            "proof": self.proof,
        }


Content: TypeAlias = (
    HeartbeatContent
    | CheckpointContent
    | AnchorContent
    | CountersignContent
    | ReceiptContent
    | EvidenceContent
    | RequestContent
    | BundleContent
    | XnsContent
)
_CONTENT: Final[dict[str, Any]] = {
    c.TYPE: c.from_json
    for c in (
        HeartbeatContent,
        CheckpointContent,
        AnchorContent,
        CountersignContent,
        ReceiptContent,
        EvidenceContent,
        RequestContent,
        BundleContent,
        XnsContent,
    )
}


# --------------------------------------------------------------------------
# Canonical decoding
# --------------------------------------------------------------------------


def _decode_canonical(data: bytes, max_bytes: int) -> dict[str, Any]:
    """Parse ``data`` and require it to be the RFC 8785 form of what it holds.

    Fast path: :func:`remembrancer.core.jcs.parse_canonical` (byte equality
    with the standard library's re-encoding, for text where that is RFC
    8785).  Anything else takes the strict parser and :func:`canonicalize`;
    both refuse what RFC 8785 cannot represent (``NaN``, ``Infinity``,
    inexact integers, lone surrogates, duplicate keys).
    """
    value = parse_canonical(data)
    if value is not None:
        if type(value) is not dict:
            raise FormatError("a message is a JSON object", code="malformed")
        return cast(dict[str, Any], value)
    value = loads_strict(data, max_bytes=max_bytes)
    if type(value) is not dict:
        raise FormatError("a message is a JSON object", code="malformed")
    if canonicalize(value) != data:
        raise FormatError(
            "the body is not the RFC 8785 canonical form of the message", code="malformed"
        )
    return cast(dict[str, Any], value)


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------


class MessageSigner(Protocol):
    """What signing needs: a ``did`` and ``sign(bytes) -> 64 bytes`` (e.g. core.keys.SigningKey)."""

    @property
    def did(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed, well-formed federation message (signature not yet checked).

    ``raw`` is the exact wire form (RFC 8785 canonical JSON) and
    ``signing_input`` the canonical form without ``signature``.
    """

    type: MessageType
    federation_id: str
    sender: str
    seq: int
    timestamp: int
    content: Content
    signature: bytes
    raw: bytes = field(repr=False)
    signing_input: bytes = field(repr=False)

    # -- making -------------------------------------------------------------------

    @classmethod
    def sign(
        cls,
        key: MessageSigner,
        content: Content,
        *,
        federation_id: str,
        seq: int,
        timestamp: int,
        sender: str | None = None,
        max_bytes: int = MAX_MESSAGE_BYTES,
    ) -> Message:
        """Sign ``content`` as ``sender`` (default ``key.did``; use the DID the
        registry lists for this key).  The result is re-parsed, so a message
        that receivers would refuse as malformed or oversize is never made."""
        body: dict[str, Any] = {
            "type": content.TYPE,
            "federation_id": federation_id,
            "sender": key.did if sender is None else sender,
            "seq": seq,
            "timestamp": timestamp,
            "content": content.to_json(),
        }
        signing_input = canonicalize(body)
        body["signature"] = _b64url(key.sign(signing_input))
        raw = canonicalize(body)
        if len(raw) > max_bytes:
            raise FormatError(
                f"the message is {len(raw)} bytes, over the {max_bytes}-byte limit",
                code="oversize",
                details={"size": len(raw), "limit": max_bytes},
            )
        return cls.parse(raw, max_bytes=max_bytes)

    # -- codec ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The wire form: RFC 8785 canonical JSON."""
        return self.raw

    @classmethod
    def parse(cls, data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
        """Parse the wire form strictly.

        Raises FormatError ``oversize`` (more than ``max_bytes``) or
        ``malformed`` (anything else: not canonical JSON, wrong or extra
        members, types, ranges, unknown ``type``, bad ``content``).
        """
        if type(data) is not bytes:
            if not isinstance(data, bytearray | memoryview):
                raise FormatError("a message is bytes", code="malformed")
            data = bytes(data)
        if len(data) > max_bytes:
            raise FormatError(
                f"the message is {len(data)} bytes, over the {max_bytes}-byte limit",
                code="oversize",
                details={"size": len(data), "limit": max_bytes},
            )
        try:
            value = _decode_canonical(data, max_bytes)
        except FormatError as e:
            if e.code == "malformed":
                raise
            raise FormatError(e.message, code="malformed", details={"reason": e.code}) from e
        if value.keys() != _ENVELOPE:
            missing = sorted(_ENVELOPE - value.keys())
            if missing:
                raise _malformed(missing[0], "is missing")
            raise _malformed(sorted(value.keys() - _ENVELOPE)[0], "is not a message field")
        kind = value["type"]
        parse_content = _CONTENT.get(kind) if type(kind) is str else None
        if parse_content is None:
            raise _malformed("type", "must be one of " + ", ".join(MESSAGE_TYPES))
        federation_id = _match(
            value["federation_id"], _FEDERATION_ID_RE, "federation_id", "a federation id"
        )
        sender = _did(value["sender"], "sender")
        seq = _int(value["seq"], "seq", 1)
        timestamp = _int(value["timestamp"], "timestamp")
        signature = _sig(value["signature"], "signature")
        content = parse_content(value["content"])
        # ``data`` is canonical, so the top-level signature member sits between
        # "seq" and "timestamp", and is the last ',"signature":"' in the text
        # (only an integer and the type name follow it).  Cutting it out leaves
        # the canonical form of the object without it.
        cut = data.rfind(_SIG_MEMBER)
        end = cut + len(_SIG_MEMBER) + 87
        signing_input = data[:cut] + data[end:]
        return cls(
            kind, federation_id, sender, seq, timestamp, content, signature, data, signing_input
        )

    # -- helpers -------------------------------------------------------------------

    @property
    def message_id(self) -> str:
        """``sha256:`` + hex SHA-256 of the wire form: names this exact message."""
        return "sha256:" + hashlib.sha256(self.raw).hexdigest()

    def verify_signature(self, public_key: PublicKey) -> bool:
        """True if ``signature`` verifies over ``signing_input`` with ``public_key``."""
        return public_key.verify(self.signing_input, self.signature)


class SeqCounter:
    """A sender's ``seq``: strictly increasing, from the clock where possible.

    ``next(now)`` returns ``max(last + 1, floor(now * 1e6))``: the time in
    microseconds, so a sender that restarts without its counter still sends
    increasing numbers (as long as its clock does not go back).  Thread-safe.
    """

    def __init__(self, last: int = 0) -> None:
        self._last = last
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def next(self, now: float) -> int:
        with self._lock:
            seq = max(self._last + 1, int(now * 1_000_000))
            if seq > MAX_SEQ:
                raise FormatError("the seq counter is exhausted", code="seq_exhausted")
            self._last = seq
            return seq


# --------------------------------------------------------------------------
# Receiving
# --------------------------------------------------------------------------


class PeerInfo(Protocol):
    """What the receiver needs of a registry peer (:class:`remembrancer.federation.registry.model.Peer`
    fits): the DID senders write in ``sender``, the Ed25519 key, status and roles.
    Pass the peer's *effective* status (registry status and scoring combined)."""

    @property
    def did(self) -> str: ...

    @property
    def pubkey(self) -> PublicKey: ...

    @property
    def status(self) -> str: ...

    @property
    def roles(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class KnownPeer:
    """A minimal :class:`PeerInfo` (same field names as the registry's ``Peer``)."""

    did: str
    pubkey: PublicKey
    roles: frozenset[str] = frozenset()
    status: PeerStatus = "active"
    endpoint: str = ""

    def __post_init__(self) -> None:
        if type(self.did) is not str or _DID_RE.fullmatch(self.did) is None:
            raise FormatError(f"{self.did!r} is not a DID", code="peer_invalid")
        unknown = set(self.roles) - ROLES
        if unknown:
            raise FormatError(
                f"unknown peer role {sorted(unknown)[0]!r}",
                code="peer_invalid",
                details={"roles": sorted(unknown)},
            )
        if self.status not in PEER_STATUSES:
            raise FormatError(f"unknown peer status {self.status!r}", code="peer_invalid")
        object.__setattr__(self, "roles", frozenset(self.roles))


REPLAY_WINDOW: Final = 64


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """One sender's replay state: the last :data:`REPLAY_WINDOW` seqs accepted
    (``recent``, ascending) and ``floor``, the greatest seq that fell out of
    the window.  A seq is fresh when it is above ``floor`` and not in
    ``recent``.  The window lets a sender's messages overtake each other on
    the way (concurrent sends share one counter) without opening replays: each
    seq is accepted at most once, and nothing at or below ``floor`` ever."""

    floor: int = 0
    recent: tuple[int, ...] = ()

    @property
    def last(self) -> int:
        return self.recent[-1] if self.recent else self.floor

    def seen(self, seq: int) -> bool:
        return seq <= self.floor or seq in self.recent

    def accepted(self, seq: int) -> ReplayWindow:
        recent = sorted((*self.recent, seq))
        floor = self.floor
        while len(recent) > REPLAY_WINDOW:
            floor = recent.pop(0)
        return ReplayWindow(floor, tuple(recent))

    def to_bytes(self) -> bytes:
        return json.dumps({"floor": self.floor, "recent": list(self.recent)},
                          separators=(",", ":")).encode()  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> ReplayWindow:
        """Parse a stored window; a bare integer (the format before the window)
        is a floor: everything up to it was accepted or is refused."""
        if not raw:
            return cls()
        text = raw.decode("ascii")
        if text.isdigit():
            return cls(int(text))
        doc = json.loads(text)
        return cls(int(doc["floor"]), tuple(sorted(int(x) for x in doc["recent"])))


class ReplayState(Protocol):
    """Per-sender :class:`ReplayWindow`; the node keeps it durable in its store.

    ``advance`` is an atomic compare-and-set: it records ``seq`` and returns
    True only if ``seq`` was fresh for the sender.  A receiver must not answer
    202 before the new value is durable.
    """

    def last_seq(self, sender: str) -> int: ...

    def seen(self, sender: str, seq: int) -> bool: ...

    def advance(self, sender: str, seq: int) -> bool: ...


class MemoryReplayState:
    """:class:`ReplayState` in memory (tests, or a node that snapshots it)."""

    def __init__(self, initial: Mapping[str, int] | None = None) -> None:
        self._windows = {k: ReplayWindow(0, (v,)) for k, v in (initial or {}).items()}
        self._lock = threading.Lock()

    def last_seq(self, sender: str) -> int:
        return self._windows.get(sender, ReplayWindow()).last

    def seen(self, sender: str, seq: int) -> bool:
        return self._windows.get(sender, ReplayWindow()).seen(seq)

    def advance(self, sender: str, seq: int) -> bool:
        with self._lock:
            window = self._windows.get(sender, ReplayWindow())
            if window.seen(seq):
                return False
            self._windows[sender] = window.accepted(seq)
            return True

    def snapshot(self) -> dict[str, int]:
        """The greatest seq accepted per sender."""
        with self._lock:
            return {k: w.last for k, w in self._windows.items()}


class RateLimiter(Protocol):
    """``take(key, cost, now)``: 0 if allowed, else seconds to wait
    (:class:`remembrancer.node.ratelimit.TokenBuckets` fits)."""

    def take(self, key: str, cost: float = ..., now: float | None = ...) -> float: ...


class MessageVerifier:
    """The receiver's acceptance checks, in the spec's order (module docstring).

    ``verify(data, now)`` returns the accepted :class:`Message` and records its
    seq, or raises.  ``now`` is the receiver's clock in seconds since the
    epoch.  Thread-safe provided the replay state and limiter are; the peer
    table is swapped whole by :meth:`set_peers`.
    """

    def __init__(
        self,
        federation_id: str,
        peers: Iterable[PeerInfo],
        *,
        replay: ReplayState | None = None,
        limiter: RateLimiter | None = None,
        skew: int = DEFAULT_SKEW,
        max_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if _FEDERATION_ID_RE.fullmatch(federation_id) is None:
            raise FormatError(f"{federation_id!r} is not a federation id", code="peer_invalid")
        self.federation_id = federation_id
        self.replay: ReplayState = replay if replay is not None else MemoryReplayState()
        self.limiter = limiter
        self.skew = skew
        self.max_bytes = max_bytes
        # Called with an authentic message refused at check 8 (suspended sender),
        # e.g. to count a suspended peer's heartbeat toward its recovery.
        self.on_suspended: Callable[[Message], None] | None = None
        self._peers: dict[str, PeerInfo] = {}
        self.set_peers(peers)

    def set_peers(self, peers: Iterable[PeerInfo]) -> None:
        """Replace the peer table (after a registry change)."""
        table: dict[str, PeerInfo] = {}
        for p in peers:
            if p.did in table:
                raise FormatError(f"peer {p.did} is listed twice", code="peer_invalid")
            table[p.did] = p
        self._peers = table

    def peer(self, did: str) -> PeerInfo | None:
        return self._peers.get(did)

    @property
    def peers(self) -> tuple[PeerInfo, ...]:
        return tuple(self._peers.values())

    def verify(self, data: bytes, now: float) -> Message:
        """Check a received body; see the module docstring for the codes."""
        msg = Message.parse(data, max_bytes=self.max_bytes)  # oversize, malformed
        sender = msg.sender
        if msg.federation_id != self.federation_id:
            raise PolicyError(
                f"the message is for federation {msg.federation_id!r}, not {self.federation_id!r}",
                code="federation_mismatch",
                details={"expected": self.federation_id},
            )
        peer = self._peers.get(sender)
        if peer is None:
            raise PolicyError(
                f"{sender} is not a peer of this federation",
                code="unknown_sender",
                details={"sender": sender},
            )
        if abs(msg.timestamp - now) > self.skew:
            raise PolicyError(
                f"the timestamp is {msg.timestamp - now:+.0f} s from this node's clock,"
                f" outside the +-{self.skew} s window",
                code="stale",
                details={"timestamp": msg.timestamp, "now": int(now), "window": self.skew},
            )
        if self.replay.seen(sender, msg.seq):
            raise _replayed(sender, msg.seq, self.replay.last_seq(sender))
        if not peer.pubkey.verify(msg.signing_input, msg.signature):
            raise VerificationError(
                f"the signature does not verify with the registered key of {sender}",
                code="signature_invalid",
                details={"sender": sender},
            )
        # From here on the message is authentic: refusals may count against the sender.
        if peer.status == "suspended":
            if self.on_suspended is not None:
                self.on_suspended(msg)
            raise PolicyError(f"{sender} is suspended", code="peer_suspended")
        allowed = ALLOWED_ROLES[msg.type]
        if allowed is not None and allowed.isdisjoint(peer.roles):
            raise PolicyError(
                f"{sender} may not send {msg.type} messages (roles: "
                f"{', '.join(sorted(peer.roles)) or 'none'}; needs one of "
                f"{', '.join(sorted(allowed))})",
                code="role_not_allowed",
                details={"type": msg.type, "roles": sorted(peer.roles)},
            )
        if self.limiter is not None:
            wait = self.limiter.take(sender, 1.0, now)
            if wait > 0:
                raise PushbackError(
                    f"{sender} is over its message rate; retry in {wait:.1f} s",
                    code="rate_limited",
                    retry_after=wait,
                )
        if not self.replay.advance(sender, msg.seq):
            raise _replayed(sender, msg.seq, self.replay.last_seq(sender))
        return msg


def _replayed(sender: str, seq: int, last: int) -> ConflictError:
    return ConflictError(
        f"seq {seq} from {sender} was accepted before or is below the replay window"
        f" (greatest accepted: {last})",
        code="replayed",
        details={"seq": seq, "last_seq": last},
    )
