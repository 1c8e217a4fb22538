"""The content types of federation messages (docs/spec/federation.md), one class each.

Every content is a frozen value with ``from_json`` (strict: exactly the
spec's members, each through :mod:`.grammar`) and ``to_json``, so a parsed
content re-encodes to the same canonical bytes.  :data:`Content` is their
union; :data:`CONTENT_PARSERS` maps a message ``type`` to its parser.  Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

from remembrancer.core.cadence import TARGET_RE
from remembrancer.federation.protocol.grammar import (
    MessageType,
    check_did,
    check_hash,
    check_int,
    check_json_objects,
    check_list,
    check_match,
    check_namespace,
    check_note,
    check_object,
    check_origin,
    check_sig,
    check_text,
    check_typed_object,
    malformed,
)
from remembrancer.federation.receipts import TYPE as FEDERATION_RECEIPT_TYPE
from remembrancer.federation.receipts import Countersignature, FederationReceipt

MAX_HEARTBEAT_RAILS: Final = 64

__all__ = [
    "AnchorContent",
    "BundleContent",
    "CheckpointContent",
    "Content",
    "CountersignContent",
    "EvidenceContent",
    "HeartbeatContent",
    "LogSummary",
    "ReceiptContent",
    "RequestContent",
    "XnsContent",
]


EVIDENCE_KINDS: Final = frozenset(
    {"equivocation", "forged_countersignature", "invalid_anchor_claim"}
)
WANTS: Final = ("receipts", "anchors")
COUNTERSIGNATURE_ROLES: Final = frozenset({"anchor", "witness"})  # as in federation receipts


_RECEIPT_ID_RE: Final = re.compile(r"[\x21-\x7e]{1,512}")


@dataclass(frozen=True, slots=True)
class LogSummary:
    """One log's state in a heartbeat: ``{origin, size, root}``."""

    origin: str
    size: int
    root: str  # sha256:<hex>

    @classmethod
    def from_json(cls, value: Any, where: str = "logs[]") -> LogSummary:
        check_object(value, where, ("origin", "size", "root"))
        return cls(
            check_origin(value["origin"], f"{where}.origin"),
            check_int(value["size"], f"{where}.size"),
            check_hash(value["root"], f"{where}.root"),
        )

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "size": self.size, "root": self.root}


@dataclass(frozen=True, slots=True)
class HeartbeatContent:
    """``heartbeat``: the sender is alive and its logs are at these states."""

    TYPE: ClassVar[MessageType] = "heartbeat"
    logs: tuple[LogSummary, ...] = ()
    # The sender's registry in force (``sha256:<hex>`` digest): a peer that
    # holds another one pulls the signed change history (registry catch-up).
    registry: str | None = None
    # The sender's configured rail targets, each with the first epoch it
    # coordinates that target (a joiner enters the rotation from there).
    rails: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_json(cls, value: Any) -> HeartbeatContent:
        check_object(value, "content", ("logs",), ("registry", "rails"))
        items = check_list(value["logs"], "content.logs")
        logs = tuple(LogSummary.from_json(v, f"content.logs[{i}]") for i, v in enumerate(items))
        if len({s.origin for s in logs}) != len(logs):
            raise malformed("content.logs", "must not list an origin twice")
        registry = None
        if "registry" in value:
            registry = check_hash(value["registry"], "content.registry")
        rails: list[tuple[str, int]] = []
        if "rails" in value:
            raw = value["rails"]
            if type(raw) is not dict or len(raw) > MAX_HEARTBEAT_RAILS:
                raise malformed(
                    "content.rails", f"must be an object of at most {MAX_HEARTBEAT_RAILS} targets"
                )
            for target, epoch in sorted(raw.items()):
                where = f"content.rails.{str(target)[:64]}"
                check_match(target, TARGET_RE, where, "a rail target")
                rails.append((target, check_int(epoch, where)))
        return cls(logs, registry, tuple(rails))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"logs": [s.to_json() for s in self.logs]}
        if self.registry is not None:
            out["registry"] = self.registry
        if self.rails:
            out["rails"] = dict(self.rails)
        return out


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
            raise malformed("content", "has namespace, target and epoch together or none")

    @property
    def for_aggregation(self) -> bool:
        return self.target is not None

    @classmethod
    def from_json(cls, value: Any) -> CheckpointContent:
        check_object(value, "content", ("origin", "note"), ("namespace", "target", "epoch"))
        origin = check_origin(value["origin"], "content.origin")
        note = check_note(value["note"], "content.note")
        if not note.startswith(origin + "\n"):
            raise malformed("content.note", "must start with the origin line")
        namespace = target = epoch = None
        if "namespace" in value or "target" in value or "epoch" in value:
            for k in ("namespace", "target", "epoch"):
                if k not in value:
                    raise malformed(
                        f"content.{k}", "is missing (namespace, target, epoch go together)"
                    )
            namespace = check_namespace(value["namespace"], "content.namespace")
            target = check_match(value["target"], TARGET_RE, "content.target",
                            "an anchor target <scheme>:<name>")  # fmt: skip
            epoch = check_int(value["epoch"], "content.epoch")
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
        check_object(value, "content", ("namespace", "receipt"))
        namespace = check_namespace(value["namespace"], "content.namespace")
        receipt = check_typed_object(value["receipt"], "content.receipt")
        if receipt["type"] != FEDERATION_RECEIPT_TYPE:
            raise malformed("content.receipt.type", f"must be {FEDERATION_RECEIPT_TYPE!r}")
        if receipt.get("namespace") != namespace:
            raise malformed("content.receipt.namespace", "must be content.namespace")
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
        check_object(value, "content", ("namespace", "receipt_id", "signature"))
        namespace = check_namespace(value["namespace"], "content.namespace")
        receipt_id = check_match(
            value["receipt_id"], _RECEIPT_ID_RE, "content.receipt_id", "a receipt id"
        )
        sig = value["signature"]
        where = "content.signature"
        check_object(sig, where, ("node", "role", "timestamp", "sig"))
        role = sig["role"]  # the type first: a list or an object is not hashable
        if not isinstance(sig["role"], str) or role not in COUNTERSIGNATURE_ROLES:
            raise malformed(f"{where}.role", 'must be "anchor" or "witness"')
        signature = Countersignature(
            check_did(sig["node"], f"{where}.node"),
            role,
            check_int(sig["timestamp"], f"{where}.timestamp"),
            check_sig(sig["sig"], f"{where}.sig"),
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
        check_object(value, "content", ("namespace", "receipt"))
        return cls(
            check_namespace(value["namespace"], "content.namespace"),
            check_typed_object(value["receipt"], "content.receipt"),
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
        check_object(value, "content", ("kind", "subject", "file"))
        kind = value["kind"]
        if not isinstance(kind, str) or kind not in EVIDENCE_KINDS:
            raise malformed("content.kind", "must be " + " | ".join(sorted(EVIDENCE_KINDS)))
        return cls(
            kind,
            check_origin(value["subject"], "content.subject"),
            check_text(value["file"], "content.file"),
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
        check_object(value, "content", ("namespace",), ("fromTs", "toTs", "want"))
        from_ts = check_int(value["fromTs"], "content.fromTs") if "fromTs" in value else None
        to_ts = check_int(value["toTs"], "content.toTs") if "toTs" in value else None
        if from_ts is not None and to_ts is not None and from_ts > to_ts:
            raise malformed("content.fromTs", "must not be after toTs")
        want: tuple[str, ...] | None = None
        if "want" in value:
            items = check_list(value["want"], "content.want", max_items=len(WANTS))
            if not items or any(w not in WANTS for w in items) or len(set(items)) != len(items):
                raise malformed("content.want", 'must list "receipts" and/or "anchors" once')
            want = tuple(items)
        return cls(check_namespace(value["namespace"], "content.namespace"), from_ts, to_ts, want)

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
        check_object(value, "content", ("namespace", "receipts", "anchors"), ("in_reply_to",))
        reply = value.get("in_reply_to")
        return cls(
            check_namespace(value["namespace"], "content.namespace"),
            check_json_objects(value["receipts"], "content.receipts"),
            check_json_objects(value["anchors"], "content.anchors"),
            None if reply is None else check_int(reply, "content.in_reply_to", 1),
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
        check_object(value, "content", ("source", "target", "record", "proof"))
        source = check_namespace(value["source"], "content.source")
        target = check_namespace(value["target"], "content.target")
        if source == target:
            raise malformed("content.target", "must differ from the source")
        record = value["record"]
        if type(record) is not dict or record.get("namespace") != source:
            raise malformed("content.record", "must be a record object of the source namespace")
        return cls(source, target, record, check_text(value["proof"], "content.proof"))

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
CONTENT_PARSERS: Final[dict[str, Any]] = {
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
